"""Evaluation during training: typed scores in every evaluated checkpoint, tracker logs, exact
resume with evaluation on, ckpt=best by WER, and the sweep objective."""

from __future__ import annotations

import json

import pytest
import torch

from f5app.errors import UserError
from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

EVAL = {"eval.every": 2, "eval.num_prompts": 2, "eval.nfe_step": 4, "asr.beam_size": 1, "vocoder.n_iter": 4}


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("data"), count=8)


@pytest.fixture(scope="module")
def evaluated_run(voice, tmp_path_factory):
    """4 updates, evaluated at 2 and 4, saved at 4 by save_every; tensorboard on."""
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR

    def compose_cfg(name, overrides):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(name, overrides=overrides)

    run_dir = tmp_path_factory.mktemp("runs") / "evaluated"
    overrides = tiny_overrides(voice, **{**EVAL, "trainer.max_updates": 4, "trainer.save_every": 4, "trainer.val_every": 2,
                                         "ckpt.keep_last": 0, "logger": "tensorboard", "objective": "wer"})
    objective = train_in_process(compose_cfg, run_dir, overrides)
    return run_dir, objective


def meta(run_dir, update):
    return json.loads((run_dir / "checkpoints" / f"update_{update:08d}" / "metadata.json").read_text())


def test_every_evaluation_is_saved_with_typed_scores_and_the_run_history(evaluated_run):
    from f5app.ckpt.schema import read_metadata

    run_dir, _ = evaluated_run
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("update_"))
    assert names == ["update_00000002", "update_00000004"]  # update 2 is saved because it was evaluated
    record = read_metadata(run_dir / "checkpoints" / "update_00000004")
    scores = record.metrics.eval
    assert scores is not None and scores.num_prompts == 2
    assert 0 <= scores.wer and 0 <= scores.cer and -1 <= scores.sim <= 1
    assert scores.models["asr"]["name"] == "tiny_en" and scores.models["speaker"]["name"] == "resemblyzer"
    assert [point[0] for point in record.metrics.eval_history] == [2, 4]
    assert record.metrics.eval_history[-1][1:] == (scores.wer, scores.cer, scores.sim)
    assert meta(run_dir, 2)["metrics"]["eval"]["num_prompts"] == 2
    clips = sorted((run_dir / "eval" / "update_00000004").glob("*.wav"))
    assert len(clips) == 2


def test_scores_audio_and_a_transcript_table_go_to_the_tracker(evaluated_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = evaluated_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"audio": 0, "tensors": 0}).Reload()
    tags = events.Tags()
    assert {"eval/wer", "eval/cer", "eval/sim"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("eval/wer")] == [2, 4]
    assert any(tag.startswith("eval/audio/") for tag in tags["audio"])
    assert any(tag.startswith("eval/transcripts") for tag in tags["tensors"])


def test_the_sweep_objective_is_the_best_wer_of_the_run(evaluated_run):
    run_dir, objective = evaluated_run
    history = meta(run_dir, 4)["metrics"]["eval_history"]
    assert objective == min(point[1] for point in history)


def test_ckpt_best_by_wer_is_chosen_recorded_and_shown(evaluated_run, compose_cfg, capsys):
    from f5app.ckpt_cli import main as ckpt_main
    from f5app.ckpt.resolve import resolve
    from f5app.config import InferConfig, to_settings

    run_dir, _ = evaluated_run
    wers = {u: meta(run_dir, u)["metrics"]["eval"]["wer"] for u in (2, 4)}
    settings = to_settings(compose_cfg("infer", ["ckpt=best", "ckpt.best_metric=wer"]), InferConfig)
    chosen = resolve(settings.ckpt, purpose="infer", run_dir=run_dir, model=None).chosen
    assert chosen.metadata.metrics.eval.wer == min(wers.values())
    assert chosen.path.name == f"update_{min(wers, key=lambda u: (wers[u], -u)):08d}"  # ties: the newer
    # best.json still ranks by what training was told (val_loss); it is not rewritten by resolution
    assert json.loads((run_dir / "checkpoints" / "best.json").read_text())["metric"] == "val_loss"
    assert ckpt_main(["list", str(run_dir)]) in (0, None)
    listing = capsys.readouterr().out
    assert "wer" in listing and "sim" in listing


