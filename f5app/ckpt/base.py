"""The base weights of an adapter checkpoint: recording them exactly, finding them again, checking them.

At training time :func:`base_ref` records where the base came from (the Hub file at the commit the
cache held, or the path) and its weights fingerprint (f5app/ckpt/fingerprint.py). Resolution later
turns that record back into a ``ckpt`` config (:func:`base_ckpt_config`) so the base goes through the
usual chain, validation and Hub cache, then compares fingerprints (:func:`fingerprint_of`).

Fingerprinting reads every tensor (~1 s per GiB); the result is remembered per (file, size,
modification time, weight set) under ``$F5APP_CACHE_DIR/fingerprints``, so a base is hashed once,
not on every resolution.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional

from f5app.ckpt.schema import BaseRef
from f5app.config import CkptConfig
from f5app.files import atomic_write

if TYPE_CHECKING:
    from torch import Tensor

    from f5app.ckpt.resolve import ResolvedCheckpoint


def short(fingerprint: Optional[str]) -> str:
    return f"{fingerprint[:16]}…" if fingerprint else "none recorded"


def base_ref(chosen: "ResolvedCheckpoint", ckpt: CkptConfig, fingerprint: str) -> BaseRef:
    """The record of the base a fine-tune starts from (``chosen``: resolution's custom or pretrained)."""
    weights = "ema" if ckpt.use_ema else "model"
    path = str(Path(chosen.path).resolve())
    if chosen.source == "pretrained":
        commit = snapshot_commit(Path(chosen.path), ckpt.filename) or ckpt.revision
        return BaseRef("pretrained", path, ckpt.repo_id, commit, ckpt.filename, ckpt.vocab_filename, weights, fingerprint)
    return BaseRef("custom", path, weights=weights, fingerprint=fingerprint)


def snapshot_commit(path: Path, filename: str) -> Optional[str]:
    """The commit of a Hub cache path ``.../snapshots/<commit>/<filename>``, or None."""
    depth = len(Path(filename).parts)
    parents = Path(path).parents
    if len(parents) <= depth:
        return None
    snapshot = parents[depth - 1]
    return snapshot.name if snapshot.parent.name == "snapshots" else None


def base_ckpt_config(ref: BaseRef, ckpt: CkptConfig) -> CkptConfig:
    """A ``ckpt`` config whose chain finds exactly ``ref`` (``ckpt.base_path`` overrides where)."""
    use_ema = ref.weights != "model"
    common = dict(cache_dir=ckpt.cache_dir, quarantine=False, fallback=False, use_ema=use_ema, min_size_bytes=ckpt.min_size_bytes)
    if ckpt.base_path:
        return CkptConfig(name="custom", path=ckpt.base_path, train_chain=["custom"], infer_chain=["custom"], **common)
    if ref.source == "pretrained" and ref.repo_id and ref.filename:
        return CkptConfig(name="pretrained", repo_id=ref.repo_id, filename=ref.filename, vocab_filename=ref.vocab_filename,
                          revision=ref.revision, train_chain=["pretrained"], infer_chain=["pretrained"], **common)
    return CkptConfig(name="custom", path=ref.path, train_chain=["custom"], infer_chain=["custom"], **common)


# --- fingerprints, remembered ---------------------------------------------------------------------


def fingerprint_of(path: str | Path, *, use_ema: bool) -> str:
    """The weights fingerprint of ``path`` (a file or checkpoint folder), hashed once per file version."""
    from f5app.ckpt.fingerprint import weights_fingerprint_of

    entry = _cache_entry(path, use_ema)
    if entry is not None and entry.is_file():
        remembered = entry.read_text(encoding="utf-8").strip()
        if len(remembered) == 64:
            return remembered
    fingerprint = weights_fingerprint_of(path, use_ema=use_ema)
    _remember(entry, fingerprint)
    return fingerprint


def fingerprint_state(path: str | Path, state: Mapping[str, "Tensor"], *, use_ema: bool) -> str:
    """The fingerprint of weights already read from ``path`` (the trainer has them), remembered for later."""
    from f5app.ckpt.fingerprint import weights_fingerprint

    fingerprint = weights_fingerprint(state)
    _remember(_cache_entry(path, use_ema), fingerprint)
    return fingerprint


def _cache_entry(path: str | Path, use_ema: bool) -> Optional[Path]:
    from f5app.ckpt.adapt import default_adapted_cache_dir, weights_file_in

    path = Path(path)
    try:
        file = weights_file_in(path) if path.is_dir() else path
        info = file.stat()
    except Exception:  # no such file: fingerprint_of then reports it as weights_fingerprint_of does
        return None
    stamp = f"{file.resolve()}|{info.st_size}|{info.st_mtime_ns}|ema={use_ema}"
    return default_adapted_cache_dir().parent / "fingerprints" / hashlib.sha256(stamp.encode()).hexdigest()[:32]


def _remember(entry: Optional[Path], fingerprint: str) -> None:
    if entry is None:
        return
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(entry, fingerprint, durable=False)  # a lost entry is only hashed again
    except OSError:
        pass
