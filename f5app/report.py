"""``python -m f5app.report SWEEP_DIR``: one row per sweep job, while the sweep runs or after.

Reads only YAML and JSON (``multirun.yaml``, each job's ``.hydra/``, the trainer's
``run_status.json``, checkpoint pointers and ``metadata.json``), never log text, torch or f5_tts,
so it answers in well under a second. Writes the same rows as CSV and JSON, and a PNG of
validation-loss curves (and WER / SIM curves when the jobs evaluate), beside the sweep by default.
The best job is the one with the best value of the sweep's ``objective`` (val_loss, wer, cer:
lowest; sim: highest), the number each job returned to the sweeper.

Status of a job:
  done         its newest checkpoint reached the job's configured trainer.max_updates / epochs
  running      a process holds the job's run lock (``<job>/.lock``)
  stopped      stopped by a signal (SLURM's SIGUSR1, Ctrl-C) after a checkpoint, or short of a
               bound raised since: launch the sweep again to resume
  failed       the trainer recorded an error, or its last launch ended without finishing or being
               stopped (crash, kill -9), or ended with no checkpoint at all
  not started  listed in multirun.yaml but its folder does not exist yet
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import yaml

from f5app.errors import UserError, run_entry_point
from f5app.ckpt.schema import metric_direction, parse_metric
from f5app.run_state import (
    LOCK_FILENAME, RunProgress, eval_curve, eval_set_curves, lock_holder, reached_bounds, read_progress, read_run_status, val_curve,
)
from f5app.sweep import job_dirname

log = logging.getLogger("f5app.report")

STATUSES = ("done", "running", "stopped", "failed", "not started")


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
    objective: str = "val_loss"  # what the job returns to the sweeper (its config's objective)
    best_wer: Optional[float] = None  # best over the job's evaluations (lowest WER / CER, highest SIM)
    best_cer: Optional[float] = None
    best_sim: Optional[float] = None
    eval_curve: list[list[Optional[float]]] = field(default_factory=list)  # [update, wer, cer, sim]
    #: each named prompt set's (eval.sets) best wer / cer / sim over the job's evaluations, by set
    best_by_set: dict[str, dict[str, Optional[float]]] = field(default_factory=dict)
    eval_set_curves: dict[str, list[list[Optional[float]]]] = field(default_factory=dict)  # by set: [update, wer, cer, sim]

    def value(self, metric: str) -> Optional[float]:
        name, set_name = parse_metric(metric)
        if set_name is not None:
            return self.best_by_set.get(set_name, {}).get(name)
        return {"val_loss": self.best_val_loss, "wer": self.best_wer, "cer": self.best_cer, "sim": self.best_sim}[name]


@dataclass
class SweepReport:
    sweep_dir: str
    generated_at: str
    jobs: list[JobRow]
    note: str = ""

    @property
    def objective(self) -> str:
        """The sweep's objective (the first started job's; every job of one sweep shares it)."""
        return next((job.objective for job in self.jobs if job.status != "not started"), "val_loss")

    @property
    def best(self) -> Optional[JobRow]:
        metric = self.objective
        scored = [job for job in self.jobs if job.value(metric) is not None]
        if not scored:
            return None
        pick = max if metric_direction(metric) == "max" else min
        return pick(scored, key=lambda job: job.value(metric))  # type: ignore[arg-type,return-value]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "sweep_dir": self.sweep_dir,
            "generated_at": self.generated_at,
            "counts": {status: sum(job.status == status for job in self.jobs) for status in STATUSES},
            "objective": self.objective,
            "best": None if best is None else {
                "job": best.job, "label": best.label, "best_val_loss": best.best_val_loss, "best_checkpoint": best.best_checkpoint,
                "objective": self.objective, "value": best.value(self.objective),
            },
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
    row.val_curve = val_curve(job_dir)
    row.eval_curve = eval_curve(job_dir)
    for column, name in ((1, "wer"), (2, "cer"), (3, "sim")):
        values = [point[column] for point in row.eval_curve if point[column] is not None]
        setattr(row, f"best_{name}", _best(name, values))
    row.eval_set_curves = eval_set_curves(job_dir)
    for set_name, curve in row.eval_set_curves.items():
        row.best_by_set[set_name] = {
            name: _best(name, [point[column] for point in curve if point[column] is not None]) for column, name in ((1, "wer"), (2, "cer"), (3, "sim"))
        }
    objective = ((_load_yaml(job_dir / ".hydra" / "config.yaml") or {}).get("objective"))
    row.objective = objective if _is_metric(objective) else "val_loss"
    row.status, row.reason = _status(job_dir, progress, bounds)
    return row


def _best(metric: str, values: list[float]) -> Optional[float]:
    return ((max if metric_direction(metric) == "max" else min)(values)) if values else None


def _is_metric(name: Any) -> bool:
    try:
        parse_metric(str(name))
    except ValueError:
        return False
    return True


def _set_names(report: SweepReport) -> list[str]:
    return list(dict.fromkeys(name for job in report.jobs for name in job.best_by_set))


def _status(job_dir: Path, progress: RunProgress, bounds: Optional[tuple[int, int]]) -> tuple[str, str]:
    holder = lock_holder(job_dir / LOCK_FILENAME)
    if holder is not None:
        return "running", holder
    if bounds is not None and progress.update is not None and reached_bounds(progress.update, progress.epoch, *bounds):
        return "done", ""
    status = read_run_status(job_dir)
    if status is not None and status.state == "failed":
        return "failed", status.message
    if progress.update is None:
        return "failed", "ended without writing a checkpoint (killed, or crashed before the first save); see its train.log"
    if status is not None and status.state == "stopped":
        return "stopped", status.message
    if status is not None and status.state == "finished":
        return "stopped", f"finished at update {status.update} under an earlier bound; launch the sweep again to resume"
    return "failed", f"its last launch ended at update {progress.update} without finishing or being stopped (crashed or killed; see train.log); launching the sweep again resumes it"


def _configured_bounds(job_dir: Path, progress: RunProgress) -> Optional[tuple[int, int]]:
    """(max_updates, epochs) from the job's latest launch config, else from its last checkpoint."""
    trainer = ((_load_yaml(job_dir / ".hydra" / "config.yaml") or {}).get("trainer")) or {}
    if not _bounds_ok(trainer):
        trainer = progress.trainer
    return (int(trainer["max_updates"]), int(trainer["epochs"])) if _bounds_ok(trainer) else None


