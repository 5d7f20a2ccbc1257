"""Read weights from any supported container and load them into a CFM, adapting known differences.

Supported inputs (``read_weights``):

- an f5app checkpoint folder (``model.pt`` in upstream's trainer layout, ``vocab.txt``);
- upstream's trainer ``.pt`` (``model_state_dict``, ``ema_model_state_dict``, ``optimizer_state_dict``…);
- upstream's released EMA-only ``.safetensors`` (``ema_model.transformer.*`` plus ``initted``, ``step``);
- a plain state dict (``.pt`` or ``.safetensors``) with ``module.`` / ``_orig_mod.`` / ``ema.`` or no prefix.

Every adaptation applied is reported as one human-readable note. Nothing is unpickled beyond
tensors and plain containers (``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from f5app.ckpt.keys import DuplicateWeightKeys, canonicalize
from f5app.errors import UserError, first_line
from f5app.files import atomic_write, sha256_file
from f5app.data.vocab import VOCAB_FILE, read_vocab, write_vocab
from f5app.model import text_embedding_rows

if TYPE_CHECKING:
    from torch import Tensor, nn

#: The text embedding: row 0 is upstream's filler token (text index -1 shifted by +1), row i+1 is vocab[i].
TEXT_EMBED_KEY = "transformer.text_embed.text_embed.weight"
#: Seed for new embedding rows: the same rows land in the model and in its EMA.
NEW_ROWS_SEED = 666
#: Bumped when the conversion written by ``adapt_cached`` changes, so stale cache entries are not reused.
ADAPTER_VERSION = 1

CHECKPOINT_WEIGHTS_FILE = "model.pt"
FOLDER_WEIGHTS_FILES = (CHECKPOINT_WEIGHTS_FILE, "model.safetensors")
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class UnreadableWeights(UserError, ValueError):
    """The input is not a weights container we understand (or it would need code to unpickle)."""


class WeightsMismatch(UserError, ValueError):
    """The weights do not fit the model; the message lists what differs."""

    def __init__(self, missing: list[str], unexpected: list[str], shape_mismatches: list[str], hint: str = ""):
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_first_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_first_few(unexpected)})")
        if shape_mismatches:
            parts.append(f"{len(shape_mismatches)} with another shape ({_first_few(shape_mismatches)})")
        message = "weights do not fit the model: " + "; ".join(parts)
        super().__init__(message + (f" — {hint}" if hint else ""))


@dataclass
class WeightSets:
    """Both weight sets a container may hold, canonical keys, before choosing one."""

    ema: dict[str, "Tensor"] | None
    model: dict[str, "Tensor"] | None
    vocab: list[str] | None
    source_kind: str
    ema_notes: list[str] = field(default_factory=list)
    model_notes: list[str] = field(default_factory=list)
    unlabelled: bool = False  # one flat state dict whose keys do not say EMA or not


@dataclass
class WeightsRead:
    state: dict[str, "Tensor"]  # canonical keys ("transformer.…")
    vocab: list[str] | None
    notes: list[str]
    source_kind: str
    weights: str = "ema"  # which set was taken: "ema" or "model"


@dataclass
class AdaptReport:
    notes: list[str] = field(default_factory=list)


def read_weight_sets(path: str | Path) -> WeightSets:
    """Open ``path`` once and return its EMA and model weights (either may be None)."""
    path = Path(path)
    if path.is_dir():
        weights_file = weights_file_in(path)
        sets = _read_file(weights_file)
        if weights_file.name == CHECKPOINT_WEIGHTS_FILE:
            sets.source_kind = "f5app checkpoint folder"
        sets.vocab = _vocab_in(path)
        return sets
    if not path.is_file():
        raise UnreadableWeights(f"weights not found: {path}")
    sets = _read_file(path)
    sets.vocab = _vocab_in(path.parent)
    return sets


def weights_file_in(folder: Path) -> Path:
    """The weights file of a folder: a checkpoint's ``model.pt``, else an export's ``model.safetensors``."""
    for name in FOLDER_WEIGHTS_FILES:
        if (folder / name).is_file():
            return folder / name
    raise UnreadableWeights(f"{folder} is a folder without {' or '.join(FOLDER_WEIGHTS_FILES)}; point at a checkpoint folder or a weights file")


def read_weights(path: str | Path, *, use_ema: bool = True) -> WeightsRead:
    """Canonical-key weights from ``path``; the EMA set when ``use_ema`` and present, else the model's."""
    return choose_weights(read_weight_sets(path), use_ema=use_ema, path=path)


