"""The structure of a ``torch.save`` file (keys, tensor shapes), read without trusting the file.

``torch.load(weights_only=True, mmap=True)`` reads no tensor data but walks the pickle in pure
Python: about 4 ms for even a tiny checkpoint, most of resolving a run. Here the C unpickler reads
``data.pkl`` with each global mapped to a local stand-in that records shapes, so nothing named by
the file is ever called. A file using any global beyond the few ``torch.save`` writes for state
dicts gives ``None``, and the caller falls back to torch's own safe loader, which decides (and
refuses code).

Before any unpickler (ours or torch's) sees a byte, :func:`check_torch_file` bounds what the file
can make it do; a file that fails raises :class:`Refused` with a one-line reason:

- a zip's ``data.pkl`` must be a single stored (uncompressed) entry of at most
  :data:`MAX_PICKLE_BYTES` (torch writes every entry stored; a compressed one is foreign or a bomb);
- the pickle's opcodes are scanned first (:func:`scan_pickle`): memo indices must be the next
  free slot (the C unpickler sizes its memo array by the largest index: ``LONG_BINPUT
  0xffffffff`` asks for 64 GiB) and nesting at most :data:`MAX_NESTING` deep (hashing a 10^6-deep
  tuple overflows the C stack: SIGSEGV in both unpicklers);
- a non-zip file must start with torch's legacy magic number and must not parse as a tar header
  (torch's legacy loader tries ``tarfile`` first, whose pax-header regex is quadratic: a 98 KB file
  took 20 s), and its leading pickles are scanned the same way.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import reprlib
import struct
import tarfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Optional

#: Measured: the data.pkl of an f5tts_v1_base model.pt (model + EMA + AdamW state, 364 tensors
#: each) is 188,735 bytes and passes the scan below in ~40 ms; 64 MiB is ~350x that.
MAX_PICKLE_BYTES = 64 * 1024 * 1024
#: Measured: that file nests 9 deep (as the scan counts). 100 is far above any state dict and far
#: below the depth at which C code that recurses unguarded (tuple hashing) or Python's recursion
#: limit fails.
MAX_NESTING = 100

ZIP_MAGIC = b"PK\x03\x04"
#: torch.serialization.MAGIC_NUMBER, the first pickle of every legacy (non-zip) torch.save file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_HEADS = tuple(pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=p) for p in range(2, pickle.HIGHEST_PROTOCOL + 1))
#: A legacy file is five pickles (magic, protocol version, system info, the object, storage keys)
#: followed by raw storage bytes.
_LEGACY_PICKLES = ("magic number", "protocol version", "system info", "object", "storage keys")


class Refused(ValueError):
    """A file that no unpickler may read: hostile or damaged. ``str()`` is the one-line reason."""


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
        raise _Unsupported(f"persistent id {reprlib.repr(pid)}")


# --- the gate -----------------------------------------------------------------------------------


def check_torch_file(path: Path) -> Optional[bytes]:
    """Raise :class:`Refused` unless ``path`` is safe to hand to an unpickler (see the module doc).

    Returns the scanned ``data.pkl`` of a zip (for :func:`structure_of`), ``None`` for a legacy file.
    """
    with open(path, "rb") as handle:
        head = handle.read(512)
        if head.startswith(ZIP_MAGIC):
            return zip_data_pkl(path)
        _check_legacy(handle, head)
    return None


def zip_data_pkl(path: Path) -> bytes:
    """The scanned ``data.pkl`` of a torch zip; :class:`Refused` when the zip is damaged or hostile."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
            if compressed:
                raise Refused(f"compressed zip entry {compressed[0]!r:.80} (torch.save stores every entry uncompressed)")
            found = [e for e in entries if e.filename == "data.pkl" or e.filename.endswith("/data.pkl")]
            if len(found) != 1:
                raise Refused(f"{len(found)} data.pkl entries in the zip (torch.save writes exactly one)")
            info = found[0]
            if info.file_size > MAX_PICKLE_BYTES:
                raise Refused(f"data.pkl is {info.file_size} bytes, over the {MAX_PICKLE_BYTES >> 20} MiB a state dict's pickle needs")
            data = archive.read(info)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, struct.error, NotImplementedError) as error:
        if isinstance(error, Refused):
            raise
        raise Refused(f"damaged zip container: {_first_line(error)}") from None
    scan_pickle(io.BytesIO(data), "data.pkl")
    return data


def _check_legacy(handle: IO[bytes], head: bytes) -> None:
    if not head.startswith(_LEGACY_HEADS):
        raise Refused("not a PyTorch checkpoint (unrecognised bytes: random data or another format)")
    if _is_tar_header(head):
        raise Refused("a tar archive, not a PyTorch checkpoint (torch's tar loader is refused)")
    handle.seek(0)
    bounded = _BoundedReader(handle, MAX_PICKLE_BYTES)
    for what in _LEGACY_PICKLES:
        scan_pickle(bounded, f"the {what} pickle")


def _is_tar_header(block: bytes) -> bool:
    """Whether ``tarfile`` (what torch's legacy loader opens first) accepts ``block`` as a header."""
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


class _BoundedReader:
    """``read``/``readline``/``tell`` of at most ``limit`` bytes in total; past that, :class:`Refused`."""

    def __init__(self, handle: IO[bytes], limit: int) -> None:
        self._handle, self._left = handle, limit

    def tell(self) -> int:
        return self._handle.tell()

    def read(self, size: int) -> bytes:
        if size > self._left:
            raise Refused(f"its pickles exceed the {MAX_PICKLE_BYTES >> 20} MiB a state dict's pickle needs")
        data = self._handle.read(size)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self._handle.readline(self._left + 1)
        if len(line) > self._left:
            raise Refused(f"its pickles exceed the {MAX_PICKLE_BYTES >> 20} MiB a state dict's pickle needs")
        self._left -= len(line)
        return line


