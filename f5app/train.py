"""``python -m f5app.train [overrides]``: fine-tune, resume or train F5-TTS (also under ``accelerate launch``).

Exit status: 0 finished (or already finished), 1 error, 3 stopped by a signal after saving a
checkpoint (run the same command again to resume).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from f5app.ckpt.schema import HydraRecord
from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, TrainConfig, resolved_container, to_settings
from f5app.errors import exit_on_user_error
from f5app.sweep import start_line

log = logging.getLogger("f5app.train")


def hydra_record() -> HydraRecord:
    """What Hydra knows about this job: overrides, group choices, and sweep position."""

    if not HydraConfig.initialized():
        return HydraRecord()
    hc = HydraConfig.get()
    multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
    return HydraRecord(
        overrides=tuple(hc.overrides.task),
        choices={k: str(v) for k, v in OmegaConf.to_container(hc.runtime.choices).items() if not k.startswith("hydra/")},
        mode=str(hc.mode.name) if hc.mode is not None else None,
        output_dir=hc.runtime.output_dir,
        sweep={"dir": hc.sweep.dir, "subdir": hc.sweep.subdir, "job_num": hc.job.num, "override_dirname": hc.job.override_dirname} if multirun else None,
    )


def run(cfg: DictConfig, run_dir: Path, hydra_info: HydraRecord | None = None) -> float | None:
    """Train with a composed config; the programmatic twin of the command line."""
    from f5app.training.loop import RunContext, Trainer  # deferred: pulls torch at import (1.9 s, NOTES.md); --help must stay fast

    settings: TrainConfig = to_settings(cfg, TrainConfig)
    context = RunContext(run_dir=Path(run_dir), resolved_config=resolved_container(cfg), hydra=hydra_info or HydraRecord())
    return Trainer(settings, context).run()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from f5app.training.loop import TrainingDiverged  # deferred: pulls torch at import (torch 1.9 s, NOTES.md); --help and the paths without a model must stay fast

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    with exit_on_user_error(log, reraise=multirun):
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        log.info("%s", start_line(run_dir, cfg.trainer.max_updates, cfg.trainer.epochs, label=run_dir.name))
        try:
            return run(cfg, run_dir, hydra_record())
        except TrainingDiverged as error:  # a failed run (status 1), told in one line
            log.error("%s", error)
            print(f"error: {error}", file=sys.stderr)
            if multirun:
                raise
            raise SystemExit(1) from None


USAGE = "usage: python -m f5app.train [group=option ...] [key=value ...]   (also: accelerate launch -m f5app.train ..., -m for sweeps)"


def main() -> None:
    run_hydra_app(_hydra_main, "train", USAGE)


if __name__ == "__main__":
    sys.exit(main())
