"""validate(): every rejection reason, fast vs full checks, and the analytic architecture signature."""

from __future__ import annotations

import json

import pytest
import torch

from ckpt_factory import (
    drop_metadata,
    fake_cfm_state_dict,
    make_code_running_pickle,
    make_f5app_checkpoint,
    make_safetensors,
    make_temp_leftover,
    make_upstream_pt,
    random_bytes,
    tiny_model_config,
    tiny_vocab,
    truncate,
    zero_bytes,
)
from f5app.ckpt import arch
from f5app.ckpt.validate import validate

MODEL, VOCAB = tiny_model_config(), tiny_vocab()


def _check(path, **kwargs):
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("vocab_size", len(VOCAB))
    return validate(path, **kwargs)


@pytest.fixture
def checkpoint(tmp_path):
    return make_f5app_checkpoint(tmp_path / "checkpoints", 100, MODEL, VOCAB, val_loss=1.0)


def test_a_fresh_checkpoint_passes_fast_and_full_checks(checkpoint):
    fast = _check(checkpoint)
    full = _check(checkpoint, full=True)
    assert (fast.ok, fast.kind, fast.reason) == (True, "f5app", "ok")
    assert "sha256" not in fast.checks and {"sha256", "finite"} <= set(full.checks) and full.ok
    assert fast.metadata.update == 100
    assert fast.shapes[arch.TEXT_EMBED] == (len(VOCAB) + 1, 32)


def test_upstream_formats_pass(tmp_path):
    for path in (
        make_upstream_pt(tmp_path / "model_last.pt", MODEL, len(VOCAB)),
        make_upstream_pt(tmp_path / "model_1200.pt", MODEL, len(VOCAB), ema_only=True),
        make_safetensors(tmp_path / "model_1250000.safetensors", MODEL, len(VOCAB)),
        make_safetensors(tmp_path / "plain.safetensors", MODEL, len(VOCAB), prefix=""),
    ):
        result = _check(path, full=True)
        assert result.ok, (path.name, result.reason)
    assert _check(tmp_path / "model_last.pt").kind == "upstream_pt"
    assert _check(tmp_path / "plain.safetensors").kind == "safetensors"


def test_missing_path(tmp_path):
    result = _check(tmp_path / "nope.pt")
    assert not result.ok and "does not exist" in result.reason


def test_zero_bytes_truncated_and_random_bytes_have_distinct_reasons(tmp_path):
    zero = zero_bytes(make_upstream_pt(tmp_path / "zero.pt", MODEL, len(VOCAB)))
    cut = truncate(make_upstream_pt(tmp_path / "cut.pt", MODEL, len(VOCAB)))
    noise = random_bytes(make_upstream_pt(tmp_path / "noise.pt", MODEL, len(VOCAB)))
    reasons = [_check(p).reason for p in (zero, cut, noise)]
    assert reasons[0] == "empty file (0 bytes)"
    assert "truncated" in reasons[1]
    assert "not a PyTorch checkpoint" in reasons[2]
    assert not any(_check(p).ok for p in (zero, cut, noise))


def test_damaged_safetensors_truncated_vs_random(tmp_path):
    cut = truncate(make_safetensors(tmp_path / "cut.safetensors", MODEL, len(VOCAB)), 0.6)
    noise = random_bytes(make_safetensors(tmp_path / "noise.safetensors", MODEL, len(VOCAB)))
    assert _check(cut).reason.startswith("truncated: tensor data ends")
    assert _check(noise).reason.startswith("not a safetensors file")


def test_truncated_file_inside_our_checkpoint_is_caught_by_recorded_size(checkpoint):
    truncate(checkpoint / "model.pt", 0.9)
    result = _check(checkpoint)
    assert not result.ok and "metadata recorded" in result.reason and "(truncated)" in result.reason


def test_missing_recorded_file(checkpoint):
    (checkpoint / "training_state.pt").unlink()
    assert _check(checkpoint).reason == "missing file training_state.pt (recorded in metadata.json)"


def test_code_running_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "EXECUTED"
    evil = make_code_running_pickle(tmp_path / "evil.pt", marker)
    result = _check(evil)
    assert not result.ok and "unsafe pickle: refuses to execute code" in result.reason
    assert not marker.exists()


