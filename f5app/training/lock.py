"""One run, one writer: an advisory ``flock`` on ``<run dir>/.lock``.

The kernel drops a flock when its process dies, so a lock left by ``kill -9`` is stale by
construction and is simply taken over; the holder's pid/host/start time is only for messages.

The lock file is opened with ``O_NOFOLLOW`` and must be a regular file with no other hard link:
run folders are shared, and a planted ``.lock`` symlink would otherwise have its target
truncated. A file system without ``flock`` (NFS mounted ``nolock``: ENOLCK) is refused with one
line rather than trained on without a lock (docs/scale.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

from f5app.errors import UserError


class RunLockedError(UserError, RuntimeError):
    pass


class LockUnavailable(RunLockedError):
    """The run lock cannot be taken at all (not a regular file, no flock on this file system)."""


class RunLock:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"run directory {self.path.parent} is being trained by {holder}; "
                "wait for it to finish, stop it, or choose another run_name"
            ) from None
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise LockUnavailable(
                    f"cannot lock {self.path}: the file system of the run directory has no file locks "
                    f"({error.strerror}); put output_root on a local disk or a mount with locking (see docs/scale.md)"
                ) from None
            raise LockUnavailable(f"cannot lock {self.path}: {error.strerror or error}") from None
        try:
            previous = _read_holder(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode(), 0)
            os.fsync(fd)
        except OSError as error:
            os.close(fd)  # closing drops the flock too
            raise LockUnavailable(f"cannot write the run lock {self.path}: {error.strerror or error}") from None
        self._fd = fd
        self.took_over_from = previous if previous != "an unknown process" else None
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a clean exit leaves no holder behind; only a killed one does
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    """An fd for ``path``, created if absent; :class:`LockUnavailable` unless it is this run's own file."""
    try:
        # O_NONBLOCK: opening a planted FIFO must not hang (it is refused below)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LockUnavailable(f"{path} is a symbolic link; a run lock must be a plain file: remove it and start again") from None
        if error.errno == errno.EISDIR:
            raise LockUnavailable(f"{path} is a directory; a run lock must be a plain file: remove it and start again") from None
        raise LockUnavailable(f"cannot open the run lock {path}: {error.strerror or error}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "has other hard links" if stat.S_ISREG(info.st_mode) else "is not a regular file"
        raise LockUnavailable(f"{path} {what}; a run lock must be a plain file of its own: remove it and start again")
    return fd


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
        return f"pid {info['pid']} on {info['host']} (since {started})"
    except (ValueError, KeyError, OSError):
        return "an unknown process"
