"""``python -m f5app.train [overrides]``: fine-tune, resume or train F5-TTS (also under ``accelerate launch``).

Exit status: 0 finished (or already finished), 1 error, 3 stopped by a signal after saving a
checkpoint (run the same command again to resume).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, TrainConfig, resolved_container, to_settings

log = logging.getLogger("f5app.train")


def hydra_record() -> dict[str, Any]:
    """What Hydra knows about this job: overrides, group choices, and sweep position."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    record: dict[str, Any] = {
        "overrides": list(hc.overrides.task),
        "choices": {k: v for k, v in OmegaConf.to_container(hc.runtime.choices).items() if not k.startswith("hydra/")},
        "mode": str(hc.mode.name) if hc.mode is not None else None,
        "output_dir": hc.runtime.output_dir,
    }
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        record["sweep"] = {"dir": hc.sweep.dir, "subdir": hc.sweep.subdir, "job_num": hc.job.num, "override_dirname": hc.job.override_dirname}
    return record


def run(cfg: DictConfig, run_dir: Path, hydra_info: dict[str, Any] | None = None) -> float | None:
    """Train with a composed config; the programmatic twin of the command line."""
    from f5app.training.loop import RunContext, Trainer

    settings: TrainConfig = to_settings(cfg, TrainConfig)
    context = RunContext(run_dir=Path(run_dir), resolved_config=resolved_container(cfg), hydra=hydra_info or {})
    return Trainer(settings, context).run()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from f5app.errors import exit_on_user_error
    from f5app.sweep import start_line

    with exit_on_user_error(log, reraise=HydraConfig.get().mode == RunMode.MULTIRUN):
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        log.info("%s", start_line(run_dir, cfg.trainer.max_updates, cfg.trainer.epochs, label=run_dir.name))
        return run(cfg, run_dir, hydra_record())


USAGE = "usage: python -m f5app.train [group=option ...] [key=value ...]   (also: accelerate launch -m f5app.train ..., -m for sweeps)"


def main() -> None:
    run_hydra_app(_hydra_main, "train", USAGE)


if __name__ == "__main__":
    sys.exit(main())
