"""``remove_silence``: long silences in generated speech shortened, as upstream does it.

Upstream's ``remove_silence_for_generated_wav`` runs pydub's ``split_on_silence`` on the written
file (``min_silence_len=1000`` ms under ``-50`` dBFS, ``keep_silence=500`` ms, ``seek_step=10``)
and joins the pieces: every silence over a second becomes at most one second. This runs the same
pydub call on the samples (16-bit, as upstream's exported wav is), without a file round trip.
"""

from __future__ import annotations

import warnings

import numpy as np

with warnings.catch_warnings():
    # pydub warns at import when ffmpeg is absent; only its file codecs need ffmpeg, not this
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment, silence

MIN_SILENCE_MS = 1000
SILENCE_DBFS = -50
KEEP_SILENCE_MS = 500
SEEK_STEP_MS = 10


def remove_long_silences(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """``wav`` (float32 mono) with each silence longer than a second cut to one second."""
    pcm = (np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    segment = AudioSegment(data=pcm.tobytes(), sample_width=2, frame_rate=int(sample_rate), channels=1)
    pieces = silence.split_on_silence(
        segment, min_silence_len=MIN_SILENCE_MS, silence_thresh=SILENCE_DBFS, keep_silence=KEEP_SILENCE_MS,
        seek_step=SEEK_STEP_MS,
    )
    joined = b"".join(piece.raw_data for piece in pieces)
    return np.frombuffer(joined, dtype="<i2").astype(np.float32) / 32767
