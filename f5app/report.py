"""``python -m f5app.report SWEEP_DIR``: one row per sweep job, while the sweep runs or after.

Reads only YAML/JSON/log text (``multirun.yaml``, each job's ``.hydra/``, checkpoint pointers and
``metadata.json``), never torch or f5_tts, so it answers in well under a second. Writes the same
rows as CSV and JSON, and a PNG of validation-loss curves, beside the sweep by default.

Status of a job:
  done         its newest checkpoint reached the job's configured trainer.max_updates / epochs
  running      a process holds the job's run lock (``<job>/.lock``)
  stopped      stopped by a signal (SLURM's SIGUSR1, Ctrl-C) after a checkpoint: re-run the sweep
  failed       the job's last launch logged an error, or ended without finishing or being
               stopped (crash, kill -9), or ended with no checkpoint at all
  not started  listed in multirun.yaml but its folder does not exist yet
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from f5app.errors import UserError, run_entry_point
from f5app.sweep import JobProgress, is_finished, job_dirname, read_json, read_progress

log = logging.getLogger("f5app.report")

STATUSES = ("done", "running", "stopped", "failed", "not started")
JOB_LOG_NAME = "train.log"
_JOB_START_MARK = "[f5app.train][INFO] - job "  # f5app.sweep.start_line, logged once per launch
_ERROR_MARK = "][ERROR] - "
_STOPPED_MARK = "[f5app.train][WARNING] - stopped by "


@dataclass
class JobRow:
    job: str  # folder name inside the sweep dir
    label: str  # the overrides that tell this job apart from the sweep's other jobs
    overrides: list[str]  # the job's identity overrides (what its folder name is made of)
    status: str
    reason: str = ""  # why failed / stopped / running (holder)
    update: Optional[int] = None
    max_updates: Optional[int] = None
    best_val_loss: Optional[float] = None
    best_checkpoint: Optional[str] = None
    val_curve: list[list[float]] = field(default_factory=list)  # [update, val_loss] of checkpoints on disk


@dataclass
class SweepReport:
    sweep_dir: str
    generated_at: str
    jobs: list[JobRow]
    note: str = ""

    @property
    def best(self) -> Optional[JobRow]:
        scored = [job for job in self.jobs if job.best_val_loss is not None]
        return min(scored, key=lambda job: job.best_val_loss) if scored else None  # type: ignore[arg-type,return-value]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "sweep_dir": self.sweep_dir,
            "generated_at": self.generated_at,
            "counts": {status: sum(job.status == status for job in self.jobs) for status in STATUSES},
            "best": None if best is None else {"job": best.job, "label": best.label, "best_val_loss": best.best_val_loss, "best_checkpoint": best.best_checkpoint},
            "note": self.note,
            "jobs": [asdict(job) for job in self.jobs],
        }


class ReportError(UserError):
    """SWEEP_DIR is not something a report can be made of; the message says what to pass."""


# ------------------------------------------------------------------------------------ collecting


def collect(sweep_dir: Path) -> SweepReport:
    """Every job of the sweep, in launch order, with its status and results."""
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    if not sweep_dir.is_dir():
        raise ReportError(f"sweep folder {sweep_dir} does not exist; pass the hydra.sweep.dir of a multirun (outputs/sweeps/<sweep_name>)")
    multirun = _load_yaml(sweep_dir / "multirun.yaml") or {}
    exclude_keys = _exclude_keys(multirun)
    planned, note = _planned_jobs(multirun, exclude_keys)
    present = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    if not planned and not present:
        raise ReportError(f"{sweep_dir} holds no sweep jobs (no multirun.yaml and no job folder with .hydra/); pass the hydra.sweep.dir of a multirun")

    names = list(planned) + [name for name in present if name not in planned]
    overrides = {name: planned.get(name) or _job_overrides(sweep_dir / name, exclude_keys) for name in names}
    labels = _labels(overrides)
    rows = [_job_row(sweep_dir / name, overrides[name], labels[name]) for name in names]
    return SweepReport(sweep_dir=str(sweep_dir), generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), jobs=rows, note=note)


def _job_row(job_dir: Path, overrides: list[str], label: str) -> JobRow:
    row = JobRow(job=job_dir.name, label=label, overrides=overrides, status="not started")
    if not job_dir.is_dir():
        return row
    progress = read_progress(job_dir)
    bounds = _configured_bounds(job_dir, progress)
    row.update = progress.update
    row.max_updates = bounds[0] if bounds else None
    row.best_val_loss = progress.best_val_loss
    row.best_checkpoint = str(progress.best_checkpoint) if progress.best_checkpoint is not None else None
    row.val_curve = _val_curve(job_dir)
    row.status, row.reason = _status(job_dir, progress, bounds)
    return row


def _status(job_dir: Path, progress: JobProgress, bounds: Optional[tuple[int, int]]) -> tuple[str, str]:
    holder = lock_holder(job_dir / ".lock")
    if holder is not None:
        return "running", holder
    if bounds is not None and is_finished(progress, *bounds):
        return "done", ""
    last_launch = _last_launch_log(job_dir / JOB_LOG_NAME)
    error = _last_line_with(last_launch, _ERROR_MARK)
    if error is not None:
        return "failed", error
    if progress.update is not None:
        stop = _last_line_with(last_launch, _STOPPED_MARK)
        if stop is not None or not last_launch:
            return "stopped", stop or "not running and short of its bound; launch the sweep again to resume"
        return "failed", f"its last launch ended at update {progress.update} without finishing or being stopped (crashed or killed; see train.log); launching the sweep again resumes it"
    return "failed", "ended without writing a checkpoint (killed, or crashed before the first save); see its train.log"


def _configured_bounds(job_dir: Path, progress: JobProgress) -> Optional[tuple[int, int]]:
    """(max_updates, epochs) from the job's latest launch config, else from its last checkpoint."""
    trainer = ((_load_yaml(job_dir / ".hydra" / "config.yaml") or {}).get("trainer")) or {}
    if not _bounds_ok(trainer) and progress.last_checkpoint is not None:
        trainer = ((read_json(progress.last_checkpoint / "metadata.json") or {}).get("config") or {}).get("trainer") or {}
    return (int(trainer["max_updates"]), int(trainer["epochs"])) if _bounds_ok(trainer) else None


