"""Export weights for inference in upstream F5-TTS's formats, with the metadata carried along.

- ``safetensors``: one weight set under ``ema_model.transformer.*`` plus ``initted`` and ``step``,
  exactly like upstream's released files, so ``f5_tts.infer.utils_infer.load_checkpoint`` reads it.
- ``pt``: upstream's trainer layout, ``{"ema_model_state_dict": …, "model_state_dict": …}``.

Upstream chooses the reader by the file's suffix, so the suffix must match the format; without an
explicit format the suffix chooses it (a folder gets ``model.safetensors``). Files are written
through :func:`f5app.files.atomic_write` (a fresh temporary that is never a planted symlink,
renamed into place); an existing file is never replaced unless ``overwrite=True``. Next to ``OUT`` go ``vocab.txt`` (when the source has one) and
``OUT.metadata.json`` (written last): the source's metadata plus what the export did.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from f5app.ckpt.adapt import choose_weights, read_weight_sets, save_safetensors
from f5app.ckpt.fingerprint import weights_fingerprint
from f5app.data.vocab import VOCAB_FILE, vocab_text
from f5app.files import atomic_write

FORMATS = {"safetensors": ".safetensors", "pt": ".pt"}


def export_weights(
    src: str | Path, out: str | Path, fmt: str | None = None, use_ema: bool = True, overwrite: bool = False
) -> Path:
    """Write ``src``'s weights (EMA when ``use_ema`` and present) to ``out``; returns the weights path.

    ``fmt`` (``safetensors`` or ``pt``) defaults to the one ``out``'s suffix names. ``out`` may be
    an existing folder: the file is then ``model.<fmt suffix>`` inside it (safetensors by default).
    """
    out = Path(out)
    if fmt is None:
        fmt = format_for(out)
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not supported; use one of: {', '.join(FORMATS)}")
    src, out = Path(src), Path(out)
    if out.is_dir():
        out = out / f"model{FORMATS[fmt]}"
    if out.suffix != FORMATS[fmt]:
        raise ValueError(f"{out}: a {fmt} export must end with {FORMATS[fmt]} (upstream picks the reader by suffix)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent} does not exist; create the output folder first")

    sets = read_weight_sets(src)
    chosen = choose_weights(sets, use_ema=use_ema, path=src)
    vocab_path = out.parent / VOCAB_FILE
    metadata_path = out.with_name(out.name + ".metadata.json")
    vocab_content = vocab_text(chosen.vocab) if chosen.vocab is not None else None
    _refuse_clobber(out, metadata_path, vocab_path, vocab_content, overwrite)

    source_metadata = _source_metadata(src)
    step = int(source_metadata.get("update", 0)) if isinstance(source_metadata, dict) else 0
    ema_section = _as_ema(chosen.state, step)
    if fmt == "safetensors":
        atomic_write(out, lambda tmp: save_safetensors(ema_section, tmp))
    else:
        # Upstream's use_ema=False path reads model_state_dict: keep the source's live weights there.
        model_section = sets.model if sets.model is not None else chosen.state
        atomic_write(out, lambda tmp: _torch_save({"ema_model_state_dict": ema_section, "model_state_dict": model_section}, tmp))
    if vocab_content is not None:
        atomic_write(vocab_path, vocab_content)

    record = {
        "source_metadata": source_metadata,
        "export": {
            "format": fmt,
            "file": out.name,
            "source": str(src.resolve()),
            "source_kind": chosen.source_kind,
            "weights": chosen.weights,
            "adaptations": chosen.notes,
            "fingerprint": weights_fingerprint(chosen.state),
            "num_tensors": len(chosen.state),
            "vocab_file": VOCAB_FILE if vocab_content is not None else None,
            "vocab_size": len(chosen.vocab) if chosen.vocab is not None else None,
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
    atomic_write(metadata_path, json.dumps(record, indent=2, default=str) + "\n")
    return out


def format_for(out: Path) -> str:
    """The export format ``out`` asks for by its suffix (an existing folder: safetensors)."""
    if out.is_dir():
        return "safetensors"
    for fmt, suffix in FORMATS.items():
        if out.suffix == suffix:
            return fmt
    raise ValueError(
        f"{out}: the suffix {out.suffix or '(none)'!r} names no export format; end the name with "
        f"{' or '.join(FORMATS.values())}, or pass the format (--format {'|'.join(FORMATS)})"
    )


def _as_ema(state: dict, step: int) -> dict:
    import torch

    section = {f"ema_model.{key}": tensor for key, tensor in state.items()}
    section["initted"] = torch.tensor(True)
    section["step"] = torch.tensor(step)
    return section


def _refuse_clobber(out: Path, metadata_path: Path, vocab_path: Path, vocab_content: str | None, overwrite: bool) -> None:
    """Check everything before writing anything, so a refusal leaves no partial export."""
    if overwrite:
        return
    for existing in (out, metadata_path):
        if existing.exists():
            raise FileExistsError(f"{existing} already exists; pass overwrite=True (--overwrite) or choose another path")
    if vocab_content is not None and vocab_path.exists() and vocab_path.read_bytes() != vocab_content.encode("utf-8"):
        raise FileExistsError(f"{vocab_path} already exists with another vocabulary; export into another folder or pass overwrite=True")


def _source_metadata(src: Path) -> dict[str, Any] | None:
    candidates = [src / "metadata.json"] if src.is_dir() else [src.with_name(src.name + ".metadata.json"), src.parent / "metadata.json"]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"{candidate} is not valid JSON ({error}); fix or remove it before exporting") from error
    return None


def _torch_save(payload: dict, path: Path) -> None:
    import torch

    torch.save(payload, path)

