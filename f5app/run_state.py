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
from typing import Literal, Optional

from f5app.ckpt import layout
from f5app.ckpt.schema import read_metadata, utc_now
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