def _bounds_ok(trainer: dict[str, Any]) -> bool:
    return isinstance(trainer.get("max_updates"), int) and isinstance(trainer.get("epochs"), int)


def _val_curve(job_dir: Path) -> list[list[float]]:
    """[update, val_loss] points: each checkpoint's metrics.val_loss, plus the full history when
    a checkpoint's metadata carries ``val_history`` (retention deletes older checkpoints)."""
    from f5app.ckpt.layout import checkpoints_dir, scan

    points: dict[int, float] = {}
    for entry in scan(checkpoints_dir(job_dir)).complete:
        metadata = read_json(entry.path / "metadata.json") or {}
        metrics = metadata.get("metrics") or {}
        history = metadata.get("val_history") or metrics.get("val_history") or []
        for item in history:
            if isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, (int, float)) for x in item):
                points.setdefault(int(item[0]), float(item[1]))
        if isinstance(metrics.get("val_loss"), (int, float)) and entry.update is not None:
            points[entry.update] = float(metrics["val_loss"])
    return [[update, loss] for update, loss in sorted(points.items())]


# ------------------------------------------------------------------------------------ the plan


def _planned_jobs(multirun: dict[str, Any], exclude_keys: list[str]) -> tuple[dict[str, list[str]], str]:
    """Folder name -> identity overrides of every job the basic sweeper launches, in its order."""
    hydra_cfg = multirun.get("hydra") or {}
    if not hydra_cfg:
        return {}, "no multirun.yaml: jobs are listed from the folders present"
    sweeper = str((hydra_cfg.get("sweeper") or {}).get("_target_", ""))
    if not sweeper.endswith("BasicSweeper"):
        return {}, f"jobs of {sweeper.rsplit('.', 1)[-1] or 'this sweeper'} are chosen as the sweep runs: listed once started"
    arguments = [f"{k}={v}" for k, v in ((hydra_cfg.get("sweeper") or {}).get("params") or {}).items()]
    arguments += list((hydra_cfg.get("overrides") or {}).get("task") or [])
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), None)
    except Exception as error:  # an override this parser cannot expand without the config tree
        return {}, f"could not expand the sweep's overrides ({error}); jobs are listed from the folders present"
    naming = (hydra_cfg.get("job") or {}).get("config", {}).get("override_dirname", {})
    planned: dict[str, list[str]] = {}
    for job in batches[0] if batches else []:
        identity = _identity(parser.parse_overrides(list(job)), exclude_keys)
        dirname = _override_dirname(identity, naming.get("item_sep", ","), naming.get("kv_sep", "="))
        planned[job_dirname(dirname)] = [o.input_line for o in identity]
    return planned, ""


def _identity(parsed: list[Any], exclude_keys: list[str]) -> list[Any]:
    return [o for o in parsed if o.key_or_group not in exclude_keys]


def _override_dirname(identity: list[Any], item_sep: str, kv_sep: str) -> str:
    # The same string Hydra builds (config_loader_impl.get_overrides_dirname).
    lines = sorted(o.input_line for o in identity)
    return item_sep.join(lines).replace("=", kv_sep)


def _job_overrides(job_dir: Path, exclude_keys: list[str]) -> list[str]:
    lines = _load_yaml(job_dir / ".hydra" / "overrides.yaml") or []
    if not isinstance(lines, list):
        return []
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        return [o.input_line for o in _identity(OverridesParser.create().parse_overrides([str(x) for x in lines]), exclude_keys)]
    except Exception:
        return [str(x) for x in lines]


def _exclude_keys(multirun: dict[str, Any]) -> list[str]:
    naming = (((multirun.get("hydra") or {}).get("job") or {}).get("config") or {}).get("override_dirname") or {}
    return [str(k) for k in naming.get("exclude_keys") or []]


