"""Small file-system rules every writer in f5app shares: hash a file, make a write durable, replace a
file atomically. One copy of each, so a fix (fsync the folder, never follow a planted symlink)
lands everywhere at once. Standard library only, plus xxhash (a dependency of f5-tts's ``datasets``)
for the fast checksum.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Union

import xxhash

#: 1 MiB: the block stays in the CPU cache between the copy and the hashing (xxh3 reads 6.7 GiB/s
#: from the page cache here with 1 MiB blocks, 5.2 with 8 MiB)
_HASH_BLOCK = 1024 * 1024

Content = Union[bytes, str, Callable[[Path], None]]


#: The digests a checkpoint records per file: ``sha256`` (cryptographic; ``validate --full``) and
#: ``xxh3_128`` (a non-cryptographic checksum ~10x faster to compute than sha256, fast enough to
#: hide behind reading the file, so every load can verify what it reads).
DIGESTS = ("sha256", "xxh3_128")


def _new_digest(algorithm: str) -> Any:
    if algorithm == "xxh3_128":
        return xxhash.xxh3_128()
    return hashlib.new(algorithm)


class NotRegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a folder where a file's bytes are wanted."""


def kind_of(mode: int) -> str:
    """What ``st_mode`` names, in words: ``FIFO``, ``character device``…"""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def open_regular(path: Path, *, follow_links: bool = True) -> BinaryIO:
    """``open(path, "rb")`` that refuses anything but a regular file, without ever blocking.

    A FIFO named ``*.wav`` would block a plain ``open`` until a writer appears, and a link to
    ``/dev/zero`` would feed a reader forever: the file is opened with ``O_NONBLOCK`` (a FIFO
    opens at once), then ``fstat`` of what was opened decides (no race between a check and the
    open). Raises :class:`NotRegularFile` (an OSError) naming what the path is.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file but a {kind_of(mode)}", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`); raises NotRegularFile past ``max_bytes``."""
    with open_regular(path) as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise NotRegularFile(errno.EFBIG, f"larger than {max_bytes} bytes", str(path))
    return raw


def file_digests(path: Path, algorithms: tuple[str, ...] = DIGESTS, block: int = _HASH_BLOCK) -> dict[str, str]:
    """Hex digests of a file's bytes, every algorithm from one read of it in blocks into one
    reused buffer (a 2 GiB checkpoint never sits in memory, and no block is allocated twice).
    Only a regular file is read (:func:`open_regular`): a FIFO or a device raises NotRegularFile."""
    digests = {algorithm: _new_digest(algorithm) for algorithm in algorithms}
    buffer = bytearray(block)
    view = memoryview(buffer)
    with open_regular(path) as handle:
        while read := handle.readinto(buffer):
            for digest in digests.values():
                digest.update(view[:read])
    return {algorithm: digest.hexdigest() for algorithm, digest in digests.items()}


def sha256_file(path: Path, block: int = _HASH_BLOCK) -> str:
    """Hex sha256 of a file's bytes, read in blocks (a 2 GiB checkpoint never sits in memory)."""
    return file_digests(path, ("sha256",), block)["sha256"]


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` survive a crash (the entry lives in the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A name beside ``path`` no other process or thread of ours uses (hidden, so never a candidate)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{threading.get_ident()}")


def atomic_write(path: Path, content: Content, *, mode: int | None = None, durable: bool = True) -> Path:
    """Write ``path`` so a reader sees the old file or the whole new one, never a part.

    ``content`` is bytes, text (UTF-8), or a function that writes the temporary path it is given
    (``torch.save``, ``soundfile.write``…). The temporary file is created exclusively and never
    through a symlink, so a link planted under a predictable name cannot redirect the write.
    ``durable`` fsyncs the file before the rename and the folder after it. ``mode`` defaults to
    an ordinary file's permissions under the current umask.
    """
    path = Path(path)
    tmp = temp_sibling(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o666 if mode is None else mode)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, bytes):
                handle.write(content)
            elif isinstance(content, str):
                handle.write(content.encode("utf-8"))
        if callable(content):
            content(tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        if durable:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)
    return path


def write_json_atomic(path: Path, data: Any, *, durable: bool = True) -> Path:
    """JSON (sorted keys, strict: NaN and infinity are refused, not written as invalid JSON)."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(path, text, durable=durable)


def read_json_object(path: Path, max_bytes: int = 1024 * 1024) -> dict[str, Any] | None:
    """A small JSON object from ``path``; None when absent, a link or not a regular file, too large,
    unreadable or not an object."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None  # a planted FIFO or device must not block or feed the reader
            raw = handle.read(max_bytes + 1)
        if len(raw) > max_bytes:
            return None
        data = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None
