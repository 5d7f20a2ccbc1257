"""The base weights of an adapter checkpoint: recording them exactly, and finding them again.

At training time :func:`base_ref` records where the base came from (the Hub file at the commit the
cache held, or the path) and the fingerprint of the tensors the trainer loaded
(f5app/ckpt/fingerprint.py). Resolution later turns that record back into a ``ckpt`` config
(:func:`base_ckpt_config`) so the base goes through the usual chain, validation and Hub cache; a
Hub base is asked for at the recorded commit only, never at a branch that may have moved. Whether
the base found is the one the adapter was trained on is decided by ``reader.read_base``, from the
fingerprint of the tensors it reads (no cache of path, size and time decides).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from f5app.ckpt.schema import BaseRef
from f5app.config import CkptConfig

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def short(fingerprint: Optional[str]) -> str:
    return f"{fingerprint[:16]}…" if fingerprint else "none recorded"


def base_ref(source: str, path: Path, ckpt: CkptConfig, fingerprint: str) -> BaseRef:
    """The record of the base a fine-tune starts from (``source``/``path``: resolution's custom or pretrained choice)."""
    weights = "ema" if ckpt.use_ema else "model"
    path_text = str(Path(path).resolve())
    if source == "pretrained":
        commit = snapshot_commit(Path(path), ckpt.filename) or ckpt.revision
        return BaseRef("pretrained", path_text, ckpt.repo_id, commit, ckpt.filename, ckpt.vocab_filename, weights, fingerprint)
    return BaseRef("custom", path_text, weights=weights, fingerprint=fingerprint)


def snapshot_commit(path: Path, filename: str) -> Optional[str]:
    """The commit of a Hub cache path ``.../snapshots/<commit>/<filename>``, or None."""
    depth = len(Path(filename).parts)
    parents = Path(path).parents
    if len(parents) <= depth:
        return None
    snapshot = parents[depth - 1]
    return snapshot.name if snapshot.parent.name == "snapshots" else None


def is_commit(revision: Optional[str]) -> bool:
    return bool(revision) and _COMMIT.match(revision) is not None


def base_ckpt_config(ref: BaseRef, ckpt: CkptConfig) -> CkptConfig:
    """A ``ckpt`` config whose chain finds exactly ``ref`` (``ckpt.base_path`` overrides where).
    A Hub base is fetched at ``ref.revision``, which resolution requires to be a commit."""
    use_ema = ref.weights != "model"
    common = dict(cache_dir=ckpt.cache_dir, quarantine=False, fallback=False, use_ema=use_ema, min_size_bytes=ckpt.min_size_bytes)
    if ckpt.base_path:
        return CkptConfig(name="custom", path=ckpt.base_path, train_chain=["custom"], infer_chain=["custom"], **common)
    if ref.source == "pretrained" and ref.repo_id and ref.filename:
        return CkptConfig(name="pretrained", repo_id=ref.repo_id, filename=ref.filename, vocab_filename=ref.vocab_filename,
                          revision=ref.revision, train_chain=["pretrained"], infer_chain=["pretrained"], **common)
    return CkptConfig(name="custom", path=ref.path, train_chain=["custom"], infer_chain=["custom"], **common)