def _labels(overrides: dict[str, list[str]]) -> dict[str, str]:
    """Each job's overrides minus those every job shares: what a reader compares."""
    shared = set.intersection(*(set(v) for v in overrides.values())) if len(overrides) > 1 else set()
    return {name: " ".join(o for o in lines if o not in shared) or "(defaults)" for name, lines in overrides.items()}


# ------------------------------------------------------------------------------------ files


def lock_holder(lock_path: Path) -> Optional[str]:
    """Who holds ``lock_path``'s flock (a short description), or None when nobody does.

    Reads /proc/locks where it exists rather than trying the lock: a report must never make a
    trainer that is starting at that instant find its run "locked by another process".
    """
    try:
        stat = os.stat(lock_path)
    except OSError:
        return None
    held = _flock_held_per_proc(stat) if Path("/proc/locks").exists() else _flock_held_by_trying(lock_path)
    if not held:
        return None
    info = read_json(lock_path) or {}
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"


def _flock_held_per_proc(stat: os.stat_result) -> bool:
    wanted = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            return True
    return False


def _flock_held_by_trying(lock_path: Path) -> bool:
    import fcntl

    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we got
    return False


def _last_launch_log(log_path: Path) -> list[str]:
    """The job log's lines since its last launch (Hydra appends one log across launches)."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    starts = [i for i, line in enumerate(lines) if _JOB_START_MARK in line]
    return lines[starts[-1]:] if starts else lines


def _last_line_with(lines: list[str], mark: str) -> Optional[str]:
    for line in reversed(lines):
        if mark in line:
            return line.split(" - ", 1)[-1].strip()
    return None


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return None


# ------------------------------------------------------------------------------------ output


def format_table(report: SweepReport) -> str:
    headers = ["job", "status", "updates", "best val loss", "best checkpoint"]
    rows = [
        [
            job.label,
            job.status,
            _updates(job),
            "-" if job.best_val_loss is None else f"{job.best_val_loss:.4f}",
            "-" if job.best_checkpoint is None else Path(job.best_checkpoint).name,
        ]
        for job in report.jobs
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [f"sweep {report.sweep_dir}"]
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [headers, *rows]]
    counts = report.to_dict()["counts"]
    lines.append(", ".join(f"{n} {status}" for status, n in counts.items() if n))
    best = report.best
    if best is not None:
        lines.append(f"best: {best.label} (val loss {best.best_val_loss:.4f}) {best.best_checkpoint}")
    for job in report.jobs:
        if job.status in ("failed", "stopped") and job.reason:
            lines.append(f"{job.status}: {job.label}: {job.reason}")
    if report.note:
        lines.append(f"note: {report.note}")
    return "\n".join(lines)


def _updates(job: JobRow) -> str:
    done = "-" if job.update is None else str(job.update)
    return done if job.max_updates is None else f"{done}/{job.max_updates}"


CSV_FIELDS = ["job", "label", "status", "update", "max_updates", "best_val_loss", "best_checkpoint", "reason", "overrides"]


def write_csv(report: SweepReport, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for job in report.jobs:
            row = {key: getattr(job, key) for key in CSV_FIELDS}
            row["overrides"] = " ".join(job.overrides)
            writer.writerow(row)


def write_json(report: SweepReport, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


def write_png(report: SweepReport, path: Path) -> bool:
    """Validation loss against update, one line per job; False when no job has a point yet."""
    curves = [(job.label, job.val_curve) for job in report.jobs if job.val_curve]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for label, points in curves:
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.set_xlabel("update")
    axes.set_ylabel("validation loss")
    axes.set_title(f"sweep {Path(report.sweep_dir).name}")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# ------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="f5app-report",
        description="Summarise a Hydra sweep: one row per job with status, updates, best validation loss and best checkpoint.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep folder (hydra.sweep.dir), e.g. outputs/sweeps/demo")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--csv", type=Path, default=None, help="CSV file to write (default: SWEEP_DIR/report.csv)")
    parser.add_argument("--json-file", type=Path, default=None, help="JSON file to write (default: SWEEP_DIR/report.json)")
    parser.add_argument("--png", type=Path, default=None, help="validation-loss plot to write (default: SWEEP_DIR/report.png)")
    parser.add_argument("--no-files", action="store_true", help="print only; write no CSV/JSON/PNG")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run_entry_point("f5app-report", lambda: _report(args))


def _report(args: argparse.Namespace) -> int:
    report = collect(args.sweep_dir)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_table(report))
    if args.no_files:
        return 0
    sweep_dir = Path(report.sweep_dir)
    targets = {
        "csv": args.csv or sweep_dir / "report.csv",
        "json": args.json_file or sweep_dir / "report.json",
        "png": args.png or sweep_dir / "report.png",
    }
    try:
        write_csv(report, targets["csv"])
        write_json(report, targets["json"])
        wrote_png = write_png(report, targets["png"])
    except OSError as error:
        raise UserError(f"could not write the report files ({error}); pass --csv/--json-file/--png elsewhere or --no-files") from None
    if not args.json:  # keep --json output parseable
        written = [targets["csv"], targets["json"]] + ([targets["png"]] if wrote_png else [])
        print("wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
