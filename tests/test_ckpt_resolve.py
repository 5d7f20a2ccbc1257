"""resolve(): each ckpt group option, the auto chains, quarantine, fallback and refusals."""

from __future__ import annotations

import logging

import pytest

from ckpt_factory import (
    dead_pid,
    drop_metadata,
    make_code_running_pickle,
    make_f5app_checkpoint,
    make_hub_cache,
    make_safetensors,
    make_temp_leftover,
    make_upstream_pt,
    random_bytes,
    tiny_model_config,
    tiny_vocab,
    truncate,
    write_vocab_file,
    zero_bytes,
)
from f5app.ckpt import layout, schema
from f5app.ckpt.resolve import ResolutionError, resolve
from f5app.config import CkptConfig, to_settings

MODEL, VOCAB = tiny_model_config(), tiny_vocab()
REPO, WEIGHTS, VOCAB_FILE = "SWivid/F5-TTS", "F5TTS_v1_Base/model_1250000.safetensors", "F5TTS_v1_Base/vocab.txt"


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "runs" / "voice"


def _save(run_dir, *updates, val_losses=None):
    val_losses = val_losses or {}
    return [make_f5app_checkpoint(run_dir / "checkpoints", u, MODEL, VOCAB, val_loss=val_losses.get(u)) for u in updates]


def _ckpt(compose_cfg, purpose, *overrides, cache_dir=None) -> CkptConfig:
    config = compose_cfg("train" if purpose == "train" else "infer", list(overrides))
    ckpt = to_settings(config.ckpt, CkptConfig)
    ckpt.cache_dir = str(cache_dir) if cache_dir else None
    return ckpt


def _statuses(resolution):
    return [(c.source, c.status) for c in resolution.candidates]


@pytest.fixture
def hub_cache(tmp_path):
    weights = make_safetensors(tmp_path / "release.safetensors", MODEL, len(VOCAB))
    vocab = write_vocab_file(tmp_path / "release_vocab.txt", VOCAB)
    return make_hub_cache(tmp_path / "hf_cache", REPO, {WEIGHTS: weights, VOCAB_FILE: vocab})


# --- training --------------------------------------------------------------------------------


def test_auto_train_resumes_the_newest_complete_checkpoint_not_best(compose_cfg, run_dir):
    _save(run_dir, 100, 200, 300, val_losses={100: 0.1, 200: 0.9, 300: 0.8})
    resolution = resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL, vocab_size=len(VOCAB))
    assert resolution.mode == "resume"
    assert resolution.chosen.path.name == "update_00000300" and resolution.chosen.source == "resume"
    assert resolution.chosen.model_config["arch"]["dim"] == 64
    assert resolution.chosen.vocab_path == resolution.chosen.path / "vocab.txt"


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda f: truncate(f / "model.pt"), "(truncated)"),
        (lambda f: zero_bytes(f / "model.pt"), "metadata recorded"),
        (lambda f: drop_metadata(f), "incomplete: no metadata.json"),
        (lambda f: (f / "training_state.pt").unlink(), "missing file training_state.pt"),
    ],
)
def test_auto_train_quarantines_a_damaged_newest_and_resumes_the_previous(compose_cfg, run_dir, damage, reason):
    first, second = _save(run_dir, 100, 200)
    damage(second)
    resolution = resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL)
    assert resolution.mode == "resume" and resolution.chosen.path == first
    quarantined = resolution.candidates[0]
    assert quarantined.status == "quarantined" and reason in quarantined.reason
    assert (run_dir / "checkpoints" / "update_00000200.corrupted").is_dir()
    assert reason in layout.quarantine_reason(run_dir / "checkpoints" / "update_00000200.corrupted")


def test_code_running_pickle_in_the_run_is_quarantined_never_executed(compose_cfg, run_dir, tmp_path):
    first, second = _save(run_dir, 100, 200)
    marker = tmp_path / "EXECUTED"
    make_code_running_pickle(second / "model.pt", marker)
    resolution = resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL)
    assert resolution.chosen.path == first and not marker.exists()
    assert resolution.candidates[0].status == "quarantined"


