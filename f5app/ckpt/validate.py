"""Is this checkpoint usable? Fast checks for resolution, full checks on demand.

Nothing here executes a pickle: ``.pt`` files pass the hostile-file gate and are read by its
structure reader, or by ``load_torch`` (``f5app/safe_load.py``: ``torch.load`` with ``mmap=True``,
``weights_only=True``; tensor data stays on disk, a pickle that names a non-allowlisted global is
refused before anything runs), and ``.safetensors`` files by parsing their JSON header.

Each failure has a distinct one-line reason. ``incompatible=True`` marks a readable checkpoint
that does not fit the configured model or vocabulary: that is a config problem, not damage, so
resolution never quarantines it.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional

from f5app import safe_load
from f5app.ckpt import arch as arch_sig
from f5app.ckpt import lora
from f5app.ckpt.arch import model_config_diff
from f5app.ckpt.layout import TEMP_PREFIX
from f5app.ckpt.schema import (
    ADAPTER_FILENAME, ADAPTER_STATE, EMA_ADAPTER_STATE, EMA_STATE, METADATA_FILENAME, MODEL_FILENAME, MODEL_STATE,
    VOCAB_FILENAME, CheckpointMetadata, adapter_record_problem, read_metadata_file,
)
from f5app.config import ModelConfig, model_config_from_dict, model_presets
from f5app.data.vocab import count_vocab
from f5app.errors import first_line
from f5app.errors import MetadataError
from f5app.files import file_digests

Kind = Literal["f5app", "upstream_pt", "safetensors"]
WEIGHT_GROUPS = (MODEL_STATE, EMA_STATE)
#: An adapter checkpoint's model.pt (finetune=lora): the trainable state only, peft's layout (f5app/ckpt/lora.py).
ADAPTER_GROUPS = (ADAPTER_STATE, EMA_ADAPTER_STATE)
#: The format allows 100 MiB, but json.loads of a hostile 39 MB header took ~1 GiB (empty objects
#: cost ~25x their bytes). Measured: f5tts_v1_base's header (366 tensors) is 48,489 bytes; 8 MiB
#: is ~170x that, and parsing the worst 8 MiB header costs ~200 MiB.
_SAFETENSORS_MAX_HEADER = 8 * 1024 * 1024
#: Bytes per element of each safetensors dtype (the format's own list).
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8,
}
_ZIP_LOCAL_MAGIC = safe_load.ZIP_MAGIC
_ZIP_END_MAGIC = b"PK\x05\x06"


@dataclass
class ValidationResult:
    ok: bool
    reason: str  # "ok", or why not, in one line
    kind: Optional[Kind]
    metadata: Optional[CheckpointMetadata] = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # canonical key -> shape
    incompatible: bool = False  # not damage: does not fit the configured model / vocab, or unreadable now
    checks: list[str] = field(default_factory=list)  # what was verified, in order

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "kind": self.kind,
            "incompatible": self.incompatible,
            "checks": list(self.checks),
            "num_tensors": len(self.shapes),
        }


class _Invalid(Exception):
    def __init__(self, reason: str, incompatible: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.incompatible = incompatible


def detect_kind(path: Path) -> Kind:
    path = Path(path)
    if path.is_dir():
        return "f5app"
    return "safetensors" if path.suffix == ".safetensors" else "upstream_pt"


def validate(
    path: Path,
    *,
    model: Optional[ModelConfig],
    vocab_size: Optional[int],
    full: bool = False,
    min_size_bytes: int = 1024,
    allow_vocab_growth: bool = False,
    trust_base: bool = False,
) -> ValidationResult:
    """Check ``path`` (an f5app checkpoint folder, an upstream ``.pt`` or a ``.safetensors``).

    ``model``/``vocab_size``: what the caller will build; None skips that comparison (an f5app
    checkpoint is then checked against the model and vocabulary its own metadata records).
    ``allow_vocab_growth``: a fine-tune may load a file with fewer vocabulary rows than configured.
    ``min_size_bytes`` bounds files whose size no metadata records. ``trust_base``
    (``ckpt.trust_base``) accepts an adapter checkpoint written before its record was a checksummed
    file of its own (adapter.json).
    """
    path = Path(path)
    kind = detect_kind(path) if path.exists() else None
    result = ValidationResult(ok=False, reason="", kind=kind)
    try:
        if kind is None:
            raise _Invalid(f"{path} does not exist")
        if kind == "f5app":
            _validate_folder(path, result, model, vocab_size, full, allow_vocab_growth, trust_base)
        else:
            _validate_file(path, kind, result, model, vocab_size, full, min_size_bytes, allow_vocab_growth)
    except _Invalid as invalid:
        result.reason, result.incompatible = invalid.reason, invalid.incompatible
        return result
    except OSError as error:  # permissions, I/O errors: the environment, not proof of damage
        name = Path(error.filename).name if error.filename else path.name
        result.reason, result.incompatible = f"cannot read {name}: {error.strerror or error}", True
        return result
    result.ok, result.reason = True, "ok"
    return result


# --- our folders --------------------------------------------------------------------------------


def _validate_folder(path, result, model, vocab_size, full, allow_vocab_growth, trust_base=False) -> None:
    if path.name.startswith(TEMP_PREFIX):
        raise _Invalid("incomplete: temporary folder of a save that never finished")
    if not (path / METADATA_FILENAME).is_file():
        raise _Invalid(f"incomplete: no {METADATA_FILENAME} (the save did not finish, or this is not a checkpoint)")
    try:
        metadata = read_metadata_file(path / METADATA_FILENAME)
    except MetadataError as error:
        raise _Invalid(str(error)) from None
    result.metadata = metadata
    result.checks.append("complete")

    if MODEL_FILENAME not in metadata.files:
        raise _Invalid(f"{METADATA_FILENAME} records no {MODEL_FILENAME}")
    for name, record in metadata.files.items():
        file = path / name
        if file.is_symlink():
            raise _Invalid(f"{name} is a symbolic link; a checkpoint's files must be its own regular files")
        if not file.is_file():
            raise _Invalid(f"missing file {name} (recorded in {METADATA_FILENAME})")
        actual = file.stat().st_size
        if actual != record.size:
            how = "truncated" if actual < record.size else "changed"
            raise _Invalid(f"{name} is {actual} bytes, metadata recorded {record.size} ({how})")
    result.checks.append("sizes")
    if metadata.adapter is not None:
        _validate_adapter_folder(path, metadata, result, model, vocab_size, full, trust_base)
        return

    groups = _read_pt_structure(path / MODEL_FILENAME, result)
    shapes = _weight_shapes(groups)
    result.shapes = shapes
    _check_small_containers(path, metadata)
    own_vocab = _recorded_vocab_size(path, metadata)

    _check_recorded_model(metadata, model)
    own_model = _model_from_dict(metadata.model) if metadata.model else model
    if own_model is not None:
        # The file must match what its own metadata says it is; a mismatch there is damage.
        _check_architecture(shapes, own_model, incompatible=False, what="metadata's model")
    if own_vocab is not None:
        _check_vocab(shapes, own_vocab, growth=False, incompatible=False, what="its vocab.txt")
    if vocab_size is not None:
        _check_vocab(shapes, vocab_size, growth=allow_vocab_growth, incompatible=True, what="config")
    result.checks.append("architecture")

    if full:
        _full_checks(path, metadata, result, WEIGHT_GROUPS)


def _check_recorded_model(metadata: CheckpointMetadata, model: Optional[ModelConfig]) -> None:
    if model is not None and metadata.model:
        diff = model_config_diff(metadata.model, asdict(model))
        if diff:
            raise _Invalid("architecture differs from config: " + "; ".join(diff), incompatible=True)


def _full_checks(path: Path, metadata: CheckpointMetadata, result: ValidationResult, sections: tuple[str, ...]) -> None:
    """Every recorded file's sha256 (and xxh3_128, where recorded, from the same read), then every weight finite."""
    for name, record in metadata.files.items():
        recorded = record.digests()
        found = file_digests(path / name, tuple(recorded))
        for algorithm, expected in recorded.items():
            if found[algorithm] != expected:
                raise _Invalid(f"{name}: {algorithm} {found[algorithm][:12]}… differs from metadata's {str(expected)[:12]}…")
    result.checks.append("sha256")
    _check_finite_pt(path / MODEL_FILENAME, sections)
    result.checks.append("finite")


