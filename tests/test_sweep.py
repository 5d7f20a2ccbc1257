"""Sweeps as a user runs them: ``python -m f5app.train -m ...`` in a subprocess, launched again,
interrupted, resumed, on the basic, joblib and submitit launchers; plus the objective, the SLURM
preset and the submitit -> torch distributed environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from f5app.report import collect
from f5app.sweep import MAX_DIRNAME_BYTES, job_dirname
from tests.train_fixtures import make_voice_folder, tiny_overrides, train_in_process

REPO = Path(__file__).resolve().parent.parent
LRS = "optim.lr=1e-3,2e-3"


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("sweep_data"))


def sweep_command(voice: Path, sweep_dir: Path, *extra: str, swept: str = LRS) -> list[str]:
    overrides = tiny_overrides(voice, **{"trainer.save_every": 2, "trainer.val_every": 2, "ckpt.keep_last": 10})
    return [sys.executable, "-m", "f5app.train", "-m", *overrides, swept, f"hydra.sweep.dir={sweep_dir}", *extra]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}


def launch(voice: Path, sweep_dir: Path, *extra: str, timeout: int = 400) -> subprocess.CompletedProcess:
    result = subprocess.run(sweep_command(voice, sweep_dir, *extra), cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir())


def checkpoint_mtimes(sweep_dir: Path) -> dict[str, int]:
    return {
        str(path.relative_to(sweep_dir)): path.stat().st_mtime_ns
        for job in job_dirs(sweep_dir)
        for path in (job / "checkpoints").iterdir()
    }


def log_times(job: Path) -> tuple[datetime, datetime]:
    """First and last timestamp of a job's log: when it ran."""
    stamps = [line[1:24] for line in (job / "train.log").read_text().splitlines() if line.startswith("[20")]
    parse = lambda s: datetime.strptime(s, "%Y-%m-%d %H:%M:%S,%f")  # noqa: E731
    return parse(stamps[0]), parse(stamps[-1])


# ------------------------------------------------------------------------------------ job folders


def test_job_dirname_escapes_path_separators_so_each_job_is_one_folder():
    name = job_dirname("data.path=/home/me/voice,optim.lr=0.001")
    assert "/" not in name
    assert name == "data.path=%2Fhome%2Fme%2Fvoice,optim.lr=0.001"
    assert job_dirname("data.path=%2F") != job_dirname("data.path=/")  # escaping is not ambiguous


def test_job_dirname_shortens_a_long_path_value_to_its_tail_and_a_hash():
    deep = "/" + "/".join(["very-long-folder-name"] * 12) + "/my_voice"
    name = job_dirname(f"data.path={deep},optim.lr=0.001")
    assert len(name.encode()) <= MAX_DIRNAME_BYTES
    assert name.endswith(",optim.lr=0.001") and "%2Fmy_voice~" in name
    assert name != job_dirname(f"data.path={deep.replace('my_voice', 'my_vo1ce')},optim.lr=0.001")


def test_job_dirname_shortens_long_names_with_a_hash_that_keeps_jobs_apart():
    base = ",".join(f"data.key{i}=value{i}" for i in range(40))
    first, second = job_dirname(base + ",optim.lr=0.001"), job_dirname(base + ",optim.lr=0.002")
    assert len(first.encode()) <= MAX_DIRNAME_BYTES and len(second.encode()) <= MAX_DIRNAME_BYTES
    assert first != second
    assert job_dirname(base + ",optim.lr=0.001") == first


@pytest.mark.slow
def test_relaunching_a_sweep_skips_finished_jobs_and_a_raised_bound_resumes_them(voice, tmp_path):
    sweep = tmp_path / "sweep"
    launch(voice, sweep, "trainer.max_updates=2")
    jobs = job_dirs(sweep)
    assert len(jobs) == 2 and "optim.lr=0.001" in jobs[0].name and "optim.lr=0.002" in jobs[1].name
    assert "%2Fvoice" in jobs[0].name and "trainer.max_updates" not in jobs[0].name
    before = checkpoint_mtimes(sweep)

    again = launch(voice, sweep, "trainer.max_updates=2")
    assert job_dirs(sweep) == jobs
    assert checkpoint_mtimes(sweep) == before, "a finished job trained or saved again"
    console = again.stdout + again.stderr
    assert console.count("already finished at update 2 (trainer.max_updates=2), skipping training") == 2

    raised = launch(voice, sweep, "trainer.max_updates=4")
    assert job_dirs(sweep) == jobs
    for job in jobs:
        assert "resuming from update 2 of 4" in (job / "train.log").read_text()
        meta = json.loads((job / "checkpoints" / "update_00000004" / "metadata.json").read_text())
        assert meta["lineage"]["mode"] == "resume" and meta["lineage"]["resumed_from"]["update"] == 2
        assert meta["hydra"]["sweep"]["subdir"] == job.name
        assert meta["hydra"]["sweep"]["job_num"] in (0, 1)
        assert "optim.lr=" in meta["hydra"]["sweep"]["override_dirname"]
    assert raised.returncode == 0

    report = collect(sweep)
    assert [(row.label, row.status, row.update, row.max_updates) for row in report.jobs] == [
        ("optim.lr=0.001", "done", 4, 4), ("optim.lr=0.002", "done", 4, 4),
    ]
    best = json.loads((jobs[0] / "checkpoints" / "best.json").read_text())
    assert report.jobs[0].best_val_loss == best["val_loss"]


