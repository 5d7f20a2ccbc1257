"""Experiment trackers behind one small interface: tensorboard (default), wandb, or none."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from f5app.config import LoggerConfig

log = logging.getLogger(__name__)


class Tracker:
    """Does nothing; also what non-main processes get."""

    def scalars(self, values: dict[str, float], step: int) -> None: ...

    def audio(self, tag: str, wav: np.ndarray, sample_rate: int, step: int) -> None: ...

    def image(self, tag: str, figure: Any, step: int) -> None: ...

    def table(self, tag: str, columns: list[str], rows: list[list[str]], step: int) -> None: ...

    def close(self) -> None: ...


class TensorboardTracker(Tracker):
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # deferred: torch costs 1.9 s (NOTES.md)

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)

    def audio(self, tag: str, wav: np.ndarray, sample_rate: int, step: int) -> None:
        self._writer.add_audio(tag, wav[None, :], step, sample_rate=sample_rate)

    def image(self, tag: str, figure: Any, step: int) -> None:
        self._writer.add_figure(tag, figure, step)

    def table(self, tag: str, columns: list[str], rows: list[list[str]], step: int) -> None:
        def cell(value: str) -> str:
            return str(value).replace("|", "\\|").replace("\n", " ")

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
        self._writer.add_text(tag, "\n".join(lines), step)  # tensorboard renders markdown tables

    def close(self) -> None:
        self._writer.close()


class WandbTracker(Tracker):
    def __init__(self, project: str, run_name: str, run_dir: Path, config: dict[str, Any]) -> None:
        import wandb  # deferred: wandb costs 1.4 s (-X importtime, shared machine); only logger=wandb needs it

        self._wandb = wandb
        # The run id is derived from the run directory so a resumed run continues the same curve.
        run_id = "f5app-" + "".join(c if c.isalnum() else "-" for c in run_dir.resolve().as_posix())[-100:]
        self._run = wandb.init(project=project, name=run_name, id=run_id, resume="allow", dir=str(run_dir), config=config)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self._run.log(values, step=step)

    def audio(self, tag: str, wav: np.ndarray, sample_rate: int, step: int) -> None:
        self._run.log({tag: self._wandb.Audio(wav, sample_rate=sample_rate)}, step=step)

    def image(self, tag: str, figure: Any, step: int) -> None:
        self._run.log({tag: self._wandb.Image(figure)}, step=step)

    def table(self, tag: str, columns: list[str], rows: list[list[str]], step: int) -> None:
        self._run.log({tag: self._wandb.Table(columns=columns, data=rows)}, step=step)

    def close(self) -> None:
        self._run.finish()


def build_tracker(logger: LoggerConfig, *, run_dir: Path, run_name: str, config: dict[str, Any], is_main: bool) -> Tracker:
    if not is_main or logger.name == "none":
        return Tracker()
    if logger.name == "tensorboard":
        return TensorboardTracker(run_dir / "tensorboard")
    if logger.name == "wandb":
        return WandbTracker(logger.project, run_name, run_dir, config)
    raise ValueError(f"logger={logger.name!r} is not one of tensorboard, wandb, none")
