"""The sweep report, on sweep folders laid out as training and Hydra lay them out.

Checkpoints are written with the real CheckpointStore and records, and each job's status with the
trainer's own ``write_run_status``; the end-to-end report on real sweeps lives in test_sweep.py.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ckpt_factory import checkpoint_record, tiny_model_config, tiny_vocab
from f5app.ckpt import schema
from f5app.ckpt.store import CheckpointStore
from f5app.report import collect, format_table, main
from f5app.run_state import write_run_status
from f5app.sweep import job_dirname
from f5app.training.lock import RunLock

FIXED = ["experiment=demo", "data.path=/data/voice"]
EXCLUDE = ["trainer.max_updates", "logger"]


def write_multirun(sweep_dir: Path, task_overrides: list[str]) -> None:
    """The parts of Hydra's multirun.yaml the report reads."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    multirun = {
        "hydra": {
            "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "max_batch_size": None, "params": None},
            "overrides": {"task": task_overrides},
            "job": {"config": {"override_dirname": {"kv_sep": "=", "item_sep": ",", "exclude_keys": EXCLUDE}}},
        }
    }
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(multirun))


def job_folder(sweep_dir: Path, lr: str) -> Path:
    return sweep_dir / job_dirname(",".join(sorted([*FIXED, f"optim.lr={lr}"])))


def write_job(sweep_dir: Path, lr: str, max_updates: int, val_losses: dict[int, float] | None = None, status: tuple[str, str] | None = None) -> Path:
    """A launched job: .hydra/ as Hydra writes it, checkpoints as the trainer saves them, and the
    trainer's status record (``status`` = (state, message)) as its last launch left it."""
    job = job_folder(sweep_dir, lr)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*FIXED, f"optim.lr={lr}", f"trainer.max_updates={max_updates}", "logger=none"]))
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_updates": max_updates, "epochs": 100}, "optim": {"lr": float(lr)}}))
    store = CheckpointStore(job / "checkpoints", keep_last=10)
    for update, loss in (val_losses or {}).items():
        store.save(job_checkpoint(update, loss, max_updates))
    if status is not None:
        last = max(val_losses or {0: None})
        write_run_status(job, status[0], update=last, epoch=0, max_updates=max_updates, epochs=100, message=status[1])
    return job


def job_checkpoint(update: int, val_loss: float, max_updates: int, history: tuple = ()) -> schema.Checkpoint:
    record = checkpoint_record(update, tiny_model_config(), tiny_vocab(), val_loss, config={"trainer": {"max_updates": max_updates, "epochs": 100}})
    if history:
        record.metadata = schema.CheckpointMetadata.from_dict({**record.metadata.to_dict(), "metrics": {"val_loss": val_loss, "val_history": list(history)}})
    return record


@pytest.fixture
def mixed_sweep(tmp_path):
    """Five planned jobs: done, stopped, running, failed, not started."""
    sweep = tmp_path / "sweeps" / "lr"
    write_multirun(sweep, [*FIXED, "optim.lr=1,2,3,4,5", "trainer.max_updates=4", "logger=none"])
    write_job(sweep, "1", 4, {2: 3.0, 4: 2.5}, status=("finished", ""))
    write_job(sweep, "2", 4, {2: 2.9}, status=("stopped", "stopped by SIGUSR1 at update 2; checkpoint saved, run the same command to resume"))
    running = write_job(sweep, "3", 4, {2: 3.1}, status=("running", ""))
    write_job(sweep, "4", 4, status=("failed", "data.path /data/voice holds no metadata.csv"))
    with RunLock(running):
        yield sweep


def rows_by_lr(report):
    return {row.label: row for row in report.jobs}


def test_report_gives_each_planned_job_its_status_updates_and_best_checkpoint(mixed_sweep):
    rows = rows_by_lr(collect(mixed_sweep))

    assert list(rows) == [f"optim.lr={lr}" for lr in "12345"]
    assert {label: row.status for label, row in rows.items()} == {
        "optim.lr=1": "done", "optim.lr=2": "stopped", "optim.lr=3": "running", "optim.lr=4": "failed", "optim.lr=5": "not started",
    }
    done = rows["optim.lr=1"]
    assert (done.update, done.max_updates, done.best_val_loss) == (4, 4, 2.5)
    assert done.best_checkpoint == str(job_folder(mixed_sweep, "1") / "checkpoints" / "update_00000004")
    assert done.val_curve == [[2, 3.0], [4, 2.5]]
    assert "SIGUSR1" in rows["optim.lr=2"].reason
    assert rows["optim.lr=4"].reason == "data.path /data/voice holds no metadata.csv"  # what the trainer recorded
    assert rows["optim.lr=5"].update is None