def choose_weights(sets: WeightSets, *, use_ema: bool, path: str | Path = "the file") -> WeightsRead:
    """Pick the EMA or model set from ``sets`` (falling back to the other one, noted)."""
    preferred, other = ("ema", "model") if use_ema else ("model", "ema")
    chosen = preferred if getattr(sets, preferred) is not None else other
    state = getattr(sets, chosen)
    notes = list(sets.ema_notes if chosen == "ema" else sets.model_notes)
    if chosen != preferred and not sets.unlabelled:
        wanted = "EMA" if use_ema else "model (non-EMA)"
        notes.append(f"no {wanted} weights in the file; using its {'EMA' if chosen == 'ema' else 'model'} weights")
    if not state:
        raise UnreadableWeights(f"{path} holds no model weights")
    return WeightsRead(state=state, vocab=sets.vocab, notes=notes, source_kind=sets.source_kind, weights=chosen)


def _read_file(path: Path) -> WeightSets:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as error:
            raise UnreadableWeights(f"{path} is not a readable safetensors file ({first_line(error)})") from error
        return _classify_flat(raw, path, container="safetensors")
    if path.suffix in TORCH_SUFFIXES:
        return _classify_torch(_torch_load(path), path)
    raise UnreadableWeights(f"{path}: unknown weights format {path.suffix!r}; use .safetensors or .pt")


def _torch_load(path: Path) -> Any:
    import pickle

    import torch

    from f5app.ckpt.peek import Refused, check_torch_file

    try:
        check_torch_file(path)  # nothing hostile reaches an unpickler (ckpt/peek.py)
    except Refused as refused:
        raise UnreadableWeights(f"refusing to load {path}: {refused}") from None
    try:
        try:
            # mmap: only the tensors used are read, so a trainer file's optimizer state never fills memory.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap can only be used" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format, or not torch at all
    except pickle.UnpicklingError as error:
        raise UnreadableWeights(f"refusing to load {path}: it needs more than tensors to unpickle ({_unpickler_reason(error)})") from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise UnreadableWeights(f"{path} is not a readable torch file ({type(error).__name__}: {first_line(error)})") from error


