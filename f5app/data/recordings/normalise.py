"""Step 3, normalise: each clip cut from the decoded recording, edge silence trimmed, loudness set.

Done before transcription, so the ASR hears exactly the audio that is trained on and a clip
dropped here costs no recognition.

- Edge silence: leading/trailing 20 ms frames more than ``TRIM_BELOW_DB`` under the clip's
  loudest frame are trimmed, keeping ``KEEP_SILENCE_SECONDS`` (a noisy recording whose floor is
  above that keeps its edges: nothing is cut that might be speech).
- Loudness: the ITU-R BS.1770 integrated loudness (pyloudnorm) is brought to ``loudness_lufs``;
  the gain is lowered where it would push a peak over ``PEAK_CEILING_DB``.
- Dropped (kept in ``rejected/`` for listening, listed in the review): ``clipping`` (more than
  ``max_clipped_fraction`` of the source samples at full scale), ``too_quiet`` (under
  ``min_loudness_lufs`` before the gain: raising it would raise the noise as much), ``too_short``
  (under ``min_seconds`` once trimmed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from f5app.audio.io import write_audio
from f5app.data.recordings.segment import Span
from f5app.files import sha256_file

TRIM_FRAME_SECONDS = 0.02
TRIM_BELOW_DB = 40.0
KEEP_SILENCE_SECONDS = 0.1
PEAK_CEILING_DB = -1.0
NORMALISE_VERSION = 1


@dataclass(frozen=True)
class Settings:
    loudness_lufs: float
    min_loudness_lufs: float
    max_clipped_fraction: float
    min_seconds: float


def normalise_clip(decoded: Path, span: Span, clipped_fraction: float, settings: Settings, ok_path: Path, rejected_path: Path) -> dict[str, Any]:
    """Cut ``span`` from ``decoded``, trim, measure, normalise and write it; returns the measurements.

    The clip goes to ``ok_path``, or to ``rejected_path`` with a ``dropped`` reason.
    """

    info = soundfile.info(str(decoded))
    rate = int(info.samplerate)
    first, last = int(round(span.start * rate)), min(info.frames, int(round(span.end * rate)))
    wav, _ = soundfile.read(str(decoded), start=first, stop=last, dtype="float32")
    lead, tail = _edges(wav, rate)
    wav = wav[lead:len(wav) - tail]
    start, end = (first + lead) / rate, (first + lead + len(wav)) / rate
    seconds = len(wav) / rate
    loudness = _loudness(wav, rate)
    dropped = None
    if clipped_fraction > settings.max_clipped_fraction:
        dropped = "clipping"
    elif loudness is None or loudness < settings.min_loudness_lufs:
        dropped = "too_quiet"
    elif seconds < settings.min_seconds:
        dropped = "too_short"
    gain_db = 0.0
    if loudness is not None:
        gain_db = settings.loudness_lufs - loudness
        peak = float(np.abs(wav).max()) if len(wav) else 0.0
        if peak > 0:
            gain_db = min(gain_db, PEAK_CEILING_DB - 20 * math.log10(peak))
        wav = wav * np.float32(10 ** (gain_db / 20))
    path = rejected_path if dropped else ok_path
    write_audio(path, wav, rate, overwrite=True)
    peak_out = float(np.abs(wav).max()) if len(wav) else 0.0
    return {
        "start": round(start, 4),
        "end": round(end, 4),
        "seconds": round(seconds, 4),
        "trimmed_seconds": round((lead + tail) / rate, 4),
        "loudness_lufs": None if loudness is None else round(loudness, 2),
        "gain_db": round(gain_db, 2),
        "peak_dbfs": None if peak_out <= 0 else round(20 * math.log10(peak_out), 2),
        "clipped_fraction": clipped_fraction,
        "dropped": dropped,
        "file": path.name,
        "folder": path.parent.name,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _edges(wav: np.ndarray, rate: int) -> tuple[int, int]:
    """Samples of silence to trim at the start and at the end."""
    hop = max(1, int(TRIM_FRAME_SECONDS * rate))
    frames = len(wav) // hop
    if frames < 3:
        return 0, 0
    energy = (wav[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1)
    loud = energy > energy.max() * 10 ** (-TRIM_BELOW_DB / 10)
    if not loud.any():
        return 0, 0
    keep = int(KEEP_SILENCE_SECONDS * rate)
    first = int(np.argmax(loud)) * hop
    last = (frames - int(np.argmax(loud[::-1]))) * hop
    return max(0, first - keep), max(0, len(wav) - min(len(wav), last + keep))


def _loudness(wav: np.ndarray, rate: int) -> float | None:
    """Integrated loudness in LUFS; None for silence or audio shorter than one 400 ms block."""
    import pyloudnorm  # deferred: pyloudnorm is optional (the [recordings] extra) and loads scipy (3.1 s, -X importtime, shared machine)

    if len(wav) < int(0.4 * rate) + 1:
        return None
    value = pyloudnorm.Meter(rate).integrated_loudness(wav.astype(np.float64))
    return float(value) if math.isfinite(value) else None
