"""Each step's results, stored under a key made from everything they depend on (content, not names).

A result is a JSON record, written last and atomically, so an item either has a complete record
or is computed again: a run stopped by Ctrl-C resumes with the first item that has none. Files a
step produces beside its record (a decoded recording, speech probabilities) are written before
the record and atomically too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from f5app.files import atomic_write, read_json_object, write_json_atomic

#: Records are small (the largest holds a recording's clipping counts).
MAX_RECORD_BYTES = 64 * 1024 * 1024


def content_key(*parts: Any) -> str:
    """A stable hex key for ``parts`` (JSON-serialisable values)."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


class StepCache:
    """``root/<step>/<key>.json`` records, and files beside them (``<key><suffix>``)."""

    def __init__(self, root: Path, step: str):
        self.folder = Path(root) / step
        self.step = step

    def record_path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def file(self, key: str, suffix: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"{key}{suffix}"

    def get(self, key: str) -> dict[str, Any] | None:
        return read_json_object(self.record_path(key), max_bytes=MAX_RECORD_BYTES)

    def put(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.record_path(key), record, durable=False)
        return record

    def array(self, key: str) -> np.ndarray | None:
        """The array :meth:`put_array` stored under ``key``; None while its record or file is missing."""
        path = self.folder / f"{key}.npy"
        return np.load(path) if self.get(key) is not None and path.is_file() else None

    def put_array(self, key: str, values: np.ndarray, record: dict[str, Any]) -> dict[str, Any]:
        """``values`` as ``<key>.npy``, then ``record``: the record is written last, as for every result."""
        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, values)

        atomic_write(self.file(key, ".npy"), save, durable=False)
        return self.put(key, record)