def _unpickler_reason(error: Exception) -> str:
    """torch's message leads with advice to pass weights_only=False; keep only the line saying what was refused."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(boilerplate)]
    return lines[0] if lines else "a pickle that is not plain tensors"


def _classify_torch(obj: Any, path: Path) -> WeightSets:
    if not isinstance(obj, Mapping):
        raise UnreadableWeights(f"{path} holds a {type(obj).__name__}, not a state dict or trainer checkpoint")
    if "ema_model_state_dict" in obj or "model_state_dict" in obj:
        ema, ema_notes = _canonical(obj.get("ema_model_state_dict"), path, "ema_model_state_dict")
        model, model_notes = _canonical(obj.get("model_state_dict"), path, "model_state_dict")
        return WeightSets(ema, model, None, "upstream trainer checkpoint (.pt)", ema_notes, model_notes)
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        sets = _classify_flat(obj["state_dict"], path, container="'state_dict' entry")
        return sets
    return _classify_flat(obj, path, container="torch state dict")


def _classify_flat(raw: Mapping[str, Any], path: Path, container: str) -> WeightSets:
    """A single flat mapping: EMA weights when its keys say so (``ema_model.`` / ``ema.``), else model weights."""
    import torch

    not_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor) and k not in ("step", "update", "initted")]
    if not_tensors:
        raise UnreadableWeights(f"{path}: entries that are not tensors ({_first_few(not_tensors)}); not a state dict")
    is_ema = any(k.startswith(("ema_model.", "ema.")) for k in raw)
    state, notes = _canonical(raw, path, container)
    if is_ema:
        kind = "EMA-only safetensors (upstream release layout)" if container == "safetensors" else f"EMA {container}"
        return WeightSets(state, None, None, kind, ema_notes=notes)
    return WeightSets(None, state, None, f"plain {container}", model_notes=notes, unlabelled=True)


def _canonical(section: Any, path: Path, name: str) -> tuple[dict | None, list[str]]:
    if section is None:
        return None, []
    if not isinstance(section, Mapping):
        raise UnreadableWeights(f"{path}: {name} is a {type(section).__name__}, not a state dict")
    # ema_pytorch with include_online_model=True also saves the online copy; it is not the EMA.
    online = [k for k in section if k.startswith("online_model.")]
    section = {k: v for k, v in section.items() if not k.startswith("online_model.")}
    try:
        state, notes = canonicalize(section)
    except DuplicateWeightKeys as error:
        raise UnreadableWeights(f"{path}: {name}: {error}") from error
    if online:
        notes.append(f"dropped {len(online)} 'online_model.' entries (ema_pytorch's copy of the live model)")
    return state, notes


def _vocab_in(folder: Path) -> list[str] | None:
    candidate = folder / VOCAB_FILE
    return read_vocab(candidate) if candidate.is_file() else None


# --------------------------------------------------------------------------------------------
# Loading into a model


def load_into(
    cfm: "nn.Module",
    state: Mapping[str, "Tensor"],
    *,
    old_vocab: list[str] | None,
    new_vocab: list[str] | None,
    seed: int = NEW_ROWS_SEED,
) -> AdaptReport:
    """Load canonical ``state`` strictly into ``cfm``, growing the text embedding when
    ``new_vocab`` extends ``old_vocab``. Call once for the model and once for its EMA.

    Raises ``WeightsMismatch`` for any other difference, listing it.
    """
    notes: list[str] = []
    state = dict(state)
    target = cfm.state_dict()
    if TEXT_EMBED_KEY in state and TEXT_EMBED_KEY in target:
        _check_vocab(state[TEXT_EMBED_KEY].shape[0], target[TEXT_EMBED_KEY].shape[0], old_vocab, new_vocab)
        if state[TEXT_EMBED_KEY].shape != target[TEXT_EMBED_KEY].shape:
            state[TEXT_EMBED_KEY], note = grow_text_embedding(state[TEXT_EMBED_KEY], old_vocab, new_vocab, seed=seed)
            notes.append(note)

    missing = sorted(k for k in target if k not in state)
    unexpected = sorted(k for k in state if k not in target)
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in sorted(state.keys() & target.keys())
        if state[k].shape != target[k].shape
    ]
    if missing or unexpected or shapes:
        raise WeightsMismatch(missing, unexpected, shapes, hint="check that model= matches the checkpoint's architecture")
    casts = sorted({f"{state[k].dtype}->{target[k].dtype}" for k in state if state[k].dtype != target[k].dtype})
    if casts:
        notes.append(f"cast weights to the model's dtype ({', '.join(c.replace('torch.', '') for c in casts)})")
    cfm.load_state_dict(state, strict=True)
    return AdaptReport(notes=notes)


def _check_vocab(file_rows: int, model_rows: int, old_vocab: list[str] | None, new_vocab: list[str] | None) -> None:
    """Refuse vocabularies that would load without error but map characters to the wrong rows."""
    if old_vocab is not None and text_embedding_rows(len(old_vocab)) != file_rows:
        raise _embedding_mismatch(
            f"{file_rows} rows, but the checkpoint's vocab.txt has {len(old_vocab)} tokens "
            f"(expected {text_embedding_rows(len(old_vocab))} rows)",
            hint="the vocab.txt beside the weights is not the one they were trained with",
        )
    if new_vocab is not None and text_embedding_rows(len(new_vocab)) != model_rows:
        raise ValueError(
            f"the model was built for {model_rows - 1} tokens but new_vocab has {len(new_vocab)}; build it with new_vocab"
        )
    if old_vocab is None or new_vocab is None:
        if file_rows != model_rows:
            raise _embedding_mismatch(
                f"file vocab of {file_rows - 1} tokens vs model vocab of {model_rows - 1}",
                hint="pass both vocabularies to grow the embedding, or use the checkpoint's vocab.txt",
            )
        return
    differs_at = next((i for i, (a, b) in enumerate(zip(old_vocab, new_vocab)) if a != b), None)
    if differs_at is not None:
        detail = (
            f"token {differs_at + 1} is {old_vocab[differs_at]!r} in the checkpoint "
            f"but {new_vocab[differs_at]!r} in the new vocabulary"
        )
    elif len(new_vocab) < len(old_vocab):
        detail = f"the new vocabulary has {len(new_vocab)} tokens, fewer than the checkpoint's {len(old_vocab)}"
    else:
        return
    raise _embedding_mismatch(
        detail,
        hint="a new vocabulary must keep the checkpoint's tokens in order and only append (data.tokenizer.extend_vocab)",
    )


def _embedding_mismatch(detail: str, hint: str) -> WeightsMismatch:
    return WeightsMismatch([], [], [f"{TEXT_EMBED_KEY}: {detail}"], hint=hint)


def grow_text_embedding(
    weight: "Tensor", old_vocab: list[str], new_vocab: list[str], *, seed: int = NEW_ROWS_SEED
) -> tuple["Tensor", str]:
    """Append rows for the tokens ``new_vocab`` adds after ``old_vocab``; existing rows are copied bit for bit.

    New rows are drawn from N(0, 1) like upstream's ``expand_model_embeddings`` (and ``nn.Embedding``'s
    own init), from a private generator so the model and its EMA get the same rows.
    """
    import torch

    old_rows, new_rows = text_embedding_rows(len(old_vocab)), text_embedding_rows(len(new_vocab))
    generator = torch.Generator().manual_seed(seed)
    added = torch.randn((new_rows - old_rows, weight.shape[1]), generator=generator, dtype=torch.float32)
    grown = torch.cat([weight, added.to(weight.dtype)], dim=0)
    added_tokens = new_vocab[len(old_vocab) :]
    shown = ", ".join(repr(t) for t in added_tokens[:8]) + (", …" if len(added_tokens) > 8 else "")
    note = (
        f"grew the text embedding from {len(old_vocab)} to {len(new_vocab)} tokens "
        f"({len(added_tokens)} new: {shown}); old rows kept, new rows initialised N(0, 1)"
    )
    return grown, note


# --------------------------------------------------------------------------------------------
# Converted-once cache


def default_adapted_cache_dir() -> Path:
    """``$F5APP_CACHE_DIR/adapted``, else ``~/.cache/f5app/adapted``."""
    root = os.environ.get("F5APP_CACHE_DIR") or Path.home() / ".cache" / "f5app"
    return Path(root).expanduser() / "adapted"


def adapt_cached(path: str | Path, *, use_ema: bool = True, cache_dir: str | Path | None = None) -> Path:
    """A canonical-key, single-set ``model.safetensors`` (with ``vocab.txt`` beside it when known)
    converted from ``path`` once and reused by the source's sha256.

    ``source.json`` next to it records the source, its kind and the adaptations applied.
    """
    source = Path(path)
    weights_file = weights_file_in(source) if source.is_dir() else source
    if not weights_file.is_file():
        raise UnreadableWeights(f"weights not found: {weights_file}")
    vocab_file = weights_file.parent / VOCAB_FILE
    cache_root = Path(cache_dir).expanduser() if cache_dir else default_adapted_cache_dir()
    digest = _indexed_sha256(weights_file, cache_root)
    key = hashlib.sha256(
        f"{digest}|{_indexed_sha256(vocab_file, cache_root) if vocab_file.is_file() else ''}|ema={use_ema}|v{ADAPTER_VERSION}".encode()
    ).hexdigest()[:32]
    entry = cache_root / key
    converted = entry / "model.safetensors"
    if (entry / "source.json").is_file() and converted.is_file():
        return converted

    read = read_weights(source, use_ema=use_ema)
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = cache_root / f".tmp-{key}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        save_safetensors(read.state, staging / "model.safetensors")
        if read.vocab is not None:
            write_vocab(read.vocab, staging / VOCAB_FILE)
        record = {
            "source": str(source.resolve()),
            "source_sha256": digest,
            "source_kind": read.source_kind,
            "weights": read.weights,
            "notes": read.notes,
            "adapter_version": ADAPTER_VERSION,
        }
        (staging / "source.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        try:
            os.replace(staging, entry)
        except OSError:
            if not (entry / "source.json").is_file():  # not a concurrent writer finishing first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return converted


def save_safetensors(state: Mapping[str, "Tensor"], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors refuses shared or non-contiguous storage; give each tensor its own contiguous copy."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for key, tensor in state.items():
        tensor = tensor.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen and tensor.numel():
            tensor = tensor.clone()
        seen.add(pointer)
        tensors[key] = tensor
    save_file(tensors, str(path), metadata=metadata)


def _indexed_sha256(path: Path, cache_root: Path) -> str:
    """sha256 of ``path``, remembered under its (real path, size, mtime) so an unchanged file
    is hashed once, not on every load (hashing a 2.4 GB checkpoint costs seconds)."""
    info = path.stat()
    stamp = hashlib.sha256(f"{path.resolve()}|{info.st_size}|{info.st_mtime_ns}".encode()).hexdigest()[:32]
    remembered = cache_root / "index" / stamp
    if remembered.is_file():
        return remembered.read_text(encoding="utf-8").strip()
    digest = sha256_file(path)
    remembered.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(remembered, digest, durable=False)  # a lost entry is only hashed again
    return digest




def _first_few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, …"


__all__ = [
    "AdaptReport",
    "UnreadableWeights",
    "WeightSets",
    "WeightsMismatch",
    "WeightsRead",
    "adapt_cached",
    "choose_weights",
    "default_adapted_cache_dir",
    "grow_text_embedding",
    "load_into",
    "read_weight_sets",
    "read_weights",
    "save_safetensors",
]
