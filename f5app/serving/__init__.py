"""``python -m f5app.serve``'s parts: the FastAPI app, the queue in front of the model, voices,
audio formats, metrics and the page. Nothing here imports torch at import time."""