def test_temp_folder_of_a_crashed_save_is_never_a_candidate(compose_cfg, run_dir):
    (first,) = _save(run_dir, 100)
    temp = make_temp_leftover(run_dir / "checkpoints", 200, dead_pid(), MODEL, VOCAB)
    resolution = resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL)
    assert resolution.chosen.path == first
    assert ("resume", "skipped") in _statuses(resolution) and temp.exists()


def test_refuses_to_restart_when_every_checkpoint_is_invalid(compose_cfg, run_dir):
    for folder in _save(run_dir, 100, 200):
        random_bytes(folder / "model.pt")
    ckpt = _ckpt(compose_cfg, "train", "ckpt.allow_scratch=true")
    with pytest.raises(ResolutionError, match=r"refusing to restart: 2 checkpoints in .*all invalid; see quarantined"):
        resolve(ckpt, purpose="train", run_dir=run_dir, model=MODEL)
    # the next start still refuses: quarantined checkpoints are evidence the run existed
    with pytest.raises(ResolutionError, match="refusing to restart"):
        resolve(ckpt, purpose="train", run_dir=run_dir, model=MODEL)


def test_architecture_change_on_resume_is_refused_with_a_diff_and_nothing_quarantined(compose_cfg, run_dir):
    _save(run_dir, 100)
    with pytest.raises(ResolutionError, match=r"refusing to resume .*arch.dim: checkpoint 64, config 128"):
        resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=tiny_model_config(dim=128))
    assert (run_dir / "checkpoints" / "update_00000100").is_dir()


def test_vocabulary_change_on_resume_is_refused(compose_cfg, run_dir):
    _save(run_dir, 100)
    with pytest.raises(ResolutionError, match="wrong vocab size"):
        resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL, vocab_size=len(VOCAB) + 3)


def test_quarantine_false_leaves_files_alone(compose_cfg, run_dir):
    first, second = _save(run_dir, 100, 200)
    truncate(second / "model.pt")
    resolution = resolve(_ckpt(compose_cfg, "train", "ckpt.quarantine=false"), purpose="train", run_dir=run_dir, model=MODEL)
    assert resolution.chosen.path == first and second.is_dir()
    assert resolution.candidates[0].status == "rejected"


def test_auto_train_without_checkpoints_finetunes_from_custom(compose_cfg, run_dir, tmp_path):
    weights = make_upstream_pt(tmp_path / "community" / "model_500.pt", MODEL, len(VOCAB))
    resolution = resolve(
        _ckpt(compose_cfg, "train", f"ckpt.path={weights}"), purpose="train", run_dir=run_dir, model=MODEL, vocab_size=len(VOCAB) + 4
    )
    assert resolution.mode == "finetune" and resolution.chosen.path == weights
    assert _statuses(resolution) == [("resume", "missing"), ("custom", "chosen")]


def test_auto_train_falls_to_pretrained_from_the_hub_cache(compose_cfg, run_dir, hub_cache):
    resolution = resolve(_ckpt(compose_cfg, "train", cache_dir=hub_cache), purpose="train", run_dir=run_dir, model=MODEL)
    assert resolution.mode == "finetune" and resolution.chosen.source == "pretrained"
    assert resolution.chosen.kind == "safetensors" and resolution.chosen.vocab_path.read_text().startswith(" \n")


def test_auto_train_scratch_only_when_allowed(compose_cfg, run_dir, tmp_path):
    empty_cache = tmp_path / "empty_cache"
    with pytest.raises(ResolutionError, match="no usable checkpoint for train") as raised:
        resolve(_ckpt(compose_cfg, "train", cache_dir=empty_cache), purpose="train", run_dir=run_dir, model=MODEL)
    assert "not in the Hugging Face cache" in str(raised.value)
    assert [c.status for c in raised.value.candidates] == ["missing", "skipped", "missing", "skipped"]

    resolution = resolve(
        _ckpt(compose_cfg, "train", "ckpt.allow_scratch=true", cache_dir=empty_cache), purpose="train", run_dir=run_dir, model=MODEL
    )
    assert resolution.mode == "scratch" and resolution.chosen is None
    assert resolution.to_dict()["chosen"] is None and resolution.to_dict()["mode"] == "scratch"


