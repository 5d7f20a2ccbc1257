"""Training, as a user runs it: real tiny trainings on CPU, checkpoints on disk, exact resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("data"))


def checkpoint_names(run_dir):
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("update_"))


def read_meta(run_dir, name):
    return json.loads((run_dir / "checkpoints" / name / "metadata.json").read_text())


def model_weights(run_dir, name):
    return torch.load(run_dir / "checkpoints" / name / "model.pt", weights_only=True, map_location="cpu")


@pytest.mark.slow
def test_training_writes_complete_checkpoints_with_upstream_keys_and_metadata(compose_cfg, voice, tmp_path):
    run_dir = tmp_path / "run"
    best = train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 6, "trainer.save_every": 3, "trainer.val_every": 3, "ckpt.keep_last": 5}))

    assert checkpoint_names(run_dir) == ["update_00000003", "update_00000006"]
    weights = model_weights(run_dir, "update_00000006")
    assert {"model_state_dict", "ema_model_state_dict", "optimizer_state_dict"} <= set(weights)
    assert any(k.startswith("ema_model.transformer.") for k in weights["ema_model_state_dict"])
    meta = read_meta(run_dir, "update_00000006")
    assert meta["update"] == 6
    assert meta["config"]["model"]["name"] == "tiny"
    assert meta["lineage"]["mode"] == "scratch"
    assert meta["metrics"]["val_loss"] == pytest.approx(best) or best <= meta["metrics"]["val_loss"]
    assert set(meta["files"]) >= {"model.pt", "training_state.pt", "rng_state_0.pt", "vocab.txt"}
    pointers = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert pointers["name"] == "update_00000006"


@pytest.mark.slow
def test_validation_loss_falls_over_a_short_training(compose_cfg, voice, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 60, "trainer.save_every": 60, "trainer.val_every": 10}))
    history = torch.load(run_dir / "checkpoints" / "update_00000060" / "training_state.pt", weights_only=True)["val_history"]
    losses = [loss for _, loss in history]
    assert len(losses) == 6
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_a_set_with_no_validation_clips_trains_and_says_validation_is_off(compose_cfg, voice, tmp_path, caplog):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(voice, **{"data.val_fraction": 0.0, "data.val_min_items": 0, "trainer.max_updates": 2,
                                         "trainer.save_every": 2, "trainer.val_every": 1})
    with caplog.at_level("WARNING", logger="f5app.train"):
        train_in_process(compose_cfg, run_dir, overrides)
    assert "no validation clips" in caplog.text
    assert checkpoint_names(run_dir) == ["update_00000002"]
    assert torch.load(run_dir / "checkpoints" / "update_00000002" / "training_state.pt", weights_only=True)["val_history"] == []


@pytest.mark.slow
def test_resume_after_interruption_matches_an_uninterrupted_run(compose_cfg, voice, tmp_path):
    common = {"trainer.save_every": 4, "trainer.val_every": 4, "ckpt.keep_last": 10}
    straight = tmp_path / "straight"
    train_in_process(compose_cfg, straight, tiny_overrides(voice, **{"trainer.max_updates": 12, **common}))

    interrupted = tmp_path / "interrupted"
    train_in_process(compose_cfg, interrupted, tiny_overrides(voice, **{"trainer.max_updates": 4, **common}))
    train_in_process(compose_cfg, interrupted, tiny_overrides(voice, **{"trainer.max_updates": 8, **common}))
    train_in_process(compose_cfg, interrupted, tiny_overrides(voice, **{"trainer.max_updates": 12, **common}))

    a, b = model_weights(straight, "update_00000012"), model_weights(interrupted, "update_00000012")
    for key in ("model_state_dict", "ema_model_state_dict"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    meta = read_meta(interrupted, "update_00000012")
    assert meta["lineage"]["mode"] == "resume"
    assert meta["lineage"]["resumed_from"]["update"] == 8
    assert read_meta(straight, "update_00000012")["metrics"]["val_loss"] == meta["metrics"]["val_loss"]


@pytest.mark.slow
def test_a_finished_run_says_so_and_does_not_train_again(compose_cfg, voice, tmp_path, caplog):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(voice, **{"trainer.max_updates": 3, "trainer.save_every": 3})
    train_in_process(compose_cfg, run_dir, overrides)
    before = (run_dir / "checkpoints" / "update_00000003" / "metadata.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="f5app.train"):
        train_in_process(compose_cfg, run_dir, overrides)
    assert "already finished" in caplog.text
    assert checkpoint_names(run_dir) == ["update_00000003"]
    assert (run_dir / "checkpoints" / "update_00000003" / "metadata.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_raising_max_updates_on_resume_rebuilds_the_schedule(compose_cfg, voice, tmp_path):
    run_dir = tmp_path / "run"
    base = {"trainer.save_every": 4, "optim.warmup_updates": 0, "optim.decay": "linear"}
    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 4, **base}))
    lr_at_end_of_short_run = read_meta(run_dir, "update_00000004")["metrics"]["lr"]
    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 8, **base}))
    lr = read_meta(run_dir, "update_00000008")["metrics"]["lr"]
    peak = 3.0e-3
    # The short run decayed towards 0 over 4 updates; extended to 8, update 8's LR follows the new span.
    assert lr_at_end_of_short_run == pytest.approx(peak * (1 - 3 / 4))
    assert lr == pytest.approx(peak * (1 - 7 / 8))


@pytest.mark.slow
def test_changing_the_architecture_on_resume_is_refused_with_a_diff(compose_cfg, voice, tmp_path):
    run_dir = tmp_path / "run"
    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 2, "trainer.save_every": 2}))
    with pytest.raises(Exception) as refused:
        train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 4, "model.arch.depth": 3}))
    assert "depth" in str(refused.value)


def test_a_second_trainer_on_the_same_run_directory_is_refused(tmp_path):
    from f5app.training.lock import RunLock, RunLockedError

    with RunLock(tmp_path):
        with pytest.raises(RunLockedError, match="is being trained by pid"):
            RunLock(tmp_path).acquire()
    again = RunLock(tmp_path).acquire()  # released: free again
    assert again.took_over_from is None, "a clean release must not look like a killed holder"
    again.release()


def test_a_lock_left_by_a_killed_process_is_taken_over_and_named(tmp_path):
    import json
    import os

    from f5app.training.lock import RunLock

    (tmp_path / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": 0}))  # no flock held
    lock = RunLock(tmp_path).acquire()
    try:
        assert lock.took_over_from.startswith("pid 999999 on gone")
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_learning_rate_schedule_warms_up_then_decays():
    from f5app.config import OptimConfig
    from f5app.training.schedule import learning_rate

    optim = OptimConfig(lr=1.0, warmup_updates=4, decay="linear")
    lrs = [learning_rate(u, optim, total_updates=12) for u in range(12)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    cosine = OptimConfig(lr=1.0, warmup_updates=0, decay="cosine", min_lr_ratio=0.1)
    assert learning_rate(0, cosine, 10) == pytest.approx(1.0)
    assert learning_rate(10, cosine, 10) == pytest.approx(0.1)
    assert math.isclose(learning_rate(5, OptimConfig(lr=2.0, warmup_updates=0, decay="constant"), 10), 2.0)


def fail_saves_after(monkeypatch, good_saves: int):
    """Make every save after the first ``good_saves`` hit a full disk."""
    import errno

    from f5app.ckpt import store

    real, calls = store._write_file, {"saves": 0}

    def write(path, payload):
        if path.name == "metadata.json":
            calls["saves"] += 1
        if calls["saves"] >= good_saves and path.name == "model.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, payload)

    monkeypatch.setattr(store, "_write_file", write)


@pytest.mark.slow
def test_a_full_disk_stops_training_with_one_clear_message_and_keeps_earlier_checkpoints(compose_cfg, voice, tmp_path, monkeypatch):
    from f5app.ckpt.store import CheckpointSaveError

    run_dir = tmp_path / "run"
    fail_saves_after(monkeypatch, good_saves=1)
    with pytest.raises(CheckpointSaveError, match="no space left on device"):
        train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 6, "trainer.save_every": 2}))
    assert checkpoint_names(run_dir) == ["update_00000002"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    torch.load(run_dir / "checkpoints" / "update_00000002" / "model.pt", weights_only=True)


@pytest.mark.slow
def test_a_full_disk_can_be_survived_with_a_warning_each_time(compose_cfg, voice, tmp_path, monkeypatch, caplog):
    run_dir = tmp_path / "run"
    fail_saves_after(monkeypatch, good_saves=1)
    with caplog.at_level("WARNING", logger="f5app.train"):
        train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 6, "trainer.save_every": 2, "trainer.on_save_error": "warn"}))
    assert checkpoint_names(run_dir) == ["update_00000002"]
    assert caplog.text.count("could not save a checkpoint") == 2


@pytest.mark.slow
def test_changed_hyperparameters_on_resume_are_listed_in_a_warning(compose_cfg, voice, tmp_path, caplog):
    run_dir = tmp_path / "run"
    train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 2, "trainer.save_every": 2}))
    with caplog.at_level("WARNING", logger="f5app.train"):
        train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 2, "optim.lr": 0.001}))
    assert "optim.lr: 0.003 -> 0.001" in caplog.text
    assert "trainer.max_updates: 2 -> 4" in caplog.text
    assert read_meta(run_dir, "update_00000004")["config"]["optim"]["lr"] == 0.001


@pytest.mark.slow
def test_data_loader_workers_do_not_change_what_is_learned(compose_cfg, voice, tmp_path):
    runs = {}
    for workers in (0, 2):
        run_dir = tmp_path / f"workers{workers}"
        train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 4, "data.num_workers": workers}))
        runs[workers] = model_weights(run_dir, "update_00000004")["model_state_dict"]
    assert all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


@pytest.mark.slow
def test_fine_tuning_from_a_custom_checkpoint_loads_weights_only_and_grows_the_vocabulary(compose_cfg, voice, tmp_path):
    source = tmp_path / "english"
    train_in_process(compose_cfg, source, tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 4}))
    parent = source / "checkpoints" / "update_00000004"

    portuguese = tmp_path / "pt" / "voice"
    portuguese.mkdir(parents=True)
    for wav in (voice / "wavs").iterdir():
        (portuguese / "wavs").mkdir(exist_ok=True)
        (portuguese / "wavs" / wav.name).write_bytes(wav.read_bytes())
    lines = ["audio_file|text"] + [f"wavs/{wav.name}|olá, você está ótimo; ação número {i}" for i, wav in enumerate(sorted((voice / "wavs").iterdir()))]
    (portuguese / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    child = tmp_path / "portuguese"
    # lr 0: after two updates the weights are still exactly what was loaded.
    train_in_process(compose_cfg, child, tiny_overrides(portuguese, **{
        "trainer.max_updates": 2, "trainer.save_every": 2, "optim.lr": 0.0, "ckpt.path": str(parent)}))

    meta = read_meta(child, "update_00000002")
    assert meta["update"] == 2, "a fine-tune starts at update 0"
    assert meta["lineage"]["mode"] == "finetune"
    assert meta["lineage"]["finetuned_from"]["path"] == str(parent)
    old_vocab = (parent / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    new_vocab = (child / "checkpoints" / "update_00000002" / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert new_vocab[: len(old_vocab)] == old_vocab and {"ç", "ã", "ó"} <= set(new_vocab[len(old_vocab):])

    key = "transformer.text_embed.text_embed.weight"
    loaded = model_weights(source, "update_00000004")["ema_model_state_dict"]["ema_model." + key]
    child_weights = model_weights(child, "update_00000002")
    for grown in (child_weights["model_state_dict"][key], child_weights["ema_model_state_dict"]["ema_model." + key]):
        assert grown.shape[0] == len(new_vocab) + 1
        assert torch.equal(grown[: len(old_vocab) + 1], loaded), "the old tokens' rows must be kept exactly"
    state = torch.load(child / "checkpoints" / "update_00000002" / "training_state.pt", weights_only=True)
    assert state["samples_seen"] > 0 and state["update"] == 2
