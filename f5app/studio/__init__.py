"""``python -m f5app.studio``: a small web application over ``output_root`` (docs/studio.md).

roots.py  every path a page names, resolved under output_root or a data root, else refused
state.py  what the pages show, read through the product's typed readers (no log parsing)
jobs.py   child processes (training, comparisons, preparation): argument lists, one at a time
forms.py  the training form: named settings checked by type and range, never free overrides
review.py the recordings review: metadata.csv written as a person would, with a version check
app.py    the FastAPI app (the server's limits and origin rules); pages/ the HTML, CSS and JS
"""
