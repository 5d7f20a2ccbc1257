"""The hostile-file gate and the one ``torch.load`` in f5app: every ``.pt`` file (checkpoints,
upstream weights, vocoder weights) is read through :func:`load_torch`, after :func:`check_torch_file`.

It lives at the lowest layer, beside ``files.py``, because both the checkpoint reader and
``audio/vocoder.py`` use it. It also reads the structure of a ``torch.save`` file (keys, tensor
shapes) without trusting the file:

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
import os
import pickle
import pickletools
import reprlib
import struct
import tarfile
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Optional

from f5app.errors import first_line

#: Measured: the data.pkl of an f5tts_v1_base model.pt (model + EMA + AdamW state, 364 tensors
#: each) is 188,735 bytes (56k opcodes) and passes the scan below in ~17 ms of CPU; 64 MiB is
#: ~350x that.
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


class NeedsCode(Refused):
    """torch's weights-only unpickler refused a global: the file needs more than tensors to load."""


def load_torch(path: Path, *, mmap: bool = False, allow: Iterable[Any] = ()) -> Any:
    """``torch.load(weights_only=True)`` of ``path`` after :func:`check_torch_file`: the only call
    of ``torch.load`` in f5app. ``mmap`` maps tensor data instead of reading it (a legacy, pre-zip
    file is read whole). ``allow`` lists extra globals the weights-only unpickler may rebuild
    (numpy's arrays for RNG states). Any failure is :class:`Refused` with a one-line reason."""
    import torch  # 1.9 s: safe_load is imported by torch-free paths (validate's fast reader)

    data = check_torch_file(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and data is not None)
    except pickle.UnpicklingError as error:
        raise NeedsCode(f"it needs more than tensors to unpickle ({_unpickler_reason(error)})") from None
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever torch raises on what this file holds is damage
        raise Refused(f"damaged container ({type(error).__name__}: {first_line(error, 160)})") from None