@pytest.mark.parametrize("option, expected", [("best", "update_00000100"), ("last", "update_00000300"), ("latest", "update_00000300")])
def test_explicit_run_options_resume_from_that_checkpoint(compose_cfg, run_dir, option, expected):
    _save(run_dir, 100, 200, 300, val_losses={100: 0.1, 200: 0.5, 300: 0.4})
    resolution = resolve(_ckpt(compose_cfg, "train", f"ckpt={option}"), purpose="train", run_dir=run_dir, model=MODEL)
    assert resolution.mode == "resume" and resolution.chosen.path.name == expected


def test_ckpt_run_dir_points_at_another_run(compose_cfg, run_dir, tmp_path):
    other = tmp_path / "runs" / "other"
    _save(other, 700)
    resolution = resolve(_ckpt(compose_cfg, "infer", "ckpt=last", f"ckpt.run_dir={other}"), purpose="infer", run_dir=run_dir, model=None)
    assert resolution.chosen.path == other / "checkpoints" / "update_00000700"


def test_invalid_explicit_custom_is_an_error_unless_fallback(compose_cfg, run_dir, tmp_path, hub_cache):
    broken = zero_bytes(tmp_path / "broken.pt")
    with pytest.raises(ResolutionError, match=r"ckpt.path=.*broken.pt is not usable: empty file \(0 bytes\)"):
        resolve(_ckpt(compose_cfg, "train", f"ckpt.path={broken}", cache_dir=hub_cache), purpose="train", run_dir=run_dir, model=MODEL)
    assert broken.exists()  # a user's file is reported, never renamed

    resolution = resolve(
        _ckpt(compose_cfg, "train", f"ckpt.path={broken}", "ckpt.fallback=true", cache_dir=hub_cache),
        purpose="train", run_dir=run_dir, model=MODEL,
    )
    assert resolution.chosen.source == "pretrained"
    assert ("custom", "rejected") in _statuses(resolution)


def test_missing_custom_path_is_an_error(compose_cfg, run_dir, tmp_path):
    with pytest.raises(ResolutionError, match="does not exist"):
        resolve(_ckpt(compose_cfg, "infer", "ckpt=custom", f"ckpt.path={tmp_path / 'nope.pt'}"), purpose="infer", run_dir=run_dir, model=MODEL)


def test_custom_with_wrong_architecture_is_rejected_with_diff(compose_cfg, run_dir, tmp_path):
    weights = make_upstream_pt(tmp_path / "big.pt", tiny_model_config(dim=128), len(VOCAB))
    with pytest.raises(ResolutionError, match=r"proj_out \(n_mels, dim\): file \(100, 128\), config \(100, 64\)"):
        resolve(_ckpt(compose_cfg, "train", "ckpt=custom", f"ckpt.path={weights}"), purpose="train", run_dir=run_dir, model=MODEL)


def test_custom_folder_of_upstream_files_prefers_model_last_then_newest_numbered(compose_cfg, run_dir, tmp_path):
    folder = tmp_path / "upstream_ckpts"
    make_upstream_pt(folder / "model_100.pt", MODEL, len(VOCAB))
    newest = make_upstream_pt(folder / "model_2000.pt", MODEL, len(VOCAB))
    last = make_upstream_pt(folder / "model_last.pt", MODEL, len(VOCAB))
    ckpt = _ckpt(compose_cfg, "infer", "ckpt=custom", f"ckpt.path={folder}")
    assert resolve(ckpt, purpose="infer", run_dir=run_dir, model=MODEL).chosen.path == last
    truncate(last)
    resolution = resolve(ckpt, purpose="infer", run_dir=run_dir, model=MODEL)
    assert resolution.chosen.path == newest and resolution.candidates[0].status == "rejected"