def test_a_job_launched_but_ended_without_a_checkpoint_is_failed(tmp_path):
    sweep = tmp_path / "sweep"
    write_multirun(sweep, [*FIXED, "optim.lr=1"])
    write_job(sweep, "1", 4)  # .hydra/ present, nothing saved, nobody holds the lock

    (row,) = collect(sweep).jobs
    assert row.status == "failed"
    assert "without writing a checkpoint" in row.reason


def test_raising_the_bound_turns_a_done_job_back_into_unfinished(tmp_path):
    sweep = tmp_path / "sweep"
    write_multirun(sweep, [*FIXED, "optim.lr=1"])
    job = write_job(sweep, "1", 4, {4: 2.0}, status=("finished", ""))
    assert collect(sweep).jobs[0].status == "done"

    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"trainer": {"max_updates": 8, "epochs": 100}}))
    row = collect(sweep).jobs[0]
    assert (row.status, row.update, row.max_updates) == ("stopped", 4, 8)


def test_report_table_names_the_best_job_and_counts_statuses(mixed_sweep):
    table = format_table(collect(mixed_sweep))

    assert "best: optim.lr=1 (val loss 2.5000)" in table
    assert "1 done, 1 running, 1 stopped, 1 failed, 1 not started" in table
    assert "failed: optim.lr=4: data.path /data/voice holds no metadata.csv" in table


def test_report_writes_csv_json_and_png_with_the_same_rows(mixed_sweep, capsys):
    assert main([str(mixed_sweep)]) == 0

    printed = capsys.readouterr().out
    assert "optim.lr=3" in printed and "running" in printed
    data = json.loads((mixed_sweep / "report.json").read_text())
    with open(mixed_sweep / "report.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [row["status"] for row in csv_rows] == [job["status"] for job in data["jobs"]]
    assert [row["label"] for row in csv_rows] == [job["label"] for job in data["jobs"]]
    assert data["best"]["label"] == "optim.lr=1"
    assert data["counts"]["not started"] == 1
    assert (mixed_sweep / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_report_json_flag_prints_parseable_json(mixed_sweep, capsys, tmp_path):
    assert main([str(mixed_sweep), "--json", "--csv", str(tmp_path / "r.csv"), "--json-file", str(tmp_path / "r.json"), "--png", str(tmp_path / "r.png")]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed["jobs"] == json.loads((tmp_path / "r.json").read_text())["jobs"][: len(printed["jobs"])]
    assert not (mixed_sweep / "report.json").exists()


def test_report_on_a_folder_that_is_not_a_sweep_says_what_to_pass(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err

    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "holds no sweep jobs" in capsys.readouterr().err


@pytest.mark.slow
def test_report_does_not_import_torch_or_f5_tts(mixed_sweep):
    probe = (
        "import sys; from f5app.report import main; main([sys.argv[1], '--no-files']);"
        "heavy = [m for m in ('torch', 'f5_tts') if m in sys.modules]; assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(mixed_sweep)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "optim.lr=5" in result.stdout


def test_val_curve_uses_a_recorded_history_beyond_the_checkpoints_kept(tmp_path):
    sweep = tmp_path / "sweep"
    write_multirun(sweep, [*FIXED, "optim.lr=1"])
    job = write_job(sweep, "1", 8)
    history = ([2, 3.0], [4, 2.0], [6, 1.8], [8, 1.5])
    CheckpointStore(job / "checkpoints", keep_last=1).save(job_checkpoint(8, 1.5, 8, history=history))

    assert collect(sweep).jobs[0].val_curve == [[2, 3.0], [4, 2.0], [6, 1.8], [8, 1.5]]


def test_a_launch_that_ended_without_finishing_or_a_stop_request_is_failed_but_resumable(tmp_path):
    sweep = tmp_path / "sweep"
    write_multirun(sweep, [*FIXED, "optim.lr=1"])
    write_job(sweep, "1", 8, {2: 3.0}, status=("running", ""))  # then killed -9: the record still says running, nobody holds the lock

    (row,) = collect(sweep).jobs
    assert (row.status, row.update) == ("failed", 2)
    assert "crashed or killed" in row.reason and "resumes" in row.reason