@pytest.mark.slow
def test_sigusr1_stops_the_sweep_with_a_checkpoint_and_exit_3_then_the_same_command_resumes(voice, tmp_path):
    sweep = tmp_path / "sweep"
    command = sweep_command(voice, sweep, "trainer.max_updates=12", "trainer.save_every=4", "trainer.val_every=4")
    process = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(sweep.glob("*/checkpoints/update_00000004")):
            assert process.poll() is None and time.monotonic() < deadline, "the first job never reached its first checkpoint"
            time.sleep(0.05)
        process.send_signal(signal.SIGUSR1)  # what SLURM sends signal_delay_s before the time limit
        output, _ = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 3, output[-3000:]

    first, second = collect(sweep).jobs
    assert first.status == "stopped" and "SIGUSR1" in first.reason
    assert 4 <= first.update < 12
    assert second.status == "not started" and second.label == "optim.lr=0.002"

    resumed = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming from update {first.update} of 12" in (sweep / first.job / "train.log").read_text()
    assert [(row.status, row.update) for row in collect(sweep).jobs] == [("done", 12), ("done", 12)]


# ------------------------------------------------------------------------------------ launchers


@pytest.mark.slow
def test_parallel_launcher_runs_two_jobs_at_once(voice, tmp_path):
    sweep = tmp_path / "sweep"
    launch(voice, sweep, "trainer.max_updates=2", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2")

    jobs = job_dirs(sweep)
    assert [row.status for row in collect(sweep).jobs] == ["done", "done"]
    (start_a, end_a), (start_b, end_b) = log_times(jobs[0]), log_times(jobs[1])
    assert start_a < end_b and start_b < end_a, "the two jobs ran one after the other"


@pytest.mark.slow
def test_local_submitit_launcher_runs_each_job_as_a_submitit_job(voice, tmp_path):
    sweep = tmp_path / "sweep"
    launch(voice, sweep, "trainer.max_updates=2", "hydra/launcher=local_submitit")

    assert [row.status for row in collect(sweep).jobs] == ["done", "done"]
    submitit_logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(submitit_logs) == 2, "each job should have run in its own submitit subprocess"
    for job in job_dirs(sweep):
        meta = json.loads((job / "checkpoints" / "update_00000002" / "metadata.json").read_text())
        assert meta["hydra"]["sweep"]["subdir"] == job.name


@pytest.mark.slow
def test_a_two_task_submitit_job_trains_as_two_accelerate_ranks(voice, tmp_path):
    """The SLURM multi-GPU path on CPU: submitit starts 2 tasks, f5app turns them into 2 ranks (gloo)."""
    sweep = tmp_path / "sweep"
    extra = ("trainer.max_updates=2", "trainer.cpu=true", "hydra/launcher=local_submitit", "hydra.launcher.tasks_per_node=2")
    result = subprocess.run(sweep_command(voice, sweep, *extra, swept="optim.lr=1e-3"), cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    (job,) = job_dirs(sweep)
    checkpoint = job / "checkpoints" / "update_00000002"
    assert json.loads((checkpoint / "metadata.json").read_text())["world_size"] == 2
    assert (checkpoint / "rng_state_0.pt").is_file() and (checkpoint / "rng_state_1.pt").is_file()
    task_logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.out"))
    assert "submitit job: process 0 of 2" in task_logs and "submitit job: process 1 of 2" in task_logs


def test_slurm_preset_asks_for_usr1_requeue_and_one_task_per_gpu(compose_cfg, tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    fake_bin = tmp_path / "bin"  # submitit refuses to build a SLURM executor where srun is absent
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")

    cfg = compose_cfg("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2", "data.path=/x"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    # The same translation the Hydra submitit launcher applies before submitting.
    base_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm", slurm_max_num_timeout=launcher["max_num_timeout"])
    executor.update_parameters(**{
        key if key in base_keys else f"slurm_{key}": value
        for key, value in launcher.items() if key not in ("_target_", "submitit_folder", "max_num_timeout")
    })
    sbatch = executor._executor._make_submission_file_text("python -m submitit.core._submit x", "0")

    assert "#SBATCH --signal=USR1@120" in sbatch
    assert "#SBATCH --requeue" in sbatch
    assert "#SBATCH --ntasks-per-node=4" in sbatch and "#SBATCH --gpus-per-node=4" in sbatch and "#SBATCH --nodes=2" in sbatch
    assert "#SBATCH --partition=gpu" in sbatch
    teardown = sbatch.split("# teardown", 1)[1]
    assert teardown.strip().splitlines()[0] == "F5APP_EXIT=$?"  # the srun status, read right after srun
    assert 'scontrol requeue "$SLURM_JOB_ID"' in teardown


def test_optuna_preset_minimises_the_training_objective(compose_cfg):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_cfg("train", ["hparams_search=optuna", "data.path=/x"], return_hydra_config=True)

    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize"
    assert "optim.lr" in sweeper.params
    assert cfg.sweep_name == "optuna"


@pytest.mark.slow
def test_optuna_search_reports_the_lowest_returned_objective_as_best(voice, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    sweep = tmp_path / "search"
    command = sweep_command(voice, sweep, "trainer.max_updates=2", swept="hparams_search=optuna")
    del command[command.index("f5app.train") + 1]  # the preset sets hydra.mode=MULTIRUN: no -m needed
    command += ["hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2"]
    result = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    trials = job_dirs(sweep)
    assert len(trials) == 2 and all("hparams_search" not in trial.name for trial in trials)
    losses = [json.loads((trial / "checkpoints" / "best.json").read_text())["val_loss"] for trial in trials]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(losses))


# ------------------------------------------------------------------------------------ objective


@pytest.mark.slow
def test_training_returns_the_best_validation_loss_as_the_sweep_objective(compose_cfg, voice, tmp_path):
    run_dir = tmp_path / "run"
    objective = train_in_process(compose_cfg, run_dir, tiny_overrides(voice, **{"trainer.max_updates": 4, "trainer.save_every": 2, "trainer.val_every": 2}))

    best = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert isinstance(objective, float)
    assert objective == best["val_loss"]
    losses = [json.loads(p.read_text())["metrics"]["val_loss"] for p in (run_dir / "checkpoints").glob("update_*/metadata.json")]
    assert objective == min(losses)


# ------------------------------------------------------------------------------------ distributed env


SUBMITIT_LOCAL_TASK = {
    "SUBMITIT_EXECUTOR": "local",
    "SUBMITIT_LOCAL_JOB_ID": "4242",
    "SUBMITIT_LOCAL_NTASKS": "4",
    "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
    "SUBMITIT_LOCAL_NODEID": "0",
    "SUBMITIT_LOCAL_GLOBALID": "2",
    "SUBMITIT_LOCAL_LOCALID": "2",
}
TORCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_dist_env(monkeypatch):
    # export_submitit_distributed_env writes os.environ directly, which monkeypatch cannot undo:
    # a RANK/WORLD_SIZE left behind makes every later in-process Accelerator wait for peers.
    saved = dict(os.environ)
    for key in (*TORCH_VARS, *SUBMITIT_LOCAL_TASK, "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    os.environ.clear()
    os.environ.update(saved)


def test_a_task_of_a_multi_task_submitit_job_exports_its_rank_for_accelerate(clean_dist_env):
    pytest.importorskip("submitit")
    from f5app.training.distributed_env import export_submitit_distributed_env

    for key, value in SUBMITIT_LOCAL_TASK.items():
        clean_dist_env.setenv(key, value)
    assert export_submitit_distributed_env() is True
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"]) == ("2", "4", "2", "4")
    assert os.environ["MASTER_ADDR"] and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # accelerate picks cuda:LOCAL_RANK among all visible GPUs


def test_outside_submitit_or_with_one_task_nothing_is_exported(clean_dist_env):
    pytest.importorskip("submitit")
    from f5app.training.distributed_env import export_submitit_distributed_env

    assert export_submitit_distributed_env() is False
    for key, value in {**SUBMITIT_LOCAL_TASK, "SUBMITIT_LOCAL_NTASKS": "1", "SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0"}.items():
        clean_dist_env.setenv(key, value)
    assert export_submitit_distributed_env() is False
    assert not any(key in os.environ for key in TORCH_VARS)


def test_ranks_set_by_accelerate_launch_are_left_alone(clean_dist_env):
    pytest.importorskip("submitit")
    from f5app.training.distributed_env import export_submitit_distributed_env

    for key, value in {**SUBMITIT_LOCAL_TASK, "RANK": "0", "WORLD_SIZE": "8"}.items():
        clean_dist_env.setenv(key, value)
    assert export_submitit_distributed_env() is False
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("0", "8")
