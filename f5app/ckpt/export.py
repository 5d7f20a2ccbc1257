"""Export weights for inference in upstream F5-TTS's formats, with the metadata carried along.

- ``safetensors``: one weight set under ``ema_model.transformer.*`` plus ``initted`` and ``step``,
  exactly like upstream's released files, so ``f5_tts.infer.utils_infer.load_checkpoint`` reads it.
- ``pt``: upstream's trainer layout, ``{"ema_model_state_dict": …, "model_state_dict": …}``.

Upstream chooses the reader by the file's suffix, so the suffix must match the format; without an
explicit format the suffix chooses it (a folder gets ``model.safetensors``). Files are written
through :func:`f5app.files.atomic_write` (a fresh temporary that is never a planted symlink,
renamed into place); an existing file is never replaced unless ``overwrite=True``. Next to ``OUT`` go ``vocab.txt`` (when the source has one) and
``OUT.metadata.json`` (written last): the source's metadata plus what the export did.

A LoRA adapter checkpoint has no full weights: :func:`export_merged` folds it into its base (found
and checked as resolution does) and writes the result as above; :func:`export_adapter` writes the
adapter alone in peft's own layout.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Optional

from f5app.ckpt import lora
from f5app.ckpt.adapt import save_safetensors
from f5app.ckpt.fingerprint import weights_fingerprint
from f5app.ckpt.layout import utc_now
from f5app.ckpt.reader import CheckpointReader, choose_weights, read_base
from f5app.ckpt.resolve import resolve
from f5app.ckpt.schema import (
    EMA_STATE, MODEL_STATE, CheckpointMetadata, ExportRecord, export_sidecar_path, read_export_record, read_metadata,
)
from f5app.config import CkptConfig, model_config_from_dict
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
    src = Path(src)
    if adapter_record(src) is not None:
        raise ValueError(f"{src} is a LoRA adapter checkpoint (no full weights): export it merged into its base "
                         "(--merge) or as a peft adapter folder (--format peft)")
    out, fmt = _target(out, fmt)
    sets = CheckpointReader(src).weight_sets()
    chosen = choose_weights(sets, use_ema=use_ema, path=src)
    # Upstream's use_ema=False path reads model_state_dict: keep the source's live weights there.
    model_section = sets.model if sets.model is not None else chosen.state
    facts = {"source_kind": chosen.source_kind, "weights": chosen.weights, "adaptations": chosen.notes}
    return _write_weights(src, out, fmt, chosen.state, model_section, chosen.vocab, facts, overwrite)


def export_merged(
    src: str | Path, out: str | Path, fmt: str | None = None, use_ema: bool = True, overwrite: bool = False,
    ckpt: Optional[CkptConfig] = None,
) -> Path:
    """An adapter checkpoint folded into its base (resolved and fingerprint-checked as for inference),
    written in upstream's format exactly like :func:`export_weights` writes full weights."""
    src = Path(src)
    if adapter_record(src) is None:
        raise ValueError(f"--merge folds a LoRA adapter into its base; {src} is not an adapter checkpoint: export it without --merge")
    out, fmt = _target(out, fmt)
    settings = dataclasses.replace(ckpt or CkptConfig(), name="custom", path=str(src), infer_chain=["custom"], fallback=False)
    chosen = resolve(settings, purpose="infer", run_dir=src.parent, model=None).chosen
    assert chosen is not None and chosen.base is not None and chosen.metadata is not None and chosen.metadata.adapter is not None
    reader = CheckpointReader.of(chosen)
    adapter, vocab = reader.adapter(use_ema=use_ema), reader.vocab()
    record = adapter.record
    base, _ = read_base(chosen)
    assert record.base_vocab_size is not None and vocab is not None, "an adapter checkpoint records its base vocabulary"
    cfm = lora.base_model(base, model_config_from_dict(chosen.metadata.model), vocab[: record.base_vocab_size], vocab)
    state = lora.merged_state(cfm, record, vocab, adapter.state)
    facts = {
        "source_kind": "f5app LoRA adapter checkpoint, merged into its base",
        "weights": "ema adapter" if use_ema else "live adapter",
        "adaptations": [f"merged LoRA rank {record.rank} (alpha {record.alpha:g}) into {chosen.base.path}"],
        "base": dataclasses.asdict(record.base),
    }
    return _write_weights(src, out, fmt, state, state, vocab, facts, overwrite)


#: A peft export's files (peft's own layout) plus f5app's record of where the adapter belongs.
PEFT_CONFIG, PEFT_WEIGHTS, ADAPTER_SIDECAR = "adapter_config.json", "adapter_model.safetensors", "f5app_adapter.json"


