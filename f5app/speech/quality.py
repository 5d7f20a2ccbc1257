"""How good a clip of speech is, in numbers: level and clipping, DNSMOS, and whether one person speaks.

    levels(wav)                          -> Levels(peak_dbfs, rms_dbfs, clipped_fraction)
    Dnsmos().score(wav, sample_rate)     -> DnsmosScore(sig, bak, ovrl, p808)   (1 = bad .. 5 = excellent)
    speaker_spread(embedder, wav, sr)    -> SpeakerSpread(windows, spread)     (0 = one voice throughout)

**DNSMOS** is Microsoft's non-intrusive speech quality predictor (DNS Challenge, ITU-T P.835 and
P.808). The ``speechmos`` package ships its ONNX models (``dnsmos_models/sig_bak_ovr.onnx`` and
``model_v8.onnx``); they are run here with onnxruntime, offline, exactly as speechmos'
``DNSMOS.__call__`` does (9.01 s windows hopped by 1 s, short clips repeated to fill one window,
P.835 raw scores mapped through the published polynomials), without importing speechmos itself,
which imports ``requests`` and runs its models in a module-level global.

**Speaker spread**: the clip is cut into ``window``-second windows hopped by half a window, each
embedded with the ``speaker=`` model; spread is 1 minus the lowest cosine similarity of a window
to the mean of the others. Measured with resemblyzer, 3 s windows: f5-tts's four recordings, one
speaker each, 0.10-0.22; two of them joined, 0.31-0.35 (2 s windows separated them worse:
0.15-0.31 against 0.36-0.40).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from f5app.audio.io import resample
from f5app.errors import UserError
from f5app.speech.speaker import SpeakerEmbedder, similarity

log = logging.getLogger(__name__)

DNSMOS_SAMPLE_RATE = 16000
_DNSMOS_WINDOW_SECONDS = 9.01
#: A sample at or beyond this magnitude counts as clipped (one 16-bit step below full scale).
CLIP_LEVEL = 1.0 - 1.0 / 32768


class QualityModelUnavailable(UserError):
    """A quality model's package is missing."""


@dataclass(frozen=True)
class Levels:
    peak_dbfs: float
    rms_dbfs: float
    clipped_fraction: float  # samples at full scale / all samples

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6 if k == "clipped_fraction" else 2) for k, v in asdict(self).items()}


def levels(wav: np.ndarray) -> Levels:
    """Peak and RMS level (dB re full scale) and the fraction of samples clipped at full scale."""
    wav = np.asarray(wav, dtype=np.float64)
    if len(wav) == 0:
        return Levels(-120.0, -120.0, 0.0)
    peak = float(np.max(np.abs(wav)))
    rms = float(np.sqrt(np.mean(wav**2)))
    clipped = float(np.mean(np.abs(wav) >= CLIP_LEVEL))
    return Levels(20 * np.log10(max(peak, 1e-6)), 20 * np.log10(max(rms, 1e-6)), clipped)


@dataclass(frozen=True)
class DnsmosScore:
    sig: float  # speech signal quality (P.835)
    bak: float  # background noise (P.835; higher = quieter background)
    ovrl: float  # overall (P.835)
    p808: float  # overall (P.808)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in asdict(self).items()}


# Published polynomials mapping the P.835 model's raw outputs to MOS (speechmos, DNSMOS repository).
_P835_POLY = {
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}


class Dnsmos:
    """DNSMOS P.835 + P.808 on onnxruntime; build once, score many clips."""

    def __init__(self, threads: int = 1):
        folder = dnsmos_model_folder()
        import onnxruntime as ort  # deferred: optional (the [eval] extra), and only a quality check needs it

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self._p835 = ort.InferenceSession(str(folder / "sig_bak_ovr.onnx"), options, providers=providers)
        self._p808 = ort.InferenceSession(str(folder / "model_v8.onnx"), options, providers=providers)

    def score(self, wav: np.ndarray, sample_rate: int) -> DnsmosScore:
        audio = np.clip(resample(np.asarray(wav, dtype=np.float32), int(sample_rate), DNSMOS_SAMPLE_RATE), -1.0, 1.0)
        if not np.any(audio):
            return DnsmosScore(1.0, 1.0, 1.0, 1.0)
        window = int(_DNSMOS_WINDOW_SECONDS * DNSMOS_SAMPLE_RATE)
        while len(audio) < window:
            audio = np.concatenate([audio, audio])
        hops = int(np.floor(len(audio) / DNSMOS_SAMPLE_RATE) - _DNSMOS_WINDOW_SECONDS) + 1
        rows = []
        for index in range(hops):
            segment = audio[index * DNSMOS_SAMPLE_RATE : index * DNSMOS_SAMPLE_RATE + window]
            if len(segment) < window:
                continue
            raw = self._p835.run(None, {"input_1": segment[None].astype(np.float32)})[0][0]
            p808 = self._p808.run(None, {"input_1": _p808_features(segment[:-160])[None]})[0][0][0]
            rows.append([_P835_POLY[k](float(v)) for k, v in zip(("sig", "bak", "ovrl"), raw)] + [float(p808)])
        sig, bak, ovrl, p808 = np.mean(np.asarray(rows), axis=0)
        return DnsmosScore(float(sig), float(bak), float(ovrl), float(p808))


def _p808_features(audio: np.ndarray) -> np.ndarray:
    """120-band log mel of 20 ms frames hopped by 10 ms, as DNSMOS' P.808 model was trained on."""
    import librosa  # ~3.5 s to import; only a quality check pays it

    mel = librosa.feature.melspectrogram(y=audio, sr=DNSMOS_SAMPLE_RATE, n_fft=321, hop_length=160, n_mels=120)
    return ((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T.astype(np.float32)


def dnsmos_model_folder() -> Path:
    spec = importlib.util.find_spec("speechmos")
    if spec is None or not spec.submodule_search_locations:
        raise QualityModelUnavailable("the DNSMOS check needs the speechmos package (its ONNX models): pip install 'f5app[eval]'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "dnsmos_models"
    missing = [n for n in ("sig_bak_ovr.onnx", "model_v8.onnx") if not (folder / n).is_file()]
    if missing:
        raise QualityModelUnavailable(f"speechmos at {folder.parent} lacks {', '.join(missing)}; reinstall speechmos")
    return folder


@dataclass(frozen=True)
class SpeakerSpread:
    windows: int
    spread: float  # 1 - lowest similarity of a window to the others' mean; 0 with fewer than 2 windows

    def to_dict(self) -> dict[str, Any]:
        return {"windows": self.windows, "spread": round(self.spread, 4)}


def speaker_spread(embedder: "SpeakerEmbedder", wav: np.ndarray, sample_rate: int, window: float = 3.0) -> SpeakerSpread:
    """How far the voice of any ``window``-second piece (hopped by half a window) is from the rest of the clip's."""
    size, hop = int(window * sample_rate), max(1, int(window * sample_rate / 2))
    pieces = [wav[start : start + size] for start in range(0, max(1, len(wav) - size + 1), hop)]
    embeddings = []
    for piece in pieces:
        try:
            embeddings.append(embedder.embed(piece, sample_rate))
        except ValueError:  # a silent window holds no voice
            continue
    if len(embeddings) < 2:
        return SpeakerSpread(len(embeddings), 0.0)
    stack = np.stack(embeddings)
    worst = 1.0
    for index in range(len(stack)):
        others = np.delete(stack, index, axis=0).mean(axis=0)
        worst = min(worst, similarity(stack[index], others))
    return SpeakerSpread(len(embeddings), float(1.0 - worst))