# --- inference -------------------------------------------------------------------------------


def test_auto_infer_prefers_best_then_last_then_latest(compose_cfg, run_dir):
    _save(run_dir, 100, 200, 300, val_losses={100: 0.5, 200: 0.2, 300: 0.3})
    ckpt = _ckpt(compose_cfg, "infer")
    assert resolve(ckpt, purpose="infer", run_dir=run_dir, model=None).chosen.path.name == "update_00000200"
    truncate(run_dir / "checkpoints" / "update_00000200" / "model.pt")
    resolution = resolve(ckpt, purpose="infer", run_dir=run_dir, model=None)
    assert resolution.mode == "infer" and resolution.chosen.path.name == "update_00000300"
    assert _statuses(resolution) == [("custom", "skipped"), ("best", "quarantined"), ("last", "chosen")]

    (run_dir / "checkpoints" / "last.json").unlink()
    resolution = resolve(ckpt, purpose="infer", run_dir=run_dir, model=None)
    assert resolution.chosen.source == "latest" and resolution.chosen.path.name == "update_00000300"


def test_infer_takes_the_model_config_from_our_metadata(compose_cfg, run_dir):
    _save(run_dir, 100)
    base = to_settings(compose_cfg("infer", ["model=f5tts_v1_base"]).model, type(MODEL))
    resolution = resolve(_ckpt(compose_cfg, "infer", "ckpt=latest"), purpose="infer", run_dir=run_dir, model=base)
    assert resolution.chosen.model_config["name"] == "tiny"


def test_infer_with_an_upstream_safetensors_checks_it_against_the_vocab_beside_it(compose_cfg, run_dir, tmp_path):
    weights = make_safetensors(tmp_path / "voice" / "model.safetensors", MODEL, len(VOCAB))
    vocab = write_vocab_file(tmp_path / "voice" / "vocab.txt", VOCAB)
    ckpt = _ckpt(compose_cfg, "infer", "ckpt=custom", f"ckpt.path={weights}")
    resolution = resolve(ckpt, purpose="infer", run_dir=run_dir, model=MODEL)
    assert resolution.chosen.kind == "safetensors" and resolution.chosen.vocab_path == vocab
    write_vocab_file(vocab, VOCAB + ["x", "y"])
    with pytest.raises(ResolutionError, match="wrong vocab size: file has 11 tokens, config has 13"):
        resolve(ckpt, purpose="infer", run_dir=run_dir, model=MODEL)


def test_infer_falls_through_to_pretrained_and_fails_listing_what_was_tried(compose_cfg, run_dir, tmp_path, hub_cache):
    assert resolve(_ckpt(compose_cfg, "infer", cache_dir=hub_cache), purpose="infer", run_dir=run_dir, model=MODEL).chosen.source == "pretrained"
    with pytest.raises(ResolutionError) as raised:
        resolve(_ckpt(compose_cfg, "infer", cache_dir=tmp_path / "none"), purpose="infer", run_dir=run_dir, model=MODEL)
    message = str(raised.value)
    assert "no usable checkpoint for infer" in message and "best: no best.json" in message and "pretrained:" in message


def test_best_by_wer_in_a_run_that_evaluated_but_never_validated_ranks_its_checkpoints(compose_cfg, run_dir):
    for update, wer in ((2, 0.4), (4, 0.2), (6, 0.3)):
        make_f5app_checkpoint(run_dir / "checkpoints", update, MODEL, VOCAB, eval_scores=schema.EvalScores(wer=wer, num_prompts=2))
    assert not layout.pointer_path(run_dir / "checkpoints", "best").exists()  # no val_loss, so the store wrote no best.json

    chosen = resolve(_ckpt(compose_cfg, "infer", "ckpt=best", "ckpt.best_metric=wer"), purpose="infer", run_dir=run_dir, model=MODEL).chosen
    assert chosen.path.name == "update_00000004"
    with pytest.raises(ResolutionError, match="best: no best.json in this run, and no checkpoint of it records sim"):
        resolve(_ckpt(compose_cfg, "infer", "ckpt=best", "ckpt.best_metric=sim"),
                purpose="infer", run_dir=run_dir, model=MODEL)