def _unpickler_reason(error: Exception) -> str:
    """torch's message leads with advice to pass weights_only=False; keep only the line saying what was refused."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(boilerplate)]
    return lines[0] if lines else "a pickle that is not plain tensors"


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
        raise Refused(f"damaged zip container: {first_line(error, 160)}") from None
    try:
        scan_pickle(data, 0, "data.pkl")
    except _Truncated:
        raise Refused("damaged data.pkl: it ends before its STOP opcode") from None
    return data


def _check_legacy(handle: IO[bytes], head: bytes) -> None:
    if not head.startswith(_LEGACY_HEADS):
        raise Refused("not a PyTorch checkpoint (unrecognised bytes: random data or another format)")
    if _is_tar_header(head):
        raise Refused("a tar archive, not a PyTorch checkpoint (torch's tar loader is refused)")
    # The pickles come first and are small; read more (doubling) only while one is unfinished.
    size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    data, start = handle.read(min(size, 1 << 20)), 0
    for what in _LEGACY_PICKLES:
        while True:
            try:
                start = scan_pickle(data, start, f"the {what} pickle")
                break
            except _Truncated:
                if len(data) >= min(size, MAX_PICKLE_BYTES):
                    raise Refused(
                        f"damaged: the {what} pickle ends before its STOP opcode"
                        if len(data) >= size else f"its pickles exceed the {MAX_PICKLE_BYTES >> 20} MiB a state dict's pickle needs"
                    ) from None
                data += handle.read(min(len(data), MAX_PICKLE_BYTES - len(data)))


def _is_tar_header(block: bytes) -> bool:
    """Whether ``tarfile`` (what torch's legacy loader opens first) accepts ``block`` as a header."""
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


# --- the opcode scan ----------------------------------------------------------------------------

# What each opcode byte does, precomputed from pickletools' table: (name, kind, items popped below
# a MARK (None: it takes no MARK), items popped otherwise, whether it pushes an object, argument
# size (> 0: fixed; _LINE: up to a newline, `lines` times; _LEN*: a length, then that many bytes)).
_MARK, _PUT, _MEMOIZE, _GET, _POP, _DUP, _STOP, _IN_PLACE, _EMPTY, _OTHER = range(10)
_LINE, _LEN1, _LEN4, _LEN4U, _LEN8 = -1, -2, -3, -4, -5  # pickletools' ArgumentDescriptor.n codes
_LENGTH_WIDTH = {_LEN1: 1, _LEN4: 4, _LEN4U: 4, _LEN8: 8}  # bytes of the length field (_LEN4 is signed)
_KINDS = {
    **{name: _PUT for name in ("PUT", "BINPUT", "LONG_BINPUT")},
    **{name: _GET for name in ("GET", "BINGET", "LONG_BINGET")},
    # these change the object below their arguments in place (it stays on the stack)
    **{name: _IN_PLACE for name in ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD")},
    **{name: _EMPTY for name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET")},  # containers filled in place later
    "MARK": _MARK, "MEMOIZE": _MEMOIZE, "POP": _POP, "DUP": _DUP, "STOP": _STOP,
}
_OPCODES: list[Optional[tuple]] = [None] * 256
for _op in pickletools.opcodes:
    _marked = pickletools.markobject in _op.stack_before
    _OPCODES[ord(_op.code)] = (
        _op.name,
        _KINDS.get(_op.name, _OTHER),
        _op.stack_before.index(pickletools.markobject) if _marked else None,
        0 if _marked else len(_op.stack_before),
        bool(_op.stack_after),
        _op.arg.n if _op.arg is not None else 0,
        2 if _op.arg is not None and _op.arg.name == "stringnl_noescape_pair" else 1,
    )


# Opcode bytes of the fast paths in scan_pickle: scalars of a fixed size (opcode + argument
# bytes, 0 for any other opcode), the memo's binary PUT/GET, and MARK.
_FIXED_ATOMS = bytearray(256)
for _op in pickletools.opcodes:
    if _op.name in ("BININT", "BININT1", "BININT2", "BINFLOAT", "NONE", "NEWTRUE", "NEWFALSE", "EMPTY_TUPLE"):
        _FIXED_ATOMS[ord(_op.code)] = 1 + (_op.arg.n if _op.arg is not None else 0)
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET, _MARK_CODE = (ord(c) for c in "qrhj(")


class _Truncated(Exception):
    """The bytes end before the pickle's STOP (the caller may have more to give)."""


def scan_pickle(data: bytes, start: int = 0, what: str = "pickle") -> int:
    """Walk the opcodes of the pickle at ``data[start:]`` up to its STOP, building nothing, and
    return where it ends; :class:`Refused` if it is malformed, stores a memo entry out of order
    or nests deeper than :data:`MAX_NESTING` (``_Truncated`` when ``data`` ends first).

    The walk simulates the unpickler's stack holding each object's nesting depth. The depth of
    an object shared through the memo is a one-element list, so an object built up in place
    after it was stored is seen at its final depth where it is referenced later. (A mutable
    container filled after it was itself nested can look shallower than it ends up; only tuples
    and frozensets, immutable and built at once, reach the C recursion without a guard.)
    """
    stack: list[list[int]] = []
    marks: list[int] = []
    memo: dict[int, list[int]] = {}
    atom = [1]  # shared by every scalar; containers get their own
    fence = 0  # the unpicklers never pop below the newest MARK
    end, i = len(data), start
    fixed_atoms, put1, put4, get1, get4, mark = _FIXED_ATOMS, _BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET, _MARK_CODE
    while i < end:
        # Fast paths for what torch.save's pickles are made of (about 85% of their opcodes).
        code = data[i]
        skip = fixed_atoms[code]
        if skip:
            i += skip
            stack.append(atom)
            continue
        if code == put4 or code == put1:
            index, i = (int.from_bytes(data[i + 1 : i + 5], "little"), i + 5) if code == put4 else (data[i + 1], i + 2)
            if i > end:
                raise _Truncated
            if index > len(memo) or len(stack) <= fence:
                i -= 5 if code == put4 else 2
            else:
                memo[index] = stack[-1]
                continue
        elif code == get1 or code == get4:
            index, i = (int.from_bytes(data[i + 1 : i + 5], "little"), i + 5) if code == get4 else (data[i + 1], i + 2)
            box = memo.get(index)
            if box is not None and i <= end:
                stack.append(box)
                continue
            i -= 5 if code == get4 else 2
        elif code == mark:
            i += 1
            marks.append(len(stack))
            fence = len(stack)
            continue
        # Everything else, and every error, the general way.
        pos = i
        op = _OPCODES[code]
        if op is None:
            raise Refused(f"damaged {what}: unknown opcode {data[i]:#04x} at byte {pos}")
        name, kind, below_mark, count, pushes, size, lines = op
        i += 1
        if size:
            arg = i
            if size > 0:
                i += size
            elif size == _LINE:
                for _ in range(lines):
                    newline = data.find(b"\n", i)
                    if newline < 0:
                        raise _Truncated
                    i = newline + 1
            else:
                width = _LENGTH_WIDTH[size]
                if i + width > end:
                    raise _Truncated
                length = int.from_bytes(data[i : i + width], "little", signed=size == _LEN4)
                if length < 0:
                    raise Refused(f"damaged {what}: {name} at byte {pos} has a negative length")
                i += width + length
            if i > end:
                raise _Truncated
        if kind == _PUT or kind == _GET:
            index = int.from_bytes(data[arg:i], "little") if size > 0 else _decimal(data[arg : i - 1], what, pos)
            if kind == _GET:
                box = memo.get(index)
                if box is None:
                    raise Refused(f"damaged {what}: {name} {index} at byte {pos} reads a memo entry never stored")
                stack.append(box)
                continue
        elif kind == _MEMOIZE:
            index = len(memo)
        if kind == _PUT or kind == _MEMOIZE:
            if len(stack) <= fence:
                raise Refused(f"damaged {what}: {name} at byte {pos} with nothing to store")
            if index > len(memo):
                raise Refused(f"hostile {what}: memo index {index} at byte {pos}, but only {len(memo)} entries were stored before it")
            memo[index] = stack[-1]
            continue
        if kind == _MARK:
            marks.append(len(stack))
            fence = len(stack)
            continue
        if below_mark is not None:
            if not marks:
                raise Refused(f"damaged {what}: {name} at byte {pos} without a MARK")
            top = marks.pop()
            fence = marks[-1] if marks else 0
            if top - below_mark < fence:
                raise Refused(f"damaged {what}: {name} at byte {pos} with too few objects on the stack")
            popped = stack[top - below_mark :]
            del stack[top - below_mark :]
        elif count:
            if kind == _POP and len(stack) == fence and marks:
                marks.pop()  # as the unpicklers do: POP right after a MARK discards the mark
                fence = marks[-1] if marks else 0
                continue
            if len(stack) - fence < count:
                raise Refused(f"damaged {what}: {name} at byte {pos} with too few objects on the stack")
            popped = stack[-count:]
            del stack[-count:]
        else:
            if pushes:
                stack.append([1] if kind == _EMPTY else atom)
            continue  # PROTO, FRAME: nothing
        if kind == _STOP:
            return i
        if kind == _DUP:
            stack += popped * 2
            continue
        if not pushes:
            continue
        if kind == _IN_PLACE:
            box = popped[0]
            for item in popped[1:]:
                if item[0] >= box[0]:
                    box[0] = item[0] + 1
        else:
            depth = 0
            for item in popped:
                if item[0] > depth:
                    depth = item[0]
            box = [depth + 1]
        if box[0] > MAX_NESTING:
            raise Refused(f"hostile {what}: objects nested more than {MAX_NESTING} deep (at byte {pos})")
        stack.append(box)
    raise _Truncated


def _decimal(text: bytes, what: str, pos: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise Refused(f"damaged {what}: a memo index that is not a number at byte {pos}") from None


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


