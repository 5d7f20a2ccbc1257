"""Checkpoint writing off the training thread.

The training thread only takes a CPU copy of the state (a memcpy); pickling, hashing, fsync and
the atomic rename happen in one background thread. At most one save is in flight, so at most one
extra copy of the state is held in memory: a new save first waits for the previous one.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch


def cpu_snapshot(obj: Any) -> Any:
    """A deep copy with every tensor detached and copied to CPU memory the training loop won't touch."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {key: cpu_snapshot(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_snapshot(value) for value in obj)
    return obj


class CheckpointWriter:
    def __init__(self, save: Callable[..., Path], background: bool) -> None:
        self._save = save
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="f5app-ckpt") if background else None
        self._pending: Future | None = None

    def submit(self, payloads: dict[str, Any], metadata: dict[str, Any], val_loss: float | None) -> None:
        """Queue a save. Raises the previous save's error, if it failed."""
        self.wait()
        if self._executor is None:
            self._save(payloads, metadata, val_loss=val_loss)
        else:
            self._pending = self._executor.submit(self._save, payloads, metadata, val_loss=val_loss)

    def wait(self) -> Path | None:
        """Block until the save in flight is on disk; re-raise its error."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    @property
    def busy(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
