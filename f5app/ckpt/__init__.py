"""Checkpoints: layout, atomic store, metadata, validation, resolution, weight adapters, Hub, export."""
