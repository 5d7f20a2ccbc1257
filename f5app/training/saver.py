"""Checkpoint writing off the training thread.

Pickling, hashing, fsync and the atomic rename happen in one background thread. At most one save
is in flight, so at most one extra copy of the state is held in memory: a new save first waits
for the previous one.

The copy of the live state is the expensive part left (159 M parameters + EMA + AdamW = 2.4 GB:
8-12 s into freshly allocated memory on a 2-core VM, page faults dominating; 1.3-2 s into memory
that was already touched). So the copy goes into reusable buffers (:class:`StateSnapshot`) and,
with ``before_step``, runs in the background too while the next forward/backward runs: only the
optimizer step and the EMA update after it write to the state, so the training thread waits just
before the next ``optimizer.step`` if the copy has not finished by then.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from f5app.ckpt.schema import Checkpoint


class StateSnapshot:
    """CPU copies of the training state in buffers reused from one save to the next (same shapes,
    same buffers), so only the first save pays for fresh memory. Holds one copy of the state."""

    def __init__(self) -> None:
        self._buffers: dict[tuple, torch.Tensor] = {}

    def copy(self, obj: Any, path: tuple = ()) -> Any:
        if isinstance(obj, torch.Tensor):
            source = obj.detach()
            buffer = self._buffers.get(path)
            if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
                buffer = torch.empty(source.shape, dtype=source.dtype, device="cpu", pin_memory=source.is_cuda)
                self._buffers[path] = buffer
            buffer.copy_(source)
            return buffer
        if isinstance(obj, dict):
            return {key: self.copy(value, path + (key,)) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.copy(value, path + (index,)) for index, value in enumerate(obj))
        return obj


class CheckpointWriter:
    """Hands :class:`~f5app.ckpt.schema.Checkpoint` records to ``save`` (``CheckpointStore.save``),
    in the background when asked to."""

    def __init__(self, save: Callable[[Checkpoint], Path], background: bool) -> None:
        self._save = save
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="f5app-ckpt") if background else None
        self._pending: Future | None = None
        self._snapshot = StateSnapshot()
        self._fence: Any = None  # the optimizer pre-step hook of the save in flight
        self.blocked_seconds = 0.0  # training-thread time spent waiting on saves (submit + step fence)

    def submit(self, checkpoint: Checkpoint, before_step: Optional[torch.optim.Optimizer] = None) -> None:
        """Queue a save. Raises the previous save's error, if it failed.

        ``checkpoint.weights`` holds tensors the training keeps changing; they are copied first.
        With ``before_step`` (and a background writer) the copy happens in the background and that
        optimizer's next ``step`` waits until it is done; without it, it happens here.
        """
        start = time.perf_counter()
        try:
            self.wait()
        finally:
            self.blocked_seconds += time.perf_counter() - start
        if self._executor is not None and before_step is not None:
            copied = threading.Event()
            self._fence = self._fence_before_step(before_step, copied)
            self._pending = self._executor.submit(self._copy_then_save, checkpoint, copied)
            return
        checkpoint = dataclasses.replace(checkpoint, weights=self._snapshot.copy(checkpoint.weights))
        if self._executor is None:
            self._save(checkpoint)
        else:
            self._pending = self._executor.submit(self._save, checkpoint)

    def _copy_then_save(self, checkpoint: Checkpoint, copied: threading.Event) -> Path:
        try:
            checkpoint = dataclasses.replace(checkpoint, weights=self._snapshot.copy(checkpoint.weights))
        finally:
            copied.set()  # an error surfaces at the next submit/wait; the step must not hang on it
        return self._save(checkpoint)

    def _fence_before_step(self, optimizer: Any, copied: threading.Event) -> Any:
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper runs the hooks of the torch optimizer

        def wait_for_copy(*_: Any) -> None:
            if not copied.is_set():
                start = time.perf_counter()
                copied.wait()
                self.blocked_seconds += time.perf_counter() - start

        return inner.register_step_pre_hook(wait_for_copy)

    def _drop_fence(self) -> None:
        if self._fence is not None:
            self._fence.remove()
            self._fence = None

    def wait(self) -> Path | None:
        """Block until the save in flight is on disk; re-raise its error."""
        pending, self._pending = self._pending, None
        try:
            return pending.result() if pending is not None else None
        finally:
            self._drop_fence()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
