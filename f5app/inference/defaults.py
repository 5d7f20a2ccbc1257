"""Which reference voice to use when the user gives none: one that matches the chosen model.

- Weights trained by f5app on a data set: the first clip of that set (the voice it learned),
  found through the checkpoint's recorded config; the bundled demo set for demo runs.
- Anything else (pretrained or upstream files): upstream's ``basic_ref_en.wav`` shipped in f5-tts.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from f5app.ckpt.schema import CheckpointMetadata
from f5app.config import ASSETS_DIR
from f5app.data.metadata import MetadataError, read_metadata

log = logging.getLogger(__name__)

UPSTREAM_REF_TEXT = "Some call me nature, others call me mother nature."
DEMO_DATA_DIR = ASSETS_DIR / "demo"


@dataclass(frozen=True)
class DefaultReference:
    audio: Path
    text: str
    why: str


def upstream_reference() -> DefaultReference:
    spec = importlib.util.find_spec("f5_tts")
    assert spec is not None and spec.submodule_search_locations, "f5-tts is a dependency of f5app"
    folder = Path(next(iter(spec.submodule_search_locations)))
    return DefaultReference(folder / "infer/examples/basic/basic_ref_en.wav", UPSTREAM_REF_TEXT, "upstream's basic_ref_en.wav")


def default_reference(metadata: CheckpointMetadata | None) -> DefaultReference:
    """The reference for a checkpoint with ``metadata`` (None for weights not made by f5app)."""
    if metadata is None:
        return upstream_reference()
    data = metadata.config_section("data")
    candidates = [Path(str(data["path"])).expanduser()] if data.get("path") else []
    if data.get("name") == "demo" or not candidates:
        candidates.append(DEMO_DATA_DIR)
    for folder in candidates:
        first = first_clip(folder)
        if first is not None:
            return first
    return upstream_reference()


def first_clip(folder: Path) -> DefaultReference | None:
    """The first usable row of ``folder/metadata.csv`` whose audio exists, or None."""

    try:
        rows = read_metadata(folder).rows
    except (MetadataError, OSError):
        return None
    for row in rows:
        if row.audio_path.is_file():
            return DefaultReference(row.audio_path, row.text, f"first clip of {folder / 'metadata.csv'}")
    return None
