"""A diverging run stops, and never costs a good checkpoint (real tiny trainings on CPU)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile
import torch

from f5app.ckpt import layout, schema
from f5app.run_state import read_run_status
from f5app.training.loop import TrainingDiverged
from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture
def train_log(caplog):
    """Warnings of f5app.train, caught at the logger itself (an earlier Hydra job may have turned
    propagation to the root logger off)."""
    logger = logging.getLogger("f5app.train")
    propagated = logger.propagate
    logger.propagate = False  # caught once, here, whatever the root logger is doing
    logger.addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING, logger="f5app.train"):
        yield caplog
    logger.removeHandler(caplog.handler)
    logger.propagate = propagated


def all_finite(folder) -> bool:
    weights = torch.load(folder / "model.pt", weights_only=True)
    return all(bool(torch.isfinite(t).all()) for section in ("model_state_dict", "ema_model_state_dict")
               for t in weights[section].values() if t.is_floating_point())


@pytest.mark.slow
def test_an_exploding_learning_rate_stops_training_with_one_line_and_saves_nothing_non_finite(compose_cfg, voice, tmp_path, train_log):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(voice, **{"trainer.max_updates": 40, "trainer.save_every": 10, "trainer.val_every": 10,
                                         "optim.lr": 1e4, "optim.max_grad_norm": 0, "optim.warmup_updates": 0,
                                         "trainer.max_nonfinite": 5})
    with pytest.raises(TrainingDiverged) as stopped:
        train_in_process(compose_cfg, run_dir, overrides)

    message = str(stopped.value)
    assert "\n" not in message and "5 updates in a row" in message and "optim.lr" in message
    skipped = [r.getMessage() for r in train_log.records if "skipped" in r.getMessage()]
    assert len(skipped) == 5 and all("clips: clip" in line for line in skipped)
    status = read_run_status(run_dir)
    assert status.state == "failed" and "diverged" in status.message
    for entry in layout.scan(run_dir / "checkpoints").complete:
        assert all_finite(entry.path)
        assert schema.read_metadata(entry.path).metrics.not_finite() == ()


@pytest.mark.slow
def test_a_poisoned_clip_costs_only_its_updates(compose_cfg, voice, tmp_path, train_log):
    poisoned = tmp_path / "poisoned"
    poisoned.mkdir()
    for item in voice.iterdir():
        if item.is_dir():
            (poisoned / item.name).mkdir()
            for wav in item.iterdir():
                (poisoned / item.name / wav.name).write_bytes(wav.read_bytes())
        else:
            (poisoned / item.name).write_bytes(item.read_bytes())
    audio, rate = soundfile.read(poisoned / "wavs" / "clip03.wav", dtype="float32")
    audio[100:200] = np.nan
    soundfile.write(poisoned / "wavs" / "clip03.wav", audio, rate, subtype="FLOAT")

    run_dir = tmp_path / "run"
    train_in_process(compose_cfg, run_dir, tiny_overrides(poisoned, **{
        "trainer.max_updates": 8, "trainer.save_every": 4, "trainer.val_every": 4, "data.val_fraction": 0.0,
        "data.val_min_items": 1, "data.prepared_dir": str(tmp_path / "prepared")}))

    skipped = [r.getMessage() for r in train_log.records if "skipped" in r.getMessage()]
    assert skipped and all("clip03.wav" in line for line in skipped)  # the split is seeded: clip03 trains
    final = layout.read_pointer(run_dir / "checkpoints", "last")
    assert final.update == 8 and all_finite(run_dir / "checkpoints" / final.name)
    assert read_run_status(run_dir).state == "finished"


@pytest.mark.slow
def test_the_command_line_exits_1_when_training_diverges(voice, tmp_path):
    import subprocess
    import sys

    overrides = tiny_overrides(voice, **{"trainer.max_updates": 40, "trainer.save_every": 10, "optim.lr": 1e4,
                                         "optim.max_grad_norm": 0, "optim.warmup_updates": 0, "trainer.max_nonfinite": 3,
                                         "output_root": str(tmp_path / "outputs")})
    done = subprocess.run([sys.executable, "-m", "f5app.train", *overrides], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "training diverged" in errors[0]
    assert "Traceback" not in done.stderr
    assert json.loads((tmp_path / "outputs" / "runs" / "demo" / "run_status.json").read_text())["state"] == "failed"
