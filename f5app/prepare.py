"""``python -m f5app.prepare data=csv_wavs data.path=DIR``: prepare a data set once, ahead of training.

``data=recordings data.path=DIR asr=tiny_en`` first cuts long recordings into clips, transcribes
them and writes a metadata.csv to review and edit (docs/recordings.md).

Training prepares on first use too; this entry point lets you check the report before spending
GPU time. Data that cannot be prepared ends in one line, ``error: ...``, and exit status 2.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, DataConfig, TextNormConfig, data_schema_for, to_settings
from f5app.errors import UserError, exit_on_user_error
from f5app.text.normalise import training_normaliser

log = logging.getLogger(__name__)

USAGE = ("usage: python -m f5app.prepare data=csv_wavs data.path=DIR [data.tokenizer=char|pinyin|custom] [key=value ...]\n"
         "       python -m f5app.prepare data=recordings data.path=DIR [asr=whisper|tiny_en] [key=value ...]")


@hydra.main(config_path=str(CONF_DIR), config_name="prepare", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    # deferred: f5app.data.sources costs 0.49 s to import (numpy, soundfile; -X importtime); --help must stay fast
    from f5app.data.replay import prepare_replay
    from f5app.data.sources import prepare_data

    with exit_on_user_error(log):
        if OmegaConf.is_missing(cfg.data, "path"):
            what = "the folder holding your recordings" if cfg.data.get("name") == "recordings" else "DIR holds metadata.csv"
            raise UserError(f"data.path is required: data={cfg.data.get('name', 'csv_wavs')} data.path=DIR ({what})")
        # resolve inside the whole tree first: data.prepared_dir may interpolate ${output_root}
        tree = OmegaConf.to_container(cfg.data, resolve=True)
        data: DataConfig = to_settings(tree, data_schema_for(tree))
        text_norm: TextNormConfig = to_settings(cfg.text_norm, TextNormConfig)
        prepared = prepare_data(data, progress=bool(cfg.progress), normaliser=training_normaliser(text_norm, cfg.asr.get("language")))
        replayed = prepare_replay(data, text_norm, progress=bool(cfg.progress))
    print(
        f"{prepared.num_items} clips ({prepared.total_seconds:.1f} s of audio), {len(prepared.vocab)} tokens, "
        f"{prepared.skipped} rows skipped -> {prepared.dir}\nreport: {prepared.report_path}"
    )
    if prepared.review_path is not None:
        print(f"review: {prepared.review_path}\nedit {prepared.review_path.parent / 'metadata.csv'} and run the same command again to change texts")
    for i, replay in enumerate(replayed):
        print(f"data.replay[{i}]: {replay.num_items} clips ({replay.total_seconds:.1f} s of audio), {replay.skipped} rows skipped -> {replay.dir}")


def main() -> None:
    run_hydra_app(_hydra_main, "prepare", USAGE)


if __name__ == "__main__":
    sys.exit(main())
