"""Read and write audio with soundfile (WAV, FLAC, OGG; no FFmpeg) and resample with torchaudio.

``torchaudio.load``/``save`` need FFmpeg through torchcodec, which a plain install lacks, so all
file access goes through soundfile. torch is imported only when a resample is needed.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf

from f5app.errors import UserError
from f5app.files import atomic_write


class AudioFileError(UserError, ValueError):
    """An audio file that cannot be read or written; the message says which and why."""


def read_audio(path: str | Path, target_sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Return ``(samples, sample_rate)`` as float32.

    ``mono=True`` averages channels into shape ``(samples,)``; otherwise the shape is
    ``(channels, samples)``. ``target_sr`` resamples when the file's rate differs.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"audio file {path} does not exist")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(f"cannot read audio file {path}: {exc} (WAV, FLAC and OGG are supported)") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"audio file {path} holds no samples")
    wav = data.T  # (channels, samples)
    if mono:
        wav = wav.mean(axis=0)
    if target_sr is not None and target_sr != sr:
        wav = resample(wav, sr, target_sr)
        sr = target_sr
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling along the last axis (torchaudio's functional API)."""
    if orig_sr == target_sr:
        return wav
    import torch  # deferred: torch costs 1.9 s (NOTES.md)
    import torchaudio.functional as AF  # deferred: torchaudio loads torch (1.9 s, NOTES.md)

    orig, new = resampling_ratio(orig_sr, target_sr)
    return AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), orig, new).numpy()


#: torchaudio's kernel is (new/g) x (orig/g + 2*width) floats, g = gcd(orig, new): 44100 -> 24000
#: Hz is 80 x 173, but 44101 -> 24000 (gcd 1) is 24000 x 44125, a 4.2 GB tensor. Ratios whose
#: kernel would exceed about this many elements (16 MiB of float32) are replaced by the nearest
#: ratio that fits. Measured for every rate from 1 kHz to 1 MHz into 16/22.05/24/44.1 kHz: within
#: 2.4e-4 of the exact ratio (median 2e-7), at most 0.4 cent of pitch and 0.24 ms per second.
_MAX_RESAMPLE_KERNEL = 1 << 22
_MAX_RATIO_ERROR = 1e-3  # a safety net: never reached in that measurement


def resampling_ratio(orig_sr: int, target_sr: int) -> tuple[int, int]:
    """``(orig, new)`` to hand to the resampler: the exact ratio in lowest terms when its kernel is
    small, else the closest ratio whose kernel is (see ``_MAX_RESAMPLE_KERNEL``)."""
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioFileError(f"cannot resample {orig_sr} Hz to {target_sr} Hz: sample rates must be positive")
    g = math.gcd(orig_sr, target_sr)
    orig, new = orig_sr // g, target_sr // g
    if orig * new <= _MAX_RESAMPLE_KERNEL:
        return orig, new
    exact = Fraction(target_sr, orig_sr)
    # p/q with q <= sqrt(K / ratio) keeps p * q (the kernel) near K
    close = exact.limit_denominator(max(1, math.isqrt(int(_MAX_RESAMPLE_KERNEL / exact))))
    if close == 0 or abs(close - exact) / exact > _MAX_RATIO_ERROR:
        raise AudioFileError(f"cannot resample {orig_sr} Hz to {target_sr} Hz; convert the file to a common rate (e.g. 48000 Hz) first")
    return close.denominator, close.numerator


def write_audio(path: str | Path, wav: np.ndarray, sr: int, overwrite: bool = False) -> Path:
    """Write ``wav`` (``(samples,)`` or ``(channels, samples)``) atomically; the format follows the suffix.

    The data goes to a temporary file in the same folder which is then renamed into place, so an
    error never leaves a partial file and never destroys an existing one.
    """
    path = Path(path)
    fmt = _format_for(path)
    if path.exists() and not overwrite:
        raise AudioFileError(f"output {path} already exists; choose another path or pass overwrite=true")
    if path.is_dir():
        raise AudioFileError(f"output {path} is a directory; give a file name ending in .wav, .flac or .ogg")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AudioFileError(f"cannot write to {path.parent}: {exc.strerror}") from None
    data = np.asarray(wav, dtype=np.float32)
    if data.ndim == 2:
        data = data.T  # soundfile wants (samples, channels)
    try:
        atomic_write(path, lambda tmp: sf.write(str(tmp), data, sr, format=fmt), durable=False)
    except (OSError, sf.LibsndfileError) as exc:
        raise AudioFileError(f"cannot write audio file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return path


_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _format_for(path: Path) -> str:
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        raise AudioFileError(f"output {path}: unsupported suffix {path.suffix!r}; use .wav, .flac or .ogg") from None