def test_resolution_logs_the_table_and_the_decision(compose_cfg, run_dir, caplog):
    _save(run_dir, 100)
    with caplog.at_level(logging.INFO, logger="f5app.ckpt.resolve"):
        resolution = resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL)
    assert resolution.table() in caplog.text and resolution.summary() in caplog.text
    assert resolution.summary().startswith("train: resume from ")
    assert set(resolution.to_dict()) >= {"chosen", "mode", "candidates"}
    assert set(resolution.to_dict()["candidates"][0]) == {"source", "path", "status", "reason"}


def test_dry_run_renames_nothing(compose_cfg, run_dir):
    first, second = _save(run_dir, 100, 200)
    truncate(second / "model.pt")
    resolution = resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL, dry_run=True)
    assert resolution.chosen.path == first and second.is_dir()
    assert resolution.candidates[0].reason.endswith("(would be quarantined)")


def test_infer_with_an_export_takes_the_model_config_carried_beside_it(compose_cfg, run_dir, tmp_path):
    from f5app.ckpt.export import export_weights

    (source,) = _save(run_dir, 100)
    (tmp_path / "exported").mkdir()
    exported = export_weights(source, tmp_path / "exported", "safetensors")
    base = to_settings(compose_cfg("infer", ["model=f5tts_v1_base"]).model, type(MODEL))
    ckpt = _ckpt(compose_cfg, "infer", "ckpt=custom", f"ckpt.path={exported}")
    resolution = resolve(ckpt, purpose="infer", run_dir=tmp_path / "elsewhere", model=base)
    assert resolution.chosen.path == exported and resolution.chosen.model_config["name"] == "tiny"
    assert resolution.chosen.metadata.update == 100


def test_custom_naming_model_pt_inside_our_checkpoint_uses_the_whole_folder(compose_cfg, run_dir):
    (folder,) = _save(run_dir, 100)
    ckpt = _ckpt(compose_cfg, "train", "ckpt=custom", f"ckpt.path={folder / 'model.pt'}")
    resolution = resolve(ckpt, purpose="train", run_dir=run_dir.parent / "new_run", model=MODEL)
    assert resolution.mode == "finetune" and resolution.chosen.path == folder and resolution.chosen.kind == "f5app"


def test_damaged_pointer_is_reported_as_such(compose_cfg, run_dir):
    _save(run_dir, 100)
    (run_dir / "checkpoints" / "best.json").write_text("{half")
    resolution = resolve(_ckpt(compose_cfg, "infer"), purpose="infer", run_dir=run_dir, model=None)
    assert ("best", "missing") in _statuses(resolution) and resolution.chosen.source == "last"
    assert "best.json is damaged" in resolution.candidates[1].reason


def test_unreadable_newest_checkpoint_stops_resume_instead_of_quarantining(compose_cfg, run_dir, monkeypatch):
    from f5app.ckpt import validate as validate_module

    _save(run_dir, 100, 200)
    real = validate_module._read_pt_structure

    def permission_denied(path, result):
        if "update_00000200" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, result)

    monkeypatch.setattr(validate_module, "_read_pt_structure", permission_denied)
    with pytest.raises(ResolutionError, match="cannot read model.pt: Permission denied. Fix its permissions"):
        resolve(_ckpt(compose_cfg, "train"), purpose="train", run_dir=run_dir, model=MODEL)
    assert (run_dir / "checkpoints" / "update_00000200").is_dir()


def test_ckpt_custom_without_a_path_says_what_to_set(compose_cfg, run_dir):
    with pytest.raises(ResolutionError, match=r"ckpt=custom needs ckpt.path=FILE_OR_DIR"):
        resolve(_ckpt(compose_cfg, "infer", "ckpt=custom"), purpose="infer", run_dir=run_dir, model=MODEL)