def test_training_ranked_by_wer_records_it_in_best_json_and_keeps_that_checkpoint(voice, compose_cfg, tmp_path, capsys):
    from f5app.ckpt_cli import main as ckpt_main

    run_dir = tmp_path / "by-wer"
    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{**EVAL, "eval.every": 1, "trainer.max_updates": 3, "trainer.save_every": 0,
                                                                     "ckpt.best_metric": "wer", "ckpt.keep_last": 1}))
    updates = sorted(int(p.name[7:]) for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("update_"))
    wers = {u: meta(run_dir, u)["metrics"]["eval"]["wer"] for u in updates}
    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "wer" and best["value"] == pytest.approx(min(wers.values()))
    assert f"update_{updates[-1]:08d}" in [p.name for p in (run_dir / "checkpoints").iterdir()]  # keep_last=1
    assert best["name"] in [p.name for p in (run_dir / "checkpoints").iterdir()]  # retention never deletes the best
    assert ckpt_main(["list", str(run_dir)]) in (0, None)
    assert "best by wer" in capsys.readouterr().out
    # the last update is evaluated and saved, and validated as the end of a run always is
    assert meta(run_dir, 3)["metrics"]["val_loss"] is not None


def test_exact_resume_with_evaluation_on_matches_a_run_without_it(voice, compose_cfg, tmp_path):
    """Evaluation runs inside forked_rng: resumed twice with it on, the weights equal a straight run with it off."""
    common = {"trainer.save_every": 3, "trainer.val_every": 3, "ckpt.keep_last": 0}
    straight = tmp_path / "straight"
    train_in_process(compose_cfg, straight, tiny_overrides(voice, **{**common, "trainer.max_updates": 6}))
    resumed = tmp_path / "resumed"
    train_in_process(compose_cfg, resumed, tiny_overrides(voice, **{**common, **EVAL, "trainer.max_updates": 3}))
    train_in_process(compose_cfg, resumed, tiny_overrides(voice, **{**common, **EVAL, "trainer.max_updates": 6}))
    a = torch.load(straight / "checkpoints" / "update_00000006" / "model.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "update_00000006" / "model.pt", weights_only=True)
    for key in ("model_state_dict", "ema_model_state_dict"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    history = meta(resumed, 6)["metrics"]["eval_history"]
    assert [point[0] for point in history] == [2, 3, 4, 6]  # 3: the first leg's last update; kept across the resume


def test_a_model_that_cannot_be_loaded_stops_the_run_before_its_first_update(voice, compose_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    run_dir = tmp_path / "run"
    with pytest.raises(UserError, match="Systran/faster-whisper-large-v3.*hf download"):
        train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{**EVAL, "asr": "whisper", "asr.model": "large-v3", "trainer.max_updates": 2}))
    assert not any((run_dir / "checkpoints").glob("update_*"))


def test_an_objective_evaluation_does_not_measure_is_refused(voice, compose_cfg, tmp_path):
    with pytest.raises(UserError, match="objective=wer.*eval.every=0"):
        train_in_process(compose_cfg, tmp_path / "run", tiny_overrides(voice, **{"objective": "wer", "trainer.max_updates": 2}))
    with pytest.raises(UserError, match="objective=bleu"):
        train_in_process(compose_cfg, tmp_path / "run2", tiny_overrides(voice, **{"objective": "bleu", "trainer.max_updates": 2}))


def test_the_wer_search_preset_minimises_wer_and_ranks_checkpoints_by_it(compose_cfg):
    cfg = compose_cfg("train", ["hparams_search=optuna_wer", "experiment=demo"], return_hydra_config=True)
    assert cfg.objective == "wer" and cfg.ckpt.best_metric == "wer" and cfg.eval.every > 0
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.sweep_name == "optuna_wer"


def test_f5app_eval_on_an_evaluated_checkpoint_reproduces_the_scores_training_recorded(evaluated_run, tmp_path):
    """Same recorded settings, same prompts, same seeds: the command scores the checkpoint as training did."""
    import f5app.eval as eval_cli
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR

    run_dir, _ = evaluated_run
    overrides = [f"run_dir={run_dir}", "ckpt=last", "device=cpu", f"out={tmp_path / 'again.json'}"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    record = eval_cli.run(cfg, overrides=overrides)
    recorded = meta(run_dir, 4)["metrics"]["eval"]
    assert record["checkpoint"]["update"] == 4
    assert (record["metrics"]["wer"], record["metrics"]["cer"]) == (recorded["wer"], recorded["cer"])
    assert record["metrics"]["sim"] == pytest.approx(recorded["sim"], abs=1e-6)
    # the same samples, not only the same scores: an ASR reading a barely trained model's noise
    # turns a one-bit difference into another transcript (CI once heard "Thank you." in one of them)
    spoken_in_training = sorted((run_dir / "eval" / "update_00000004").glob("*.wav"))
    spoken_again = sorted((tmp_path / "again").glob("*.wav"))
    assert [p.name for p in spoken_again] == [p.name for p in spoken_in_training] and spoken_again
    for again, trained in zip(spoken_again, spoken_in_training):
        assert again.read_bytes() == trained.read_bytes(), again.name