def _bounds_ok(trainer: dict[str, Any]) -> bool:
    return isinstance(trainer.get("max_updates"), int) and isinstance(trainer.get("epochs"), int)


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
        from hydra.core.override_parser.overrides_parser import OverridesParser  # deferred: hydra (0.1 s, NOTES.md) only to read a sweep's overrides; report imports no hydra otherwise

        parser = OverridesParser.create()
        jobs = _cartesian_jobs(parser.parse_overrides(arguments))
    except Exception as error:  # an override this parser cannot expand without the config tree
        return {}, f"could not expand the sweep's overrides ({error}); jobs are listed from the folders present"
    naming = (hydra_cfg.get("job") or {}).get("config", {}).get("override_dirname", {})
    planned: dict[str, list[str]] = {}
    for job in jobs:
        identity = _identity(parser.parse_overrides(list(job)), exclude_keys)
        dirname = _override_dirname(identity, naming.get("item_sep", ","), naming.get("kv_sep", "="))
        planned[job_dirname(dirname)] = [o.input_line for o in identity]
    return planned, ""


def _cartesian_jobs(parsed: list[Any]) -> list[list[str]]:
    """Every job the basic sweeper launches, in its order: the cartesian product of the sweep
    overrides (the last one varying fastest), each a list of ``key=value`` lines."""

    choices = []
    for override in parsed:
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(job) for job in itertools.product(*choices)]


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
        from hydra.core.override_parser.overrides_parser import OverridesParser  # deferred: hydra (0.1 s, NOTES.md) only to read a sweep's overrides; report imports no hydra otherwise

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