def test_code_running_pickle_inside_our_checkpoint_is_refused(checkpoint, tmp_path):
    marker = tmp_path / "EXECUTED"
    make_code_running_pickle(checkpoint / "model.pt", marker)
    metadata = json.loads((checkpoint / "metadata.json").read_text())
    metadata["files"]["model.pt"]["size"] = (checkpoint / "model.pt").stat().st_size
    (checkpoint / "metadata.json").write_text(json.dumps(metadata))
    assert "unsafe pickle" in _check(checkpoint).reason and not marker.exists()


def test_missing_keys(tmp_path):
    torch.save({"optimizer_state_dict": {}, "update": 3}, tmp_path / "opt_only.pt")
    state = fake_cfm_state_dict(MODEL, len(VOCAB))
    del state[arch.PROJ_OUT]
    torch.save({"model_state_dict": state}, tmp_path / "no_proj.pt")
    assert _check(tmp_path / "opt_only.pt").reason.startswith("missing keys: opt_only.pt has neither")
    assert "missing keys in model_state_dict: transformer.proj_out.weight" in _check(tmp_path / "no_proj.pt").reason


def test_wrong_architecture_is_incompatible_with_readable_diff(tmp_path):
    path = make_upstream_pt(tmp_path / "wide.pt", tiny_model_config(dim=128, depth=3), len(VOCAB))
    result = _check(path)
    assert not result.ok and result.incompatible
    assert "transformer blocks (depth): file 3, config 2" in result.reason
    assert "proj_out (n_mels, dim): file (100, 128), config (100, 64)" in result.reason


def test_our_checkpoint_with_a_different_recorded_model_is_incompatible(checkpoint):
    result = _check(checkpoint, model=tiny_model_config(heads=4))
    assert result.incompatible and result.reason == "architecture differs from config: arch.heads: checkpoint 2, config 4"


def test_wrong_vocab_size(tmp_path):
    path = make_upstream_pt(tmp_path / "v.pt", MODEL, len(VOCAB))
    result = _check(path, vocab_size=len(VOCAB) + 5)
    assert result.incompatible and result.reason == f"wrong vocab size: file has {len(VOCAB)} tokens, config has {len(VOCAB) + 5}"
    assert _check(path, vocab_size=len(VOCAB) + 5, allow_vocab_growth=True).ok  # a fine-tune may grow it
    assert not _check(path, vocab_size=len(VOCAB) - 1, allow_vocab_growth=True).ok


def test_incomplete_checkpoints_left_by_a_crash(tmp_path, checkpoint):
    no_metadata = drop_metadata(checkpoint)
    temp = make_temp_leftover(tmp_path, 200, 12345, MODEL, VOCAB)
    assert _check(no_metadata).reason.startswith("incomplete: no metadata.json")
    assert _check(temp).reason.startswith("incomplete: temporary folder")


def test_full_check_catches_changed_bytes_and_non_finite_weights(tmp_path):
    folder = make_f5app_checkpoint(tmp_path, 100, MODEL, VOCAB)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text(vocab_file.read_text().replace("a", "z"))  # same size, other bytes
    assert _check(folder).ok
    assert "vocab.txt: sha256" in _check(folder, full=True).reason

    state = fake_cfm_state_dict(MODEL, len(VOCAB))
    state[arch.PROJ_OUT][0, 0] = float("nan")
    torch.save({"model_state_dict": state}, tmp_path / "nan.pt")
    assert _check(tmp_path / "nan.pt").ok
    assert _check(tmp_path / "nan.pt", full=True).reason == "non-finite values (NaN/Inf) in model_state_dict.transformer.proj_out.weight"


def test_size_bound_applies_only_to_files_without_metadata(tmp_path):
    path = make_upstream_pt(tmp_path / "m.pt", MODEL, len(VOCAB))
    assert _check(path, min_size_bytes=path.stat().st_size + 1).reason.startswith("only ")
    assert _check(path, min_size_bytes=path.stat().st_size).ok


def test_analytic_signature_matches_the_real_upstream_model():
    from f5app.model import build_cfm

    for model in (MODEL, tiny_model_config(qk_norm="rms_norm", conv_layers=2, depth=3, ff_mult=3)):
        real = {k: tuple(v.shape) for k, v in build_cfm(model, VOCAB).state_dict().items()}
        fake = {k: tuple(v.shape) for k, v in fake_cfm_state_dict(model, len(VOCAB)).items()}
        assert fake == real  # the factory's tensors are upstream's exactly
        found = arch.signature_from_shapes(arch.canonical_shapes(real))
        assert found == arch.expected_signature(model, len(VOCAB))
        assert found.vocab_size == len(VOCAB)
