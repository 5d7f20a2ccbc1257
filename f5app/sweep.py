"""Sweep jobs on disk: the folder name a job gets, and how far a job folder has trained.

Hydra names each multirun job after its overrides (``hydra.job.override_dirname``). Two things
make that raw string unusable as one folder name: a value holding a path (``data.path=/a/b``)
would nest folders, and many overrides exceed the file system's 255-byte name limit.
:func:`job_dirname` fixes both deterministically, so the same sweep command always finds the
same folders. Reading only JSON keeps this module free of torch (the report imports it).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

#: Resolver name used by conf/train.yaml's ``hydra.sweep.subdir``.
JOB_DIRNAME_RESOLVER = "f5app_job_dirname"
#: Folder name of a sweep job launched without any (identity-relevant) override.
NO_OVERRIDES_DIRNAME = "defaults"
# Below NAME_MAX (255 bytes) with room for Hydra's and our own suffixes.
MAX_DIRNAME_BYTES = 200
_SLASH_ESCAPE = "%2F"


def job_dirname(override_dirname: str) -> str:
    """A single, deterministic folder name for a job's ``override_dirname``.

    Path separators become ``%2F``. A name over :data:`MAX_DIRNAME_BYTES` first has its long
    values (typically paths) cut to their tail plus a hash, then, if still too long, is cut
    and suffixed with a hash of the whole name; distinct jobs never share a folder.
    """
    name = _escape(str(override_dirname))
    if not name:
        return NO_OVERRIDES_DIRNAME
    if name in (".", ".."):
        return name.replace(".", "%2E")
    if _fits(name):
        return name
    shortened = ",".join(_shorten_item(item) for item in name.split(","))
    if _fits(shortened):
        return shortened
    digest = _digest(name, 12)
    head = shortened.encode("utf-8")[: MAX_DIRNAME_BYTES - len(digest) - 1].decode("utf-8", errors="ignore")
    return f"{head}~{digest}"


def _escape(text: str) -> str:
    text = text.replace("%", "%25").replace(os.sep, _SLASH_ESCAPE)
    return text.replace(os.altsep, _SLASH_ESCAPE) if os.altsep else text


def _fits(name: str) -> bool:
    return len(name.encode("utf-8")) <= MAX_DIRNAME_BYTES


_LONG_VALUE = 40  # characters; longer values are shown by their tail and a hash
_VALUE_TAIL = 16


def _shorten_item(item: str) -> str:
    key, sep, value = item.partition("=")
    if not sep or len(value) <= _LONG_VALUE:
        return item
    return f"{key}=~{value[-_VALUE_TAIL:]}~{_digest(value, 8)}"


def _digest(text: str, length: int) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]


@dataclass(frozen=True)
class JobProgress:
    """How far a run folder has trained, from ``checkpoints/last.json`` and ``best.json``."""

    update: Optional[int]  # newest complete checkpoint's update; None before the first one
    epoch: Optional[int]  # epoch counter recorded with that checkpoint
    best_val_loss: Optional[float]
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]


def read_progress(run_dir: Path) -> JobProgress:
    """The run's progress; pointers missing or damaged fall back to scanning checkpoint folders."""
    from f5app.ckpt.layout import checkpoints_dir, read_pointer, scan

    ckpt_dir = checkpoints_dir(Path(run_dir))
    last, best = read_pointer(ckpt_dir, "last"), read_pointer(ckpt_dir, "best")
    newest = scan(ckpt_dir).complete[:1]
    update = last.update if last is not None else (newest[0].update if newest else None)
    last_path = ckpt_dir / last.name if last is not None else (newest[0].path if newest else None)
    best_loss = best.val_loss if best is not None else None
    best_path = ckpt_dir / best.name if best is not None else None
    metadata = read_json(last_path / "metadata.json") if last_path is not None else None
    epoch = metadata.get("epoch") if metadata else None
    return JobProgress(
        update=update,
        epoch=int(epoch) if isinstance(epoch, int) else None,
        best_val_loss=best_loss,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
    )


def is_finished(progress: JobProgress, max_updates: int, epochs: int) -> bool:
    """The training loop's own stopping rule, applied to what is on disk."""
    if progress.update is None:
        return False
    return progress.update >= max_updates or (progress.epoch is not None and progress.epoch >= epochs)


def start_line(run_dir: Path, max_updates: int, epochs: int, label: str) -> str:
    """One line saying what launching this job will do: start, resume, or skip (already done)."""
    progress = read_progress(run_dir)
    if progress.update is None:
        return f"job {label}: starting (no checkpoint yet), target {max_updates} updates"
    if is_finished(progress, max_updates, epochs):
        return f"job {label}: already finished at update {progress.update} (trainer.max_updates={max_updates}), skipping training"
    return f"job {label}: resuming from update {progress.update} of {max_updates}"


def read_json(path: Path) -> Optional[dict[str, Any]]:
    """A JSON object from ``path``, or None when it is absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
