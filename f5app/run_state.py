"""A run folder's machine-readable state, and the one rule for "is this run finished".

The trainer writes ``run_status.json`` (running / finished / stopped / failed, with its counters and
bounds) at each transition and ``preempted.json`` when a signal stopped it; checkpoints record how
far it got. The trainer's stopping test, the sweep's skip of finished jobs and the report's
status column all come from here, so the three always agree. JSON only: no torch import.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

from f5app.ckpt import layout
from f5app.ckpt.schema import Metrics, read_metadata, utc_now
from f5app.files import read_json_object, write_json_atomic

RUN_STATUS_FILENAME = "run_status.json"
PREEMPTED_FILENAME = "preempted.json"
LOCK_FILENAME = ".lock"

RunState = Literal["running", "finished", "stopped", "failed"]
_STATES = ("running", "finished", "stopped", "failed")


def reached_bounds(update: int, epoch: Optional[int], max_updates: int, epochs: int) -> bool:
    """Training stops at whichever bound comes first: ``trainer.max_updates`` or ``trainer.epochs``."""
    return update >= max_updates or (epoch is not None and epoch >= epochs)


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    update: int
    epoch: int
    max_updates: int
    epochs: int
    message: str = ""
    pid: int = 0
    host: str = ""
    updated_at: str = ""

def write_run_status(run_dir: Path, state: RunState, *, update: int, epoch: int, max_updates: int, epochs: int, message: str = "") -> RunStatus:
    status = RunStatus(state, int(update), int(epoch), int(max_updates), int(epochs), message, os.getpid(), socket.gethostname(), utc_now())
    write_json_atomic(Path(run_dir) / RUN_STATUS_FILENAME, asdict(status))
    return status


def read_run_status(run_dir: Path) -> Optional[RunStatus]:
    """The trainer's last word about this run, or None (never started, or an older f5app)."""
    data = read_json_object(Path(run_dir) / RUN_STATUS_FILENAME)
    if data is None or data.get("state") not in _STATES:
        return None
    try:
        return RunStatus(
            data["state"], int(data["update"]), int(data["epoch"]), int(data["max_updates"]), int(data["epochs"]),
            str(data.get("message", "")), int(data.get("pid", 0)), str(data.get("host", "")), str(data.get("updated_at", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def write_preempted(run_dir: Path, *, signal: Optional[str], update: int, message: str) -> None:
    """What a requeue script looks for: under ``accelerate launch`` the exit status says only 1."""
    write_json_atomic(Path(run_dir) / PREEMPTED_FILENAME, {"signal": signal, "update": update, "at": utc_now(), "message": message})


def clear_preempted(run_dir: Path) -> None:
    (Path(run_dir) / PREEMPTED_FILENAME).unlink(missing_ok=True)


@dataclass(frozen=True)
class RunProgress:
    """How far a run folder has trained, from its pointers and checkpoint metadata."""

    update: Optional[int]  # newest complete checkpoint's update; None before the first one
    epoch: Optional[int]  # epoch counter recorded with that checkpoint
    best_value: Optional[float]  # best.json's value of its metric
    best_metric: Optional[str]
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]
    trainer: dict  # the trainer section of the newest checkpoint's recorded config

    @property
    def best_val_loss(self) -> Optional[float]:
        return self.best_value if self.best_metric == "val_loss" else None


def read_progress(run_dir: Path) -> RunProgress:
    """The run's progress; pointers missing or damaged fall back to scanning checkpoint folders."""
    ckpt_dir = layout.checkpoints_dir(Path(run_dir))
    last, best = layout.read_pointer(ckpt_dir, "last"), layout.read_pointer(ckpt_dir, "best")
    newest = layout.scan(ckpt_dir).complete[:1]
    if last is not None and layout.is_complete(ckpt_dir / last.name):
        last_path: Optional[Path] = ckpt_dir / last.name
    else:
        last_path = newest[0].path if newest else None
    metadata = read_metadata(last_path) if last_path is not None else None
    return RunProgress(
        update=metadata.update if metadata is not None else None,
        epoch=metadata.epoch if metadata is not None else None,
        best_value=best.value if best is not None else None,
        best_metric=best.metric if best is not None else None,
        best_checkpoint=ckpt_dir / best.name if best is not None else None,
        last_checkpoint=last_path,
        trainer=metadata.config_section("trainer") if metadata is not None else {},
    )


# ------------------------------------------------------------------ histories and the lock, for readers


def val_curve(job_dir: Path) -> list[list[float]]:
    """[update, val_loss] points: each checkpoint's metrics.val_loss, plus the full history its
    metadata carries (retention deletes older checkpoints)."""

    def points(metrics: Metrics) -> tuple[list[tuple[None, int, Any]], list[tuple[None, Any]]]:
        own = metrics.value("val_loss")
        return [(None, update, loss) for update, loss in metrics.val_history], [] if own is None else [(None, own)]

    return [[update, loss] for update, loss in _merged_curves(job_dir, points).get(None, [])]


def eval_curve(job_dir: Path) -> list[list[Optional[float]]]:
    """[update, wer, cer, sim] of every evaluation: the history each checkpoint's metadata carries
    (retention deletes older checkpoints), and each checkpoint's own scores."""

    def points(metrics: Metrics) -> tuple[list[tuple[None, int, Any]], list[tuple[None, Any]]]:
        own = metrics.eval
        return ([(None, update, scores) for update, *scores in metrics.eval_history],
                [] if own is None else [(None, [own.wer, own.cer, own.sim])])

    return [[update, *scores] for update, scores in _merged_curves(job_dir, points).get(None, [])]


def eval_set_curves(job_dir: Path) -> dict[str, list[list[Optional[float]]]]:
    """Each named prompt set's (eval.sets) [update, wer, cer, sim] over the run, as :func:`eval_curve`
    reads the whole evaluation's; empty for runs without sets."""

    def points(metrics: Metrics) -> tuple[list[tuple[str, int, Any]], list[tuple[str, Any]]]:
        sets = metrics.eval.sets if metrics.eval is not None else {}
        return ([(name, update, scores) for update, name, *scores in metrics.eval_set_history],
                [(name, [one.wer, one.cer, one.sim]) for name, one in sets.items()])

    return {name: [[update, *scores] for update, scores in curve] for name, curve in _merged_curves(job_dir, points).items()}


def _merged_curves(job_dir: Path, points_of: Callable[[Metrics], tuple[list, list]]) -> dict[Any, list[tuple[int, Any]]]:
    """Curves by key, each as sorted (update, value): every complete checkpoint's recorded history
    (``points_of`` gives ``[(key, update, value)]``) and, winning over it, its own values at its
    update (``[(key, value)]``). The newest checkpoint's history holds what retention deleted."""
    curves: dict[Any, dict[int, Any]] = {}
    for entry in layout.scan(layout.checkpoints_dir(job_dir)).complete:
        metadata = read_metadata(entry.path)
        if metadata is None:
            continue
        history, own = points_of(metadata.metrics)
        for key, update, value in history:
            curves.setdefault(key, {}).setdefault(update, value)
        for key, value in own:
            curves.setdefault(key, {})[metadata.update] = value
    return {key: sorted(curve.items()) for key, curve in curves.items()}


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
    info = read_json_object(lock_path) or {}
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
    import fcntl  # deferred: Windows has no fcntl; only used where /proc/locks is missing

    fd = os.open(lock_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we got
    return False
