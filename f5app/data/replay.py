"""Replay against forgetting (``data.replay``): further sets, each a fixed share of every training
batch, so a fine-tune into a new language keeps hearing the language it came from.

This module prepares them (through the one preparation owner,
:func:`f5app.data.sources.prepare_data`, with the main set's settings, each into its own
``prepared_dir``) and joins their vocabularies; f5app/data/mixing.py mixes them into the batches.
Every clip of a replay set trains: it has no held-out split. Standard library and the data layer
only: ``python -m f5app.prepare`` prepares replay sets without importing torch.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from f5app.config import DataConfig, RecordingsDataConfig, ReplayConfig, TextNormConfig
from f5app.data.prepare import PreparedData
from f5app.data.recordings import work_dir_for
from f5app.data.sources import prepare_data
from f5app.data.tokenizer import extend_vocab
from f5app.errors import UserError, first_line
from f5app.text.normalise import training_normaliser

MAX_SHARE = 0.9  # one replay set leaves the main data at least a tenth of every batch


def check_replay(entries: list[ReplayConfig]) -> None:
    """Refuse, in one line naming the key, a replay list that cannot work (before anything is prepared)."""
    for i, entry in enumerate(entries):
        if not entry.path:
            raise UserError(f"data.replay[{i}].path is missing: name the folder holding the replay set's metadata.csv")
        if not 0 < entry.share <= MAX_SHARE:
            raise UserError(f"data.replay[{i}].share={entry.share} must be in (0, {MAX_SHARE}]: the share of every batch's frames it takes")
    total = sum(entry.share for entry in entries)
    if entries and total >= 1:
        shares = " + ".join(str(entry.share) for entry in entries)
        raise UserError(f"data.replay shares add up to {total:g} ({shares}); they must stay below 1 so the main data keeps part of every batch")


def replay_data_config(main: DataConfig, entry: ReplayConfig) -> DataConfig:
    """The data settings a replay set is prepared with: the main set's, for the entry's folder.

    A folder that ``data=recordings`` cut clips from stands for its clips folder (``f5app_clips``)."""
    folder = Path(entry.path).expanduser()
    if not (folder / "metadata.csv").exists():
        clips = work_dir_for(RecordingsDataConfig(path=str(folder)))
        if (clips / "metadata.csv").is_file():
            folder = clips
    values = {f.name: getattr(main, f.name) for f in fields(DataConfig)}  # a recordings config's extra keys are not the clips'
    return DataConfig(**{**values, "name": "csv_wavs", "path": str(folder), "prepared_dir": entry.prepared_dir, "replay": []})


def prepare_replay(main: DataConfig, text_norm: TextNormConfig, progress: bool = True) -> list[PreparedData]:
    """Each replay set prepared (a no-op when unchanged); a failure names its ``data.replay[i]``."""
    check_replay(main.replay)
    prepared = []
    for i, entry in enumerate(main.replay):
        normaliser = training_normaliser(text_norm, entry.language)
        try:
            prepared.append(prepare_data(replay_data_config(main, entry), progress=progress, normaliser=normaliser))
        except UserError as error:
            raise UserError(f"data.replay[{i}].path={entry.path}: {first_line(error)}") from None
    return prepared


def union_vocab(main: list[str], replayed: list[PreparedData]) -> tuple[list[str], list[str]]:
    """The main set's vocabulary grown by the replay sets' tokens (as fine-tuning grows a vocabulary)."""
    return extend_vocab(main, [token for prepared in replayed for token in prepared.vocab])