def export_adapter(src: str | Path, out: str | Path, use_ema: bool = True, overwrite: bool = False) -> Path:
    """The adapter alone in peft's layout (``adapter_config.json`` + ``adapter_model.safetensors``)
    in the folder ``out``, with ``vocab.txt`` and ``f5app_adapter.json`` (the base it needs) beside.

    ``PeftModel.from_pretrained(cfm, out)`` loads it onto a CFM holding the base whose text embedding
    has ``len(vocab.txt) + 1`` rows (new token rows are the adapter's; their values do not matter).
    """
    src, out = Path(src), Path(out)
    record = adapter_record(src)
    if record is None:
        raise ValueError(f"--format peft exports a LoRA adapter; {src} is not an adapter checkpoint (finetune=lora)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent} does not exist; create the output folder first")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: a peft export is a folder; choose a folder name")
    files = [out / name for name in (PEFT_CONFIG, PEFT_WEIGHTS, ADAPTER_SIDECAR, VOCAB_FILE)]
    if not overwrite and any(f.exists() for f in files):
        raise FileExistsError(f"{out} already holds an export; pass overwrite=True (--overwrite) or choose another folder")
    reader = CheckpointReader(src)
    vocab, state = reader.vocab(), reader.adapter(use_ema=use_ema).state
    assert vocab is not None, "an adapter checkpoint holds its vocab.txt (validated)"
    config = lora.peft_config(record, len(vocab), inference=True)
    out.mkdir(exist_ok=True)
    config_text = json.dumps(config.to_dict(), indent=2, sort_keys=True, default=_jsonable) + "\n"
    atomic_write(out / PEFT_WEIGHTS, lambda tmp: save_safetensors(state, tmp, metadata={"format": "pt"}))
    atomic_write(out / PEFT_CONFIG, config_text)
    atomic_write(out / VOCAB_FILE, vocab_text(vocab))
    sidecar = ExportRecord(reader.record, {
        "format": "peft", "source": str(src.resolve()), "weights": "ema adapter" if use_ema else "live adapter",
        "base": dataclasses.asdict(record.base), "vocab_size": len(vocab), "base_vocab_size": record.base_vocab_size,
        "fingerprint": weights_fingerprint(state), "exported_at": utc_now()})
    atomic_write(out / ADAPTER_SIDECAR, sidecar.to_json())
    return out


def adapter_record(src: Path):
    """The AdapterRecord of an adapter checkpoint folder; None for anything else."""
    metadata = read_metadata(src) if Path(src).is_dir() else None
    return metadata.adapter if metadata is not None else None


def _jsonable(value: Any) -> Any:
    return sorted(value) if isinstance(value, (set, frozenset)) else str(value)


def _target(out: str | Path, fmt: str | None) -> tuple[Path, str]:
    out = Path(out)
    if fmt is None:
        fmt = format_for(out)
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not supported; use one of: {', '.join(FORMATS)}")
    if out.is_dir():
        out = out / f"model{FORMATS[fmt]}"
    if out.suffix != FORMATS[fmt]:
        raise ValueError(f"{out}: a {fmt} export must end with {FORMATS[fmt]} (upstream picks the reader by suffix)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent} does not exist; create the output folder first")
    return out, fmt


def _write_weights(src: Path, out: Path, fmt: str, state: dict, model_section: dict, vocab: list[str] | None,
                   facts: dict[str, Any], overwrite: bool) -> Path:
    vocab_path = out.parent / VOCAB_FILE
    metadata_path = export_sidecar_path(out)
    vocab_content = vocab_text(vocab) if vocab is not None else None
    _refuse_clobber(out, metadata_path, vocab_path, vocab_content, overwrite)

    source_metadata = _source_metadata(src)
    ema_section = _as_ema(state, source_metadata.update if source_metadata is not None else 0)
    if fmt == "safetensors":
        atomic_write(out, lambda tmp: save_safetensors(ema_section, tmp))
    else:
        atomic_write(out, lambda tmp: _torch_save({EMA_STATE: ema_section, MODEL_STATE: model_section}, tmp))
    if vocab_content is not None:
        atomic_write(vocab_path, vocab_content)

    record = ExportRecord(source_metadata, {
        "format": fmt,
        "file": out.name,
        "source": str(src.resolve()),
        **facts,
        "fingerprint": weights_fingerprint(state),
        "num_tensors": len(state),
        "vocab_file": VOCAB_FILE if vocab_content is not None else None,
        "vocab_size": len(vocab) if vocab is not None else None,
        "exported_at": utc_now(),
    })
    atomic_write(metadata_path, record.to_json())
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
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

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


def _source_metadata(src: Path) -> Optional[CheckpointMetadata]:
    """The record of what is exported: a checkpoint folder's metadata.json, or the sidecar an earlier
    export left beside a weights file (or the metadata.json of the folder holding it)."""
    if src.is_dir():
        return read_metadata(src)
    record = read_export_record(src)
    if record is not None and record.source is not None:
        return record.source
    return read_metadata(src.parent) if (src.parent / "metadata.json").is_file() else None


def _torch_save(payload: dict, path: Path) -> None:
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    torch.save(payload, path)

