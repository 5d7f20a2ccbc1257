"""Load weights (read by ``f5app/ckpt/reader.py``, canonical keys) into a CFM, adapting known
differences: a text embedding that grows with a fine-tune's new tokens, dtype casts. Every
adaptation applied is reported as one human-readable note; any other difference is refused with a
list (:class:`WeightsMismatch`).

``adapt_cached`` keeps a canonical single-set copy of foreign weights (community ``.pt`` files with
other key layouts) so a later run loads that copy directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from f5app.ckpt.reader import CheckpointReader
from f5app.data.vocab import VOCAB_FILE, write_vocab
from f5app.errors import UserError
from f5app.files import atomic_write, sha256_file
from f5app.model import text_embedding_rows

if TYPE_CHECKING:
    from torch import Tensor, nn

#: The text embedding: row 0 is upstream's filler token (text index -1 shifted by +1), row i+1 is vocab[i].
TEXT_EMBED_KEY = "transformer.text_embed.text_embed.weight"
#: Seed for new embedding rows: the same rows land in the model and in its EMA.
NEW_ROWS_SEED = 666
#: Bumped when the conversion written by ``adapt_cached`` changes, so stale cache entries are not reused.
ADAPTER_VERSION = 1



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
class AdaptReport:
    notes: list[str] = field(default_factory=list)


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
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

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
    reader = CheckpointReader(source)
    weights_file = reader.weights_file()
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

    read = reader.weights(use_ema=use_ema)
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
    from safetensors.torch import save_file  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

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
    "WeightsMismatch",
    "adapt_cached",
    "default_adapted_cache_dir",
    "grow_text_embedding",
    "load_into",
    "save_safetensors",
]
