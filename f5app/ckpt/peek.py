"""The structure of a ``torch.save`` zip (keys, tensor shapes) read with Python's C unpickler.

``torch.load(weights_only=True, mmap=True)`` reads no tensor data but walks the pickle in pure
Python: about 4 ms for even a tiny checkpoint, most of resolving a run. Here the C unpickler reads
``data.pkl`` with each global mapped to a local stand-in that records shapes, so nothing named by
the file is ever called. A file using any global beyond the few ``torch.save`` writes for state
dicts gives ``None``, and the caller falls back to torch's own safe loader, which decides (and
refuses code).
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional


@dataclass(frozen=True)
class TensorShape:
    """Where a tensor would be: its shape and dtype name, no data."""

    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _StorageType:
    name: str  # e.g. "FloatStorage"

    @property
    def dtype(self) -> str:
        return self.name.removesuffix("Storage").lower() or "untyped"


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any, *rest: Any) -> TensorShape:
    dtype = storage.dtype if isinstance(storage, _StorageType) else "unknown"
    return TensorShape(tuple(int(n) for n in size), dtype)


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any, *rest: Any) -> Any:
    return data


_STAND_INS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unsupported(Exception):
    pass


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _STAND_INS:
            return _STAND_INS[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise _Unsupported(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        # torch.save's storage ids: ("storage", storage_type, key, location, numel)
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "storage" and isinstance(pid[1], _StorageType):
            return pid[1]
        raise _Unsupported(f"persistent id {pid!r:.60}")


def read_structure(path: Path) -> Optional[Any]:
    """The unpickled top-level object with tensors as :class:`TensorShape`; ``None`` when this
    reader cannot tell (not a zip, an unexpected global, a damaged pickle): ask torch instead."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if name is None:
                return None
            data = archive.read(name)
        return _ShapeUnpickler(io.BytesIO(data)).load()
    except (_Unsupported, zipfile.BadZipFile, OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError):
        return None
