"""``python -m f5app.prepare data=csv_wavs data.path=DIR``: prepare a data set once, ahead of training.

Training prepares on first use too; this entry point lets you check the report before spending
GPU time. Data that cannot be prepared ends in one line, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, DataConfig, to_settings

log = logging.getLogger(__name__)

USAGE = "usage: python -m f5app.prepare data=csv_wavs data.path=DIR [data.tokenizer=char|pinyin|custom] [key=value ...]"


@hydra.main(config_path=str(CONF_DIR), config_name="prepare", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from f5app.data.prepare import prepare
    from f5app.errors import UserError, exit_on_user_error

    with exit_on_user_error(log):
        if OmegaConf.is_missing(cfg.data, "path"):
            raise UserError("data.path is required: data=csv_wavs data.path=DIR (DIR holds metadata.csv)")
        # resolve inside the whole tree first: data.prepared_dir may interpolate ${output_root}
        data: DataConfig = to_settings(OmegaConf.to_container(cfg.data, resolve=True), DataConfig)
        prepared = prepare(data, progress=bool(cfg.progress))
    print(
        f"{prepared.num_items} clips ({prepared.total_seconds:.1f} s of audio), {len(prepared.vocab)} tokens, "
        f"{prepared.skipped} rows skipped -> {prepared.dir}\nreport: {prepared.report_path}"
    )


def main() -> None:
    run_hydra_app(_hydra_main, "prepare", USAGE)


if __name__ == "__main__":
    sys.exit(main())
