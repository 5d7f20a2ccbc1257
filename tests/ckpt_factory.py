"""Fabricate checkpoints for tests: our layout, upstream's formats, and the ways files break.

Everything is written into the folder the test gives (``tmp_path``), with a tiny DiT whose
tensor names and shapes equal upstream's (tests/test_ckpt_validate.py checks that against a real
``build_cfm``), so nothing needs f5_tts to be imported.

    model = tiny_model_config(); vocab = tiny_vocab()
    folder = make_f5app_checkpoint(run_dir / "checkpoints", 100, model, vocab, val_loss=1.5)
    make_upstream_pt(tmp_path / "model_last.pt", model, len(vocab))
    make_safetensors(tmp_path / "model.safetensors", model, len(vocab))     # EMA-only, like releases
    truncate(folder / "model.pt"); zero_bytes(p); random_bytes(p); make_code_running_pickle(p, marker)
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import torch

from f5app.ckpt import layout, schema
from f5app.ckpt.store import CheckpointStore
from f5app.config import ArchConfig, ModelConfig

FREQ_EMBED_DIM = 256  # upstream TimestepEmbedding
CONV_POS_KERNEL, CONV_POS_GROUPS = 31, 16  # upstream ConvPositionEmbedding
DIM_HEAD = 64


def tiny_model_config(**arch_overrides) -> ModelConfig:
    """conf/model/tiny.yaml as a dataclass; ``arch_overrides`` change it (``dim=32``…)."""
    arch = ArchConfig(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1)
    return ModelConfig(name="tiny", arch=replace(arch, **arch_overrides))


def tiny_vocab(extra: str = "abcdefghij") -> list[str]:
    return [" "] + list(extra)


def fake_cfm_state_dict(model: ModelConfig, vocab_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A CFM(DiT) state dict with upstream's exact keys and shapes, filled with small random numbers."""
    a, mels, td = model.arch, model.mel.n_mel_channels, model.arch.text_dim
    inner, ff = a.heads * DIM_HEAD, a.dim * a.ff_mult
    shapes: dict[str, tuple[int, ...]] = {
        "time_embed.time_mlp.0.weight": (a.dim, FREQ_EMBED_DIM),
        "time_embed.time_mlp.0.bias": (a.dim,),
        "time_embed.time_mlp.2.weight": (a.dim, a.dim),
        "time_embed.time_mlp.2.bias": (a.dim,),
        "text_embed.text_embed.weight": (vocab_size + 1, td),
    }
    for i in range(a.conv_layers):
        b = f"text_embed.text_blocks.{i}."
        shapes.update({
            b + "dwconv.weight": (td, 1, 7), b + "dwconv.bias": (td,),
            b + "norm.weight": (td,), b + "norm.bias": (td,),
            b + "pwconv1.weight": (td * 2, td), b + "pwconv1.bias": (td * 2,),
            b + "grn.gamma": (1, 1, td * 2), b + "grn.beta": (1, 1, td * 2),
            b + "pwconv2.weight": (td, td * 2), b + "pwconv2.bias": (td,),
        })
    shapes.update({
        "input_embed.proj.weight": (a.dim, 2 * mels + td),
        "input_embed.proj.bias": (a.dim,),
        "input_embed.conv_pos_embed.conv1d.0.weight": (a.dim, a.dim // CONV_POS_GROUPS, CONV_POS_KERNEL),
        "input_embed.conv_pos_embed.conv1d.0.bias": (a.dim,),
        "input_embed.conv_pos_embed.conv1d.2.weight": (a.dim, a.dim // CONV_POS_GROUPS, CONV_POS_KERNEL),
        "input_embed.conv_pos_embed.conv1d.2.bias": (a.dim,),
        "rotary_embed.inv_freq": (DIM_HEAD // 2,),
    })
    for i in range(a.depth):
        b = f"transformer_blocks.{i}."
        shapes.update({
            b + "attn_norm.linear.weight": (6 * a.dim, a.dim), b + "attn_norm.linear.bias": (6 * a.dim,),
            b + "attn.to_q.weight": (inner, a.dim), b + "attn.to_q.bias": (inner,),
            b + "attn.to_k.weight": (inner, a.dim), b + "attn.to_k.bias": (inner,),
            b + "attn.to_v.weight": (inner, a.dim), b + "attn.to_v.bias": (inner,),
        })
        if a.qk_norm is not None:
            shapes.update({b + "attn.q_norm.weight": (DIM_HEAD,), b + "attn.k_norm.weight": (DIM_HEAD,)})
        shapes.update({
            b + "attn.to_out.0.weight": (a.dim, inner), b + "attn.to_out.0.bias": (a.dim,),
            b + "ff.ff.0.0.weight": (ff, a.dim), b + "ff.ff.0.0.bias": (ff,),
            b + "ff.ff.2.weight": (a.dim, ff), b + "ff.ff.2.bias": (a.dim,),
        })
    shapes.update({
        "norm_out.linear.weight": (2 * a.dim, a.dim), "norm_out.linear.bias": (2 * a.dim,),
        "proj_out.weight": (mels, a.dim), "proj_out.bias": (mels,),
    })
    generator = torch.Generator().manual_seed(seed)
    return {f"transformer.{k}": torch.randn(s, generator=generator) * 0.02 for k, s in shapes.items()}


def ema_section(state: dict[str, torch.Tensor], step: int = 0) -> dict:
    """ema_pytorch's layout, as upstream saves it: ``ema_model.*`` plus ``initted`` and ``step``."""
    section = {f"ema_model.{k}": v.clone() for k, v in state.items()}
    section.update({"initted": torch.tensor(True), "step": torch.tensor(step)})
    return section


def checkpoint_record(
    update: int,
    model_cfg: ModelConfig,
    vocab: list[str],
    val_loss: Optional[float] = None,
    *,
    run_name: str = "test",
    world_size: int = 1,
    lineage: Optional[schema.Lineage] = None,
    seed: Optional[int] = None,
    state: Optional[dict] = None,
    config: Optional[dict] = None,
    overrides: tuple[str, ...] = (),
    eval_scores: Optional[schema.EvalScores] = None,
    eval_set_history: tuple = (),
    epoch: int = 0,
) -> schema.Checkpoint:
    """A :class:`~f5app.ckpt.schema.Checkpoint` built with the same constructors the trainer uses."""
    state = state if state is not None else fake_cfm_state_dict(model_cfg, len(vocab), seed=update if seed is None else seed)
    metrics = schema.Metrics(train_loss=1.0, val_loss=val_loss, best_val_loss=val_loss, eval=eval_scores, eval_set_history=tuple(eval_set_history))
    metadata = schema.new_metadata(
        run_name=run_name, update=update, epoch=epoch, samples_seen=update * 4, metrics=metrics, world_size=world_size,
        precision="no", model=asdict(model_cfg), vocab_size=len(vocab),
        config=config if config is not None else {"run_name": run_name, "model": asdict(model_cfg)},
        hydra=schema.HydraRecord(overrides=(f"run_name={run_name}", *overrides), choices={"model": model_cfg.name}),
        lineage=lineage or schema.Lineage(),
    )
    weights = {
        schema.MODEL_STATE: state,
        schema.EMA_STATE: ema_section(state, update),
        schema.OPTIMIZER_STATE: {"state": {}, "param_groups": []},
        schema.UPDATE_KEY: update,
    }
    progress = schema.Progress(update=update, epoch=epoch, batch_in_epoch=update, samples_seen=update * 4, best_val_loss=val_loss)
    rng = [{"python": random.getstate(), "torch": torch.get_rng_state()} for _ in range(world_size)]
    return schema.Checkpoint(metadata, weights, schema.TrainingState(progress, world_size), rng, list(vocab))


def make_f5app_checkpoint(
    ckpt_dir: Path,
    update: int,
    model_cfg: ModelConfig,
    vocab: list[str],
    val_loss: Optional[float] = None,
    *,
    keep_last: int = 0,
    best_metric: str = "val_loss",
    **record,
) -> Path:
    """One complete checkpoint written through the real CheckpointStore (pointers updated too)."""
    checkpoint = checkpoint_record(update, model_cfg, vocab, val_loss, **record)
    return CheckpointStore(Path(ckpt_dir), keep_last=keep_last, best_metric=best_metric).save(checkpoint)


def make_upstream_pt(
    path: Path, model_cfg: ModelConfig, vocab_size: int, *, ema_only: bool = False, seed: int = 0, update: int = 1000
) -> Path:
    """An upstream trainer checkpoint (``model_last.pt`` / ``model_<N>.pt``), or EMA-only (pruned)."""
    state = fake_cfm_state_dict(model_cfg, vocab_size, seed)
    payload: dict = {"ema_model_state_dict": ema_section(state, update)}
    if not ema_only:
        payload.update(model_state_dict=state, optimizer_state_dict={"state": {}, "param_groups": []}, update=update)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return Path(path)


def make_safetensors(path: Path, model_cfg: ModelConfig, vocab_size: int, *, seed: int = 0, prefix: str = "ema_model.") -> Path:
    """Upstream's released layout: EMA weights only, ``ema_model.*`` keys plus ``initted``/``step``."""
    from safetensors.torch import save_file

    state = fake_cfm_state_dict(model_cfg, vocab_size, seed)
    tensors = {f"{prefix}{k}": v.contiguous() for k, v in state.items()}
    if prefix == "ema_model.":
        tensors.update({"initted": torch.tensor(True), "step": torch.tensor(1)})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return Path(path)


def write_vocab_file(path: Path, vocab: list[str]) -> Path:
    Path(path).write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    return Path(path)


# --- ways files break ---------------------------------------------------------------------------


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])
    return Path(path)


def zero_bytes(path: Path) -> Path:
    Path(path).write_bytes(b"")
    return Path(path)


def random_bytes(path: Path, size: Optional[int] = None, seed: int = 0) -> Path:
    """Overwrite with random bytes (same size as before by default)."""
    path = Path(path)
    size = size if size is not None else (path.stat().st_size if path.exists() else 4096)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


class _CreatesMarker:
    """Unpickling this runs ``open(marker, "w")``: proof that a loader executed the pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def make_code_running_pickle(path: Path, marker: Path, model_cfg: Optional[ModelConfig] = None, vocab_size: int = 10) -> Path:
    """A checkpoint whose pickle creates ``marker`` when fully unpickled (never by our validator)."""
    state = fake_cfm_state_dict(model_cfg or tiny_model_config(), vocab_size)
    torch.save({"model_state_dict": state, "payload": _CreatesMarker(marker)}, path)
    return Path(path)


def drop_metadata(folder: Path) -> Path:
    """A final-named folder without metadata.json, as a hand copy or an older tool leaves it."""
    (Path(folder) / schema.METADATA_FILENAME).unlink()
    return Path(folder)


def make_temp_leftover(ckpt_dir: Path, update: int, pid: int, model_cfg: ModelConfig, vocab: list[str]) -> Path:
    """What a writer killed mid-save leaves: a temp folder with files but no metadata."""
    temp = Path(ckpt_dir) / layout.temp_name(update, pid)
    temp.mkdir(parents=True)
    torch.save({"model_state_dict": fake_cfm_state_dict(model_cfg, len(vocab))}, temp / schema.MODEL_FILENAME)
    return temp


def dead_pid() -> int:
    """A pid no process has now (a child that already exited)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def make_hub_cache(cache_dir: Path, repo_id: str, files: dict[str, Path], revision: str = "main") -> Path:
    """Lay ``files`` (repo path -> local file) out as huggingface_hub's cache for ``repo_id``."""
    commit = "0" * 40
    repo = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    for repo_path, source in files.items():
        target = repo / "snapshots" / commit / repo_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(source).read_bytes())
    return Path(cache_dir)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