def _validate_adapter_folder(path, metadata: CheckpointMetadata, result, model, vocab_size, full, trust_base) -> None:
    """An adapter checkpoint: its record is the checksummed adapter.json, and its tensors are exactly
    the adapter that record describes on the model it records (keys and shapes predicted by
    f5app.ckpt.lora); the base is resolution's to find and the reader's to check."""
    problem = adapter_record_problem(path, metadata)
    if problem is not None:
        legacy = ADAPTER_FILENAME not in metadata.files
        if not (legacy and trust_base):
            raise _Invalid(problem + ("; set ckpt.trust_base=true to load it anyway" if legacy else ""), incompatible=legacy)
    result.checks.append("adapter record")
    payload = _read_pt_payload(path / MODEL_FILENAME, result)
    groups = {name: payload[name] for name in ADAPTER_GROUPS if isinstance(payload.get(name), Mapping)}
    if ADAPTER_STATE not in groups:
        raise _Invalid(f"missing keys: {MODEL_FILENAME} of an adapter checkpoint has no {ADAPTER_STATE}")
    result.checks.append("keys")
    _check_small_containers(path, metadata)
    own_vocab = _recorded_vocab_size(path, metadata)
    _check_recorded_model(metadata, model)
    own_model = _model_from_dict(metadata.model) if metadata.model else model
    if own_model is None:
        raise _Invalid(f"{METADATA_FILENAME} of an adapter checkpoint records no model")
    for name, group in groups.items():
        problem = lora.adapter_problem({k: tuple(v.shape) for k, v in group.items() if _is_tensor(v)}, own_model, metadata.adapter, own_vocab)
        if problem:
            raise _Invalid(f"{name}: {problem}")
    result.shapes = {k: tuple(v.shape) for k, v in groups[ADAPTER_STATE].items() if _is_tensor(v)}
    if vocab_size is not None and own_vocab is not None and own_vocab != vocab_size:
        raise _Invalid(f"wrong vocab size: adapter has {own_vocab} tokens, config has {vocab_size}", incompatible=True)
    result.checks.append("adapter")
    if full:
        _full_checks(path, metadata, result, ADAPTER_GROUPS)


