"""Checkpoints exactly as f5app wrote them before the typed schema (schema_version 1, commit a03f155).

The first release's trainer and store wrote these bytes; users have run folders full of them, so
the reader must keep accepting them. Kept as a writer rather than committed files: no weights
are tracked by git. Differences from today's layout: lineage names its source ``parent`` (and
``finetuned_from`` only when fine-tuning), Hydra's overrides are a plain list, numbers may be
``NaN``, no ``nonfinite``/``eval`` in the metrics.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch

from ckpt_factory import ema_section, fake_cfm_state_dict
from f5app.config import ModelConfig


def write_schema1_checkpoint(
    run_dir: Path,
    update: int,
    model_cfg: ModelConfig,
    vocab: list[str],
    *,
    val_loss: Optional[float],
    run_name: str = "old",
    overrides: tuple[str, ...] = ("run_name=old", "trainer.max_updates=4"),
    parent: Optional[dict] = None,
    mode: str = "scratch",
    epoch: int = 0,
    config: Optional[dict] = None,
) -> Path:
    """One checkpoint folder plus pointers, laid out and named as release 0.1.0 did."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    name = f"update_{update:08d}"
    folder = ckpt_dir / name
    folder.mkdir()
    state = fake_cfm_state_dict(model_cfg, len(vocab), seed=update)
    payloads = {
        "model.pt": {
            "model_state_dict": state,
            "ema_model_state_dict": ema_section(state, update),
            "optimizer_state_dict": {"state": {}, "param_groups": []},
            "update": update,
        },
        "training_state.pt": {
            "update": update, "epoch": epoch, "batch_in_epoch": 0, "samples_seen": update * 4,
            "best_val_loss": val_loss, "val_history": [[update, val_loss]] if val_loss is not None else [],
            "world_size": 1, "grad_scaler": None,
        },
        "vocab.txt": "".join(f"{token}\n" for token in vocab),
        "rng_state_0.pt": {"python": random.getstate(), "torch": torch.get_rng_state()},
    }
    files = {}
    for filename, payload in payloads.items():
        path = folder / filename
        if isinstance(payload, str):
            path.write_text(payload, encoding="utf-8")
        else:
            torch.save(payload, path)
        files[filename] = {"size": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    lineage: dict = {"mode": mode, "parent": parent}
    if mode == "finetune":
        lineage["finetuned_from"] = parent
    metadata = {
        "schema_version": 1,
        "format": "f5app-checkpoint",
        "id": f"{run_name}/{name}/{secrets.token_hex(4)}",
        "name": name,
        "run_name": run_name,
        "created_at": "2026-11-30T10:00:00+00:00",
        "update": update,
        "epoch": epoch,
        "samples_seen": update * 4,
        "metrics": {
            "train_loss": 1.0, "val_loss": val_loss, "lr": 1e-4, "best_val_loss": val_loss,
            "val_history": [[update, val_loss]] if val_loss is not None else [],
        },
        "world_size": 1,
        "precision": "no",
        "model": asdict(model_cfg),
        "vocab_size": len(vocab),
        "config": config if config is not None else {"run_name": run_name, "model": asdict(model_cfg), "trainer": {"max_updates": 4, "epochs": 100}},
        "hydra": {"overrides": list(overrides), "choices": {"model": model_cfg.name}, "mode": "RUN", "output_dir": str(run_dir)},
        "lineage": lineage,
        "versions": {"python": "3.11.7", "torch": "2.14.1", "f5app": "0.1.0"},
        "git_commit": None,
        "files": files,
        "weights_fingerprint": None,
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    pointer = {"name": name, "update": update, "val_loss": val_loss, "updated_at": "2026-11-30T10:00:00+00:00"}
    for which in ("last", "best"):
        target = ckpt_dir / f"{which}.json"
        if which == "best" and target.exists() and val_loss is not None:
            old = json.loads(target.read_text())
            if old.get("val_loss") is not None and old["val_loss"] <= val_loss:
                continue
        target.write_text(json.dumps(pointer, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder
