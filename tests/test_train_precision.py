"""Every precision and every memory option trains on CPU, saves, and resumes (tiny model, a few updates)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from f5app.errors import UserError
from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("data"))


def bounds(updates: int, **extra: object) -> dict[str, object]:
    return {"trainer.max_updates": updates, "trainer.save_every": updates, "trainer.val_every": updates, "ckpt.keep_last": 5, **extra}


def saved(run_dir, update: int) -> tuple[dict, dict]:
    folder = run_dir / "checkpoints" / f"update_{update:08d}"
    return torch.load(folder / "model.pt", weights_only=True), json.loads((folder / "metadata.json").read_text())


def test_bf16_mixed_precision_trains_finite_saves_and_resumes(compose_cfg, voice, tmp_path):
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    train_in_process(compose_cfg, fp32, tiny_overrides(voice, **bounds(3)))
    train_in_process(compose_cfg, bf16, tiny_overrides(voice, **bounds(3, **{"trainer.mixed_precision": "bf16"})))

    weights, meta = saved(bf16, 3)
    assert meta["precision"] == "bf16" and math.isfinite(meta["metrics"]["train_loss"]) and math.isfinite(meta["metrics"]["val_loss"])
    reference, _ = saved(fp32, 3)
    # autocast really ran the network in bf16: the same seed and batches learned different weights
    assert any(not torch.equal(weights["model_state_dict"][k], reference["model_state_dict"][k]) for k in reference["model_state_dict"])
    assert all(torch.isfinite(t).all() for t in weights["model_state_dict"].values() if t.is_floating_point())

    train_in_process(compose_cfg, bf16, tiny_overrides(voice, **bounds(5, **{"trainer.mixed_precision": "bf16"})))
    _, resumed = saved(bf16, 5)
    assert resumed["lineage"]["mode"] == "resume" and resumed["lineage"]["resumed_from"]["update"] == 3
    assert math.isfinite(resumed["metrics"]["train_loss"])


def test_fp16_on_cpu_is_refused_in_one_line_naming_bf16(compose_cfg, voice, tmp_path):
    with pytest.raises(UserError) as refused:
        train_in_process(compose_cfg, tmp_path / "run", tiny_overrides(voice, **bounds(2, **{"trainer.mixed_precision": "fp16"})))
    message = str(refused.value)
    assert "\n" not in message and "needs a GPU" in message and "trainer.mixed_precision=bf16" in message
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").glob("update_*"))


def test_activation_checkpointing_learns_exactly_the_same_weights(compose_cfg, voice, tmp_path):
    plain, recomputed = tmp_path / "plain", tmp_path / "recomputed"
    train_in_process(compose_cfg, plain, tiny_overrides(voice, **bounds(3)))
    train_in_process(compose_cfg, recomputed, tiny_overrides(voice, **bounds(3, **{"model.arch.checkpoint_activations": "true"})))
    a, b = saved(plain, 3)[0]["model_state_dict"], saved(recomputed, 3)[0]["model_state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # switching it on or off on resume is allowed: it is not architecture
    train_in_process(compose_cfg, plain, tiny_overrides(voice, **bounds(5, **{"model.arch.checkpoint_activations": "true"})))
    assert saved(plain, 5)[1]["lineage"]["resumed_from"]["update"] == 3


def test_adamw8bit_keeps_8_bit_moments_saves_and_resumes(compose_cfg, voice, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **bounds(3, optim="adamw8bit")))
    weights, meta = saved(run_dir, 3)
    assert meta["config"]["optim"]["name"] == "adamw8bit" and math.isfinite(meta["metrics"]["train_loss"])
    moments = [state["__bnb_optimizer_quant_state__"] for state in weights["optimizer_state_dict"]["state"].values()]  # bitsandbytes' layout
    large = [m for m in moments if m["state1"].numel() >= 4096]  # smaller tensors keep 32-bit moments (bitsandbytes' min_8bit_size)
    assert large and all(m["state1"].dtype == m["state2"].dtype == torch.uint8 for m in large)

    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **bounds(5, optim="adamw8bit")))
    weights, meta = saved(run_dir, 5)
    assert meta["lineage"]["resumed_from"]["update"] == 3 and math.isfinite(meta["metrics"]["train_loss"])

    with pytest.raises(UserError, match="optim=adamw8bit, the config asks for optim=adamw"):
        train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **bounds(7)))


def test_an_unknown_optimizer_name_is_one_line(compose_cfg, voice, tmp_path):
    with pytest.raises(UserError, match="optim.name=sgd is not an optimizer; use one of adamw, adamw8bit"):
        train_in_process(compose_cfg, tmp_path / "run", tiny_overrides(voice, **bounds(2, **{"optim.name": "sgd"})))