#: Files up to this size are read whole during the fast checks (training state, RNG states: KiB).
_SMALL_CONTAINER_BYTES = 64 * 1024 * 1024


def _check_small_containers(path: Path, metadata: CheckpointMetadata) -> None:
    for name in metadata.files:
        if name != MODEL_FILENAME and name.endswith(".pt"):
            _check_small_container(path / name)


def _check_small_container(file: Path) -> None:
    """Every entry of a small torch.save zip read once and its CRC-32 checked: one changed byte
    in training_state.pt or an RNG file is damage found now, not an UnpicklingError at resume."""
    check_torch_container(file)  # stored entries only, bounded data.pkl, opcodes scanned
    size = file.stat().st_size
    if size > _SMALL_CONTAINER_BYTES:
        return
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError, NotImplementedError, zlib.error, OverflowError) as error:
        raise _Invalid(f"{file.name}: damaged container ({type(error).__name__}: {first_line(error, 100, default='')})") from None
    if bad is not None:
        raise _Invalid(f"{file.name}: damaged (checksum mismatch in {bad})")


def _recorded_vocab_size(folder: Path, metadata: CheckpointMetadata) -> Optional[int]:
    vocab_file = folder / VOCAB_FILENAME
    if vocab_file.is_file():
        try:
            return count_vocab(vocab_file)
        except (UnicodeDecodeError, ValueError) as error:
            raise _Invalid(f"{VOCAB_FILENAME} is damaged ({first_line(error, 100)})") from None
    return metadata.vocab_size


def _model_from_dict(recorded: dict) -> Optional[ModelConfig]:
    try:
        return model_config_from_dict(recorded)
    except (TypeError, ValueError, AttributeError):  # an older or hand-edited record: fall back to the configured model
        return None


# --- single files -------------------------------------------------------------------------------


def _validate_file(path, kind, result, model, vocab_size, full, min_size_bytes, allow_vocab_growth) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as error:
        raise _Invalid(f"cannot read {path.name}: {error.strerror or error}", incompatible=True)
    if size == 0:
        raise _Invalid("empty file (0 bytes)")
    if size < min_size_bytes:
        raise _Invalid(f"only {size} bytes, below ckpt.min_size_bytes={min_size_bytes}")
    result.checks.append("size")

    with _unexpected_content_is_damage(path):
        if kind == "safetensors":
            shapes_raw = _safetensors_shapes(path, size)
            result.checks.append("structure")
            result.shapes = arch_sig.canonical_shapes(shapes_raw)
            if not result.shapes:
                raise _Invalid("missing keys: no model weights in the safetensors file")
        else:
            groups = _read_pt_structure(path, result)
            result.shapes = _weight_shapes(groups)

        if model is not None:
            _check_architecture(result.shapes, model, incompatible=True, what="config")
        else:
            _require_keys(result.shapes)
        if vocab_size is not None:
            _check_vocab(result.shapes, vocab_size, growth=allow_vocab_growth, incompatible=True, what="config")
    result.checks.append("architecture" if model is not None else "keys")

    if full:
        if kind == "safetensors":
            _check_finite_safetensors(path)
        else:
            _check_finite_pt(path)
        result.checks.append("finite")