def _load_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except (OSError, yaml.YAMLError):
        return None


# ------------------------------------------------------------------------------------ output


def format_table(report: SweepReport) -> str:
    evaluated = any(job.eval_curve for job in report.jobs)
    sets = _set_names(report)
    per_set = [f"best {metric.upper()}@{name}" for name in sets for metric in ("wer", "cer", "sim")]
    headers = ["job", "status", "updates", "best val loss"] + (["best WER", "best CER", "best SIM"] if evaluated else []) + per_set + ["best checkpoint"]
    rows = [
        [
            job.label,
            job.status,
            _updates(job),
            _number(job.best_val_loss, 4),
            *([_number(job.best_wer, 3), _number(job.best_cer, 3), _number(job.best_sim, 3)] if evaluated else []),
            *(_number(job.best_by_set.get(name, {}).get(metric), 3) for name in sets for metric in ("wer", "cer", "sim")),
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
        metric = report.objective
        if metric == "val_loss":
            lines.append(f"best: {best.label} (val loss {best.best_val_loss:.4f}) {best.best_checkpoint}")
        else:
            lines.append(f"best by {metric}: {best.label} ({metric} {best.value(metric):.4f}) {best.best_checkpoint}")
    for job in report.jobs:
        if job.status in ("failed", "stopped") and job.reason:
            lines.append(f"{job.status}: {job.label}: {job.reason}")
    if report.note:
        lines.append(f"note: {report.note}")
    return "\n".join(lines)


def _number(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _updates(job: JobRow) -> str:
    done = "-" if job.update is None else str(job.update)
    return done if job.max_updates is None else f"{done}/{job.max_updates}"


CSV_FIELDS = [
    "job", "label", "status", "update", "max_updates", "best_val_loss", "best_wer", "best_cer", "best_sim", "objective",
    "best_checkpoint", "reason", "overrides",
]


def write_csv(report: SweepReport, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        sets = _set_names(report)
        per_set = [(f"best_{metric}@{name}", name, metric) for name in sets for metric in ("wer", "cer", "sim")]
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS[:-3] + [column for column, _, _ in per_set] + CSV_FIELDS[-3:])
        writer.writeheader()
        for job in report.jobs:
            row = {key: getattr(job, key) for key in CSV_FIELDS}
            row.update({column: job.best_by_set.get(name, {}).get(metric) for column, name, metric in per_set})
            row["overrides"] = " ".join(job.overrides)
            writer.writerow(row)


def write_json(report: SweepReport, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")


def write_png(report: SweepReport, path: Path) -> bool:
    """Validation loss against update, one line per job, and below it WER and SIM when the jobs
    evaluate (and each named set's WER, eval.sets); False when no job has a point yet."""
    panels = [("validation loss", [(job.label, [(p[0], p[1]) for p in job.val_curve]) for job in report.jobs])]
    for column, name in ((1, "WER"), (3, "SIM")):
        panels.append((name, [(job.label, [(p[0], p[column]) for p in job.eval_curve if p[column] is not None]) for job in report.jobs]))
    for set_name in _set_names(report):
        panels.append((f"WER@{set_name}", [(job.label, [(p[0], p[1]) for p in job.eval_set_curves.get(set_name, []) if p[1] is not None])
                                           for job in report.jobs]))
    panels = [(name, [(label, points) for label, points in curves if points]) for name, curves in panels]
    panels = [(name, curves) for name, curves in panels if curves]
    if not panels:
        return False
    import matplotlib  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it

    figure, all_axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels) + 1), sharex=True, squeeze=False)
    for axes, (name, curves) in zip(all_axes[:, 0], panels):
        for label, points in curves:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        axes.set_ylabel(name)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    all_axes[0, 0].set_title(f"sweep {Path(report.sweep_dir).name}")
    all_axes[-1, 0].set_xlabel("update")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# ------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="f5app-report",
        description="Summarise a Hydra sweep: one row per job with status, updates, best validation loss, best WER/CER/SIM and best checkpoint.",
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