# --- the opcode scan ----------------------------------------------------------------------------

# What each opcode does to the unpickler's stack, precomputed: (kind, items popped below a MARK
# (None: no MARK), items popped otherwise, whether it pushes a new object).
_MARK, _PUT, _MEMOIZE, _GET, _POP, _DUP, _STOP, _IN_PLACE, _OTHER = range(9)
_KINDS = {
    **{name: _PUT for name in ("PUT", "BINPUT", "LONG_BINPUT")},
    **{name: _GET for name in ("GET", "BINGET", "LONG_BINGET")},
    # these change the object below their arguments in place (it stays on the stack)
    **{name: _IN_PLACE for name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD")},
    "MARK": _MARK, "MEMOIZE": _MEMOIZE, "POP": _POP, "DUP": _DUP, "STOP": _STOP,
}
_EFFECTS = {
    op: (
        _KINDS.get(op.name, _OTHER),
        op.stack_before.index(pickletools.markobject) if pickletools.markobject in op.stack_before else None,
        0 if pickletools.markobject in op.stack_before else len(op.stack_before),
        bool(op.stack_after),
    )
    for op in pickletools.opcodes
}


def scan_pickle(stream: IO[bytes], what: str = "pickle") -> None:
    """Walk one pickle's opcodes (no object is built) up to its STOP; :class:`Refused` if it is
    malformed, stores a memo entry out of order, or nests deeper than :data:`MAX_NESTING`.

    The scan simulates the unpickler's stack holding each object's nesting depth. The depth of
    an object shared through the memo is a one-element list, so an object built up in place
    after it was stored is seen at its final depth where it is referenced later. (A mutable
    container filled after it was itself nested can look shallower than it ends up; only tuples
    and frozensets, immutable and built at once, reach the C recursion without a guard.)
    """
    stack: list[list[int]] = []
    marks: list[int] = []
    memo: dict[int, list[int]] = {}
    atom = [1]  # shared by every object built from nothing (scalars, empty containers get their own)
    fence = 0  # the unpicklers never pop below the newest MARK
    try:
        for op, arg, pos in pickletools.genops(stream):
            kind, below_mark, count, pushes = _EFFECTS[op]
            if kind == _PUT or kind == _MEMOIZE:
                index = len(memo) if kind == _MEMOIZE else arg
                if len(stack) <= fence:
                    raise Refused(f"damaged {what}: {op.name} at byte {pos} with nothing to store")
                if index > len(memo):
                    raise Refused(
                        f"hostile {what}: memo index {index} at byte {pos}, but only {len(memo)} entries were stored before it"
                    )
                memo[index] = stack[-1]
                continue
            if kind == _GET:
                box = memo.get(arg)
                if box is None:
                    raise Refused(f"damaged {what}: {op.name} {arg} at byte {pos} reads a memo entry never stored")
                stack.append(box)
                continue
            if kind == _MARK:
                marks.append(len(stack))
                fence = len(stack)
                continue
            if below_mark is not None:
                if not marks:
                    raise Refused(f"damaged {what}: {op.name} at byte {pos} without a MARK")
                top = marks.pop()
                fence = marks[-1] if marks else 0
                if top - below_mark < fence:
                    raise Refused(f"damaged {what}: {op.name} at byte {pos} with too few objects on the stack")
                popped = stack[top - below_mark:]
                del stack[top - below_mark:]
            elif count:
                if kind == _POP and len(stack) == fence and marks:
                    marks.pop()  # as the unpicklers do: POP right after a MARK discards the mark
                    fence = marks[-1] if marks else 0
                    continue
                if len(stack) - fence < count:
                    raise Refused(f"damaged {what}: {op.name} at byte {pos} with too few objects on the stack")
                popped = stack[-count:]
                del stack[-count:]
            elif pushes:
                stack.append([1] if op.name.startswith("EMPTY_") else atom)
                continue
            else:
                continue  # PROTO, FRAME
            if kind == _STOP:
                return
            if kind == _DUP:
                stack += popped * 2
                continue
            if not pushes:
                continue
            if kind == _IN_PLACE:
                box = popped[0]
                if len(popped) > 1:
                    box[0] = max(box[0], 1 + max(b[0] for b in popped[1:]))
            else:
                box = [1 + max(b[0] for b in popped)]
            if box[0] > MAX_NESTING:
                raise Refused(f"hostile {what}: objects nested more than {MAX_NESTING} deep (at byte {pos})")
            stack.append(box)
    except ValueError as error:  # pickletools: unknown opcode, truncated argument, no STOP
        if isinstance(error, Refused):
            raise
        raise Refused(f"damaged {what}: {_first_line(error)}") from None
    raise Refused(f"damaged {what}: ends before its STOP opcode")


# --- the fast reader ----------------------------------------------------------------------------


def read_structure(path: Path) -> Optional[Any]:
    """The unpickled top-level object with tensors as :class:`TensorShape`; ``None`` when this
    reader cannot tell (not a zip, an unexpected global, a damaged pickle): ask torch instead.

    A zip whose ``data.pkl`` fails :func:`zip_data_pkl` raises :class:`Refused` (torch must not
    read it either)."""
    try:
        if not zipfile.is_zipfile(path):
            return None
    except OSError:
        return None
    return structure_of(zip_data_pkl(path))


def structure_of(data: bytes) -> Optional[Any]:
    """:func:`read_structure` for a ``data.pkl`` that already passed :func:`scan_pickle`."""
    try:
        return _ShapeUnpickler(io.BytesIO(data)).load()
    except Exception:  # whatever the stand-ins cannot make sense of, torch's safe loader decides
        return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__