@contextlib.contextmanager
def _unexpected_content_is_damage(path: Path) -> Iterator[None]:
    """What a file holds can make the structure and architecture checks fail in ways no reason
    was written for (a key that is an int, a shape that is a string, a 5,000-digit block index):
    that is a damaged file, one rejected candidate, not a traceback."""
    try:
        yield
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError, RecursionError) as error:
        raise _Invalid(f"{path.name}: damaged structure ({type(error).__name__}: {first_line(error, 160)})") from None




# --- containers ---------------------------------------------------------------------------------


def _read_pt_structure(path: Path, result: ValidationResult) -> dict[str, Mapping[str, Any]]:
    """The weight groups of a torch.save'd checkpoint, tensors memory-mapped (not read)."""
    payload = _read_pt_payload(path, result)
    groups = {name: payload[name] for name in WEIGHT_GROUPS if isinstance(payload.get(name), Mapping)}
    if not groups:
        flat = {k: v for k, v in payload.items() if _is_tensor(v)}
        if flat and arch_sig.canonical_shapes({k: tuple(v.shape) for k, v in flat.items()}):
            groups = {"state_dict": flat}  # a bare state dict (community exports)
    if not groups:
        top = ", ".join(sorted(map(str, payload))[:8]) or "none"
        raise _Invalid(f"missing keys: {path.name} has neither model_state_dict nor ema_model_state_dict (top-level keys: {top})")
    result.checks.append("keys")
    return groups


def _read_pt_payload(path: Path, result: ValidationResult) -> Mapping[str, Any]:
    """The top-level dict of a torch.save'd file, tensors as shapes (never data, never code)."""
    size = path.stat().st_size
    if size == 0:
        raise _Invalid(f"{path.name}: empty file (0 bytes)")
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, size - 65536 - 22))
        tail = handle.read()
    is_zip = head == _ZIP_LOCAL_MAGIC
    if is_zip and _ZIP_END_MAGIC not in tail:
        raise _Invalid(f"{path.name}: truncated (the zip container's end record is missing)")

    # No unpickler reads a byte before the gate bounded what the file can make it do. The fast
    # reader handles what torch.save writes for state dicts; anything else goes to torch.
    data = check_torch_container(path)
    payload = safe_load.structure_of(data) if data is not None else None
    if payload is None:
        payload = _torch_load_safely(path, mmap=is_zip)
    result.checks.append("structure")
    if not isinstance(payload, Mapping):
        raise _Invalid(f"{path.name}: holds a {type(payload).__name__}, not a dict of weights")
    return payload


def check_torch_container(path: Path) -> Optional[bytes]:
    """:func:`safe_load.check_torch_file`, its refusal raised as this module's damage reason. Every
    ``.pt`` a checkpoint holds must pass it before any loader (``torch.load`` included) opens it."""
    try:
        return safe_load.check_torch_file(path)
    except safe_load.Refused as refused:
        raise _Invalid(f"{path.name}: {refused}") from None


def _torch_load_safely(path: Path, mmap: bool) -> Any:
    """The gated weights-only ``torch.load`` (f5app/safe_load.py), its refusal as damage."""
    try:
        return safe_load.load_torch(path, mmap=mmap)
    except safe_load.NeedsCode as refused:
        match = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(refused))
        what = f" ({match.group(1)})" if match else ""
        raise _Invalid(f"{path.name}: unsafe pickle: refuses to execute code{what}") from None
    except safe_load.Refused as refused:
        raise _Invalid(f"{path.name}: {refused}") from None


