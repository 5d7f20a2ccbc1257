"""Checkpoints: the on-disk layout, atomic saving, metadata, validation and resolution.

Submodules are imported where used (``from f5app.ckpt.resolve import resolve``); this package
imports nothing on its own so that ``python -m f5app.ckpt --help`` stays fast.
"""
