"""``split_groups.json`` beside a ``metadata.csv``: groups of clips that hold the same audio.

``{"groups": [["wavs/a.wav", "wavs/b.wav"], ...]}``, paths as metadata.csv names them (relative
to its folder). data=recordings writes it from its duplicate search
(f5app/data/recordings/duplicates.py); the train/validation split reads it so that each group
lies wholly on one side (f5app/data/dataset.py, ``record_split``). Any csv_wavs folder may hold one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from f5app.files import read_json_object, write_json_atomic

SPLIT_GROUPS_FILE = "split_groups.json"


def write_groups(folder: Path, groups: Sequence[Sequence[str]]) -> Path:
    path = Path(folder) / SPLIT_GROUPS_FILE
    write_json_atomic(path, {"groups": [list(group) for group in groups]}, durable=False)
    return path


def read_groups(folder: Path) -> list[list[str]]:
    """The groups as resolved absolute paths; none when the file is absent or unreadable."""
    folder = Path(folder)
    record = read_json_object(folder / SPLIT_GROUPS_FILE, max_bytes=256 * 1024 * 1024) or {}
    groups = record.get("groups", [])
    if not isinstance(groups, list):
        return []
    return [[str((folder / str(name)).resolve()) for name in group] for group in groups if isinstance(group, list)]
