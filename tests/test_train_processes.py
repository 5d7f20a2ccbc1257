"""Training as separate processes: the CLI, two gloo processes, signals, and kill -9 at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.train_fixtures import free_port, make_voice_folder, tiny_overrides

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("data"))


def env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def train_cmd(run_dir: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "f5app.train", *overrides, f"hydra.run.dir={run_dir}"]


def complete_checkpoints(run_dir: Path) -> list[str]:
    folder = run_dir / "checkpoints"
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("update_") and (p / "metadata.json").exists() and "." not in p.name)


def ema_of(run_dir: Path, name: str) -> dict:
    return torch.load(run_dir / "checkpoints" / name / "model.pt", weights_only=True)["ema_model_state_dict"]


def test_two_gloo_processes_write_one_set_of_checkpoints_then_resume_with_one(voice, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 2})
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "f5app.train", *overrides, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(launch, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert complete_checkpoints(run_dir) == ["update_00000002", "update_00000004"]
    ckpt = run_dir / "checkpoints" / "update_00000004"
    assert (ckpt / "rng_state_0.pt").exists() and (ckpt / "rng_state_1.pt").exists()
    assert json.loads((ckpt / "metadata.json").read_text())["world_size"] == 2

    more = tiny_overrides(voice, **{"trainer.max_updates": 6, "trainer.save_every": 2})
    resumed = subprocess.run(train_cmd(run_dir, more), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming a 2-process run with 1 processes" in resumed.stdout
    assert complete_checkpoints(run_dir)[-1] == "update_00000006"


def test_a_signal_to_one_of_two_processes_stops_both_after_one_checkpoint(voice, tmp_path):
    import psutil

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(voice, **{"trainer.max_updates": 100000, "trainer.save_every": 1000, "trainer.val_every": 1000})
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--main_process_port", str(free_port()), "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "f5app.train", *overrides, f"hydra.run.dir={run_dir}"]
    launcher = subprocess.Popen(launch, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        startup = read_until(launcher, "training clips")
        time.sleep(3)
        ranks = [p for p in psutil.Process(launcher.pid).children(recursive=True) if "f5app.train" in " ".join(p.cmdline())]
        assert len(ranks) == 2
        rank_one = next(p for p in ranks if p.environ().get("RANK") == "1")
        rank_one.send_signal(signal.SIGUSR1)
        output, _ = launcher.communicate(timeout=180)
    finally:
        launcher.kill()
    saved = complete_checkpoints(run_dir)
    assert len(saved) == 1, startup + output
    ckpt = run_dir / "checkpoints" / saved[0]
    assert (ckpt / "rng_state_0.pt").exists() and (ckpt / "rng_state_1.pt").exists()
    assert "stopped by a signal on another process" in output or "stopped by SIGUSR1" in output
    # torchrun reports its children's status 3 as its own failure; the marker says what happened.
    assert launcher.returncode != 0
    assert json.loads((run_dir / "preempted.json").read_text())["update"] == json.loads((ckpt / "metadata.json").read_text())["update"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_stop_signal_saves_a_checkpoint_and_exits_with_status_3(voice, tmp_path, signum):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(voice, **{"trainer.max_updates": 100000, "trainer.save_every": 1000, "trainer.val_every": 1000})
    proc = subprocess.Popen(train_cmd(run_dir, overrides), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        startup = read_until(proc, "training clips")  # logged at the end of setup
        time.sleep(3)  # let it take a few updates
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=120)
        output = startup + output
    finally:
        proc.kill()
    assert proc.returncode == 3, output[-3000:]
    assert f"stopped by {signal.Signals(signum).name}" in output
    saved = complete_checkpoints(run_dir)
    assert len(saved) == 1
    stopped_at = json.loads((run_dir / "checkpoints" / saved[0] / "metadata.json").read_text())["update"]
    assert stopped_at > 0

    assert json.loads((run_dir / "preempted.json").read_text())["signal"] == signal.Signals(signum).name

    resumed = subprocess.run(train_cmd(run_dir, tiny_overrides(voice, **{"trainer.max_updates": stopped_at + 2})), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert not (run_dir / "preempted.json").exists()
    assert f"resumed at update {stopped_at}" in resumed.stdout


def test_kill_9_at_random_moments_never_loses_more_than_the_last_interval_and_ends_identical(voice, tmp_path):
    common = {"trainer.max_updates": 120, "trainer.save_every": 4, "trainer.val_every": 8, "ckpt.keep_last": 3}
    overrides = tiny_overrides(voice, **common)

    straight = tmp_path / "straight"
    subprocess.run(train_cmd(straight, overrides), env=env(), check=True, capture_output=True, timeout=600)

    victim = tmp_path / "victim"
    chooser = random.Random(int(os.environ.get("F5APP_KILL_SEED", "7")))
    reached = 0
    for _ in range(4):
        proc = subprocess.Popen(train_cmd(victim, overrides), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill only once this attempt has made progress, at a random moment after a checkpoint:
        # mid-update, mid-validation or mid-save.
        wait_for(lambda: newest_update(victim) > reached or proc.poll() is not None, timeout=300)
        time.sleep(chooser.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert newest_update(victim) < 120, "the run finished before it was killed; the test proved nothing"
        assert newest_update(victim) >= reached, "a kill lost a complete checkpoint"
        reached = newest_update(victim)
        for name in complete_checkpoints(victim):  # whatever survived is complete and loadable
            torch.load(victim / "checkpoints" / name / "model.pt", weights_only=True)
    final = subprocess.run(train_cmd(victim, overrides), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert final.returncode == 0, final.stdout[-3000:]
    assert f"resumed at update {reached}" in final.stdout
    assert not [p for p in (victim / "checkpoints").iterdir() if p.name.startswith(".tmp-")]

    a, b = ema_of(straight, "update_00000120"), ema_of(victim, "update_00000120")
    assert all(torch.equal(a[k], b[k]) for k in a), "the killed-and-resumed run diverged from the uninterrupted one"


def newest_update(run_dir: Path) -> int:
    names = complete_checkpoints(run_dir)
    return int(names[-1].split("_")[1]) if names else 0


def test_a_second_training_process_on_the_same_run_is_refused_naming_the_holder(voice, tmp_path):
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(voice, **{"trainer.max_updates": 100000, "trainer.save_every": 1000, "trainer.val_every": 1000})
    first = subprocess.Popen(train_cmd(run_dir, overrides), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (run_dir / ".lock").exists() and (run_dir / ".lock").read_text().strip(), timeout=120)
        second = subprocess.run(train_cmd(run_dir, overrides), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    finally:
        first.kill()
        first.wait()
    assert second.returncode == 2
    assert f"is being trained by pid {first.pid}" in second.stdout


def read_until(proc: subprocess.Popen, marker: str) -> str:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError("process ended before logging " + repr(marker) + ":\n" + "".join(seen)[-3000:])


def wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met in time")
