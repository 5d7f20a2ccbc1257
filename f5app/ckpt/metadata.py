"""``metadata.json``: what made a checkpoint, written last (docs/checkpoints.md has the schema).

No torch or f5_tts import: versions come from ``importlib.metadata``.
"""

from __future__ import annotations

import json
import platform
import secrets
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Optional

from f5app.ckpt.layout import METADATA_FILENAME, checkpoint_name, utc_now

SCHEMA_VERSION = 1
FORMAT = "f5app-checkpoint"
VERSIONED_PACKAGES = ("torch", "f5-tts", "accelerate", "hydra-core", "omegaconf", "f5app")

#: Model-config keys that decide tensor shapes or the meaning of the weights. Everything else in
#: ModelConfig (name, attention backend, activation checkpointing) may change freely.
ARCHITECTURE_KEYS = (
    "backbone",
    "arch.dim",
    "arch.depth",
    "arch.heads",
    "arch.ff_mult",
    "arch.text_dim",
    "arch.text_mask_padding",
    "arch.qk_norm",
    "arch.conv_layers",
    "arch.pe_attn_head",
    "mel.target_sample_rate",
    "mel.n_mel_channels",
    "mel.hop_length",
    "mel.win_length",
    "mel.n_fft",
    "mel.mel_spec_type",
)


def build_metadata(
    *,
    config: dict,
    hydra: dict,
    update: int,
    epoch: int,
    samples_seen: int,
    metrics: dict,
    world_size: int,
    precision: str,
    model: dict,
    vocab_size: int,
    lineage: dict,
    run_name: str,
) -> dict:
    """The metadata of one checkpoint; the store adds ``files`` (size + sha256) when it saves.

    ``config`` is the fully resolved tree (``OmegaConf.to_container(cfg, resolve=True)``);
    ``hydra`` holds the overrides, group choices and job/sweep info; ``lineage`` says where the
    weights came from: ``{"mode": "resume"|"finetune"|"scratch", "resumed_from": id|None,
    "finetuned_from": {"id"|"path", "source"}|None}``.
    """
    name = checkpoint_name(update)
    return {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "id": f"{run_name}/{name}/{secrets.token_hex(4)}",
        "name": name,
        "run_name": run_name,
        "created_at": utc_now(),
        "update": int(update),
        "epoch": int(epoch),
        "samples_seen": int(samples_seen),
        "metrics": dict(metrics),
        "world_size": int(world_size),
        "precision": precision,
        "model": model,
        "vocab_size": int(vocab_size),
        "config": config,
        "hydra": hydra,
        "lineage": lineage,
        "versions": library_versions(),
        "git_commit": project_git_commit(),
        "files": {},
    }


def library_versions() -> dict[str, Optional[str]]:
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def project_git_commit() -> Optional[str]:
    """HEAD of the repository holding f5app's source, or None (installed wheel, no git, …)."""
    source_dir = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source_dir, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


def read_metadata(path: Path) -> Optional[dict]:
    """The metadata of a checkpoint folder (or of a metadata.json path); None if absent or unreadable."""
    path = Path(path)
    file = path if path.name == METADATA_FILENAME or path.suffix == ".json" else path / METADATA_FILENAME
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_config_diff(recorded: dict, current: dict) -> list[str]:
    """Architecture differences as readable lines, e.g. ``arch.dim: checkpoint 64, config 1024``.

    Only :data:`ARCHITECTURE_KEYS` are compared; a key the checkpoint did not record is skipped.
    """
    lines = []
    for dotted in ARCHITECTURE_KEYS:
        missing = object()
        old, new = _lookup(recorded, dotted, missing), _lookup(current, dotted, missing)
        if old is missing or new is missing:
            continue
        if old != new:
            lines.append(f"{dotted}: checkpoint {old!r}, config {new!r}")
    return lines


def _lookup(tree: Any, dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def read_sidecar_metadata(weights_file: Path) -> Optional[dict]:
    """The metadata an export carried beside a weights file (``<file>.metadata.json``).

    The export record holds the source checkpoint's metadata under ``source_metadata`` and the
    export's own facts under ``export``; this returns the former with ``export`` added.
    """
    record = read_metadata(Path(weights_file).with_name(Path(weights_file).name + ".metadata.json"))
    if record is None:
        return None
    if isinstance(record.get("source_metadata"), dict):
        return {**record["source_metadata"], "export": record.get("export")}
    return record if record.get("format") == FORMAT else {"export": record.get("export")}