def _safetensors_shapes(path: Path, size: int) -> dict[str, tuple[int, ...]]:
    if size < 8:
        raise _Invalid(f"truncated: {size} bytes, shorter than a safetensors header")
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        if header_len > 100 * 1024 * 1024:  # beyond the format's own limit: not this format at all
            raise _Invalid("not a safetensors file (unrecognised bytes: random data or another format)")
        if header_len > _SAFETENSORS_MAX_HEADER:
            raise _Invalid(
                f"damaged safetensors header: {header_len} bytes, over the {_SAFETENSORS_MAX_HEADER >> 20} MiB "
                "a model's header needs"
            )
        if 8 + header_len > size:
            raise _Invalid(f"truncated: header claims {header_len} bytes, file has {size - 8} after the length")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _Invalid("not a safetensors file (header is not JSON: random data or another format)") from None
    if not isinstance(header, dict):
        raise _Invalid("not a safetensors file (header is not a JSON object)")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _Invalid("damaged safetensors header: __metadata__ is not a map of strings")
    shapes, data_end = {}, 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        shape, end = _safetensors_entry(info)
        if shape is None:
            raise _Invalid(f"damaged safetensors header: entry {key!r:.80} has no valid dtype/shape/offsets")
        shapes[key] = shape
        data_end = max(data_end, end)
    available = size - 8 - header_len
    if data_end > available:
        raise _Invalid(f"truncated: tensor data ends at byte {data_end}, file holds {available} after the header")
    return shapes


def _safetensors_entry(info: Any) -> tuple[Optional[tuple[int, ...]], int]:
    """``(shape, end offset)`` of one header entry, ``(None, 0)`` unless it is what the format says:
    a known dtype, a list of non-negative ints, and offsets spanning exactly the tensor's bytes."""
    if not isinstance(info, dict):
        return None, 0
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in _SAFETENSORS_DTYPE_BYTES or not isinstance(shape, list) or not all(map(_whole, shape)):
        return None, 0
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_whole, offsets)):
        return None, 0
    begin, end = offsets
    if end - begin != math.prod(shape) * _SAFETENSORS_DTYPE_BYTES[dtype]:
        return None, 0
    return tuple(shape), end


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _weight_shapes(groups: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Canonical shapes; every weight group present must hold the required keys."""
    merged: dict[str, tuple[int, ...]] = {}
    for name, group in groups.items():
        tensors = {k: tuple(v.shape) for k, v in group.items() if isinstance(k, str) and _is_tensor(v)}
        shapes = arch_sig.canonical_shapes(tensors)
        missing = arch_sig.missing_required(shapes)
        if missing:
            raise _Invalid(f"missing keys in {name}: {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else ""))
        for key, shape in shapes.items():
            merged.setdefault(key, shape)
    return merged


def _require_keys(shapes: Mapping[str, tuple[int, ...]]) -> None:
    missing = arch_sig.missing_required(shapes)
    if missing:
        raise _Invalid(f"missing keys: {', '.join(missing[:3])}" + (" …" if len(missing) > 3 else ""))


def _check_architecture(shapes, model: ModelConfig, *, incompatible: bool, what: str) -> None:
    _require_keys(shapes)
    found = arch_sig.signature_from_shapes(shapes)
    expected = arch_sig.expected_signature(model, vocab_size=found.vocab_size or 0)
    diff = arch_sig.architecture_differences(expected, found)
    if diff:
        fit = arch_sig.describe_fit(shapes, model_presets())
        raise _Invalid(f"wrong architecture for the {what}: " + "; ".join(diff) + f"; {fit}", incompatible=incompatible)


def _check_vocab(shapes, vocab_size: int, *, growth: bool, incompatible: bool, what: str) -> None:
    found = arch_sig.signature_from_shapes(shapes).vocab_size
    if found is None or found == vocab_size or (growth and found < vocab_size):
        return
    raise _Invalid(f"wrong vocab size: file has {found} tokens, {what} has {vocab_size}", incompatible=incompatible)


# --- full checks --------------------------------------------------------------------------------


def _check_finite_pt(path: Path, sections: tuple[str, ...] = WEIGHT_GROUPS) -> None:
    payload = _torch_load_safely(path, mmap=True)
    groups = {name: payload[name] for name in sections if isinstance(payload.get(name), Mapping)}
    for group_name, group in (groups or {"state_dict": payload}).items():
        for key, value in group.items():
            if _is_tensor(value) and value.is_floating_point() and not bool(value.isfinite().all()):
                raise _Invalid(f"non-finite values (NaN/Inf) in {group_name}.{key}")


def _check_finite_safetensors(path: Path) -> None:
    from safetensors import safe_open  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    with safe_open(str(path), framework="pt") as handle:
        for key in handle.keys():
            tensor = handle.get_tensor(key)
            if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
                raise _Invalid(f"non-finite values (NaN/Inf) in {key}")
