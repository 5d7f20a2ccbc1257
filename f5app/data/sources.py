"""Which preparation a ``data=`` setting takes: ``data=recordings`` cuts long recordings into clips
first (f5app/data/recordings/), every other option is a folder with a metadata.csv
(f5app/data/prepare.py). Apart from both, so neither imports the other's caller.
"""

from __future__ import annotations

from typing import Optional

from f5app.config import DataConfig, RecordingsDataConfig
from f5app.data.prepare import PreparedData, prepare
from f5app.data.recordings import prepare_recordings
from f5app.text.normalise import Normaliser


def prepare_data(data: DataConfig, progress: bool = True, normaliser: Optional[Normaliser] = None) -> PreparedData:
    """The prepared set for ``data`` (a no-op when its inputs are unchanged); raises DataError.

    ``normaliser`` (``text_norm.apply_to_training``): transcripts as inference says text (f5app/text/)."""
    if isinstance(data, RecordingsDataConfig):
        return prepare_recordings(data, progress=progress, normaliser=normaliser)
    return prepare(data, progress=progress, normaliser=normaliser)
