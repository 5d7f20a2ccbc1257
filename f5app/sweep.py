"""Sweep jobs on disk: the folder name a job gets, and how far a job folder has trained.

Hydra names each multirun job after its overrides (``hydra.job.override_dirname``). Two things
make that raw string unusable as one folder name: a value holding a path (``data.path=/a/b``)
would nest folders, and many overrides exceed the file system's 255-byte name limit.
:func:`job_dirname` fixes both deterministically, so the same sweep command always finds the
same folders. Reading only JSON keeps this module free of torch (the report imports it); how far
a job trained comes from :mod:`f5app.run_state`, the rule the trainer itself uses.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from f5app.run_state import reached_bounds, read_progress

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


def start_line(run_dir: Path, max_updates: int, epochs: int, label: str) -> str:
    """One line saying what launching this job will do: start, resume, or skip (already done)."""

    progress = read_progress(run_dir)
    if progress.update is None:
        return f"job {label}: starting (no checkpoint yet), target {max_updates} updates"
    if reached_bounds(progress.update, progress.epoch, max_updates, epochs):
        return f"job {label}: already finished at update {progress.update} (trainer.max_updates={max_updates}), skipping training"
    return f"job {label}: resuming from update {progress.update} of {max_updates}"
