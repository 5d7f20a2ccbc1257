"""Speaker similarity (SIM): cosine similarity of speaker embeddings, as upstream's SIM-o.

Embedders (the ``speaker=`` group), each built once with :func:`build_embedder`:

- ``resemblyzer``: Resemblyzer's GE2E encoder; its 17 MB of weights ship inside the package.
- ``wavlm``: a WavLM speaker-verification model with an x-vector head (transformers'
  ``WavLMForXVector``, default ``microsoft/wavlm-base-plus-sv``), fetched cache-first through
  the Hub helper, or read from a local folder.

    embedder = build_embedder(SpeakerConfig(name="resemblyzer"))
    sim = similarity(embedder.embed(generated, 24000), embedder.embed(reference, 24000))

**webrtcvad and setuptools >= 81.** Resemblyzer imports ``webrtcvad``, whose module (2.0.10,
the only release) reads its own version with ``pkg_resources``, which setuptools 81 removed.
:func:`import_resemblyzer` imports webrtcvad with a stand-in ``pkg_resources`` that answers
that one call from ``importlib.metadata``, for the duration of that import only, so any
setuptools works and nothing else sees the stand-in.
"""

from __future__ import annotations

import importlib.metadata
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from f5app.audio.io import resample
from f5app.config import SpeakerConfig
from f5app.devices import pick_device
from f5app.errors import UserError, first_line
from f5app.hub import PretrainedUnavailable, fetch_hub_file

log = logging.getLogger(__name__)

EMBEDDING_SAMPLE_RATE = 16000
EMBEDDING_SIZE = 256  # resemblyzer.hparams.model_embedding_size (the shape of "no windows" before any model loads)
DEFAULT_WAVLM = "microsoft/wavlm-base-plus-sv"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class SpeakerModelUnavailable(UserError):
    """The speaker embedder cannot be loaded (not cached while offline, a bad folder or setting)."""


class SpeakerEmbedder(Protocol):
    name: str
    model: str
    revision: str | None

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """A unit-length float32 embedding of float32 mono ``audio`` at ``sample_rate``."""
        ...

    def describe(self) -> dict[str, Any]: ...


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings, in [-1, 1]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else 0.0


#: ``speaker=none``: no speaker model, so no SIM.
NO_SPEAKER_MODEL = "none"


def build_embedder(cfg: SpeakerConfig | None, device: str = "cpu") -> SpeakerEmbedder | None:
    """Load the embedder ``cfg`` names, or None for no speaker model (``cfg`` None or
    ``speaker=none``: the one place that decides it). ``speaker.device=auto`` takes ``device``
    (the caller's) when present, else the first of cuda, mps, cpu (f5app.devices)."""
    if cfg is None or cfg.name == NO_SPEAKER_MODEL:
        return None
    builder = EMBEDDERS.get(cfg.name)
    if builder is None:
        raise SpeakerModelUnavailable(f"speaker={cfg.name} is not an option; use one of {', '.join(sorted(EMBEDDERS))} or {NO_SPEAKER_MODEL}")
    chosen = pick_device(cfg.device, setting="speaker.device", inherit=device)
    return builder(cfg, chosen)


# ---------------------------------------------------------------------- resemblyzer


def import_resemblyzer() -> Any:
    """``import resemblyzer``, working whether or not setuptools still ships ``pkg_resources``."""
    if "webrtcvad" not in sys.modules and sys.modules.get("pkg_resources") is None:
        _import_webrtcvad_without_pkg_resources()
    try:
        import resemblyzer  # deferred: resemblyzer is optional (the [eval] extra) and loads torch (1.9 s, NOTES.md)
    except ImportError as error:
        raise SpeakerModelUnavailable(f"speaker=resemblyzer needs the resemblyzer package ({error}): pip install 'f5app[eval]'") from None
    return resemblyzer


def _import_webrtcvad_without_pkg_resources() -> None:
    before = sys.modules.get("pkg_resources", _ABSENT)
    stand_in = types.ModuleType("pkg_resources")
    stand_in.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = stand_in
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        pass  # reported by import_resemblyzer with the install hint
    finally:
        if before is _ABSENT:
            sys.modules.pop("pkg_resources", None)
        else:
            sys.modules["pkg_resources"] = before  # type: ignore[assignment]


_ABSENT = object()


@dataclass
class ResemblyzerEmbedder:
    encoder: Any
    preprocess: Callable[[np.ndarray], np.ndarray]  # volume normalisation + silence trimming
    normalize: Callable[[np.ndarray], np.ndarray]  # volume normalisation only
    mel: Callable[[np.ndarray], np.ndarray]  # 16 kHz audio -> (frames, 40) mel power, one frame per mel_hop_samples
    device: str
    target_dbfs: float  # the level embed() brings audio to (resemblyzer.hparams.audio_norm_target_dBFS)
    mel_hop_samples: int  # 16 kHz samples per mel frame (resemblyzer.hparams.mel_window_step)
    name: str = "resemblyzer"
    model: str = "resemblyzer GE2E encoder (pretrained.pt in the package)"
    revision: str | None = None

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = resample(np.asarray(audio, dtype=np.float32), int(sample_rate), EMBEDDING_SAMPLE_RATE)
        if not np.any(np.abs(wav) > 1e-5):
            raise ValueError("audio too short or silent for a speaker embedding (no signal)")
        # Resemblyzer's own preprocessing (volume to -30 dBFS, long silences trimmed by webrtcvad),
        # given 16 kHz audio so it does not resample again.
        trimmed = self.preprocess(wav)
        if len(trimmed) < EMBEDDING_SAMPLE_RATE // 10:
            # The VAD heard no speech (tones, buzz from an early model): embed the clip untrimmed.
            trimmed = self.normalize(wav)
        if len(trimmed) < EMBEDDING_SAMPLE_RATE // 10:
            raise ValueError("audio too short for a speaker embedding (under 0.1 s)")
        return np.asarray(self.encoder.embed_utterance(trimmed), dtype=np.float32)

    def embed_windows(self, pieces: list[np.ndarray], sample_rate: int, window_seconds: float, hop_seconds: float,
                      batch_size: int = 128) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each piece of audio: unit-length embeddings of its windows of ``window_seconds``
        every ``hop_seconds``, and each window's start in seconds from the piece's start.

        The mel spectrogram of each piece is computed once and sliced, and the encoder runs on
        the windows of all pieces together in batches (``embed_utterance`` per window computes
        the spectrogram again for each and runs a handful at a time: the LSTM on batches of 8 was
        7x slower per window than on batches of 128). Each window's level is brought to
        resemblyzer's level (``target_dbfs``), as ``embed`` does, so a voice recorded louder in one place is
        the same voice. A piece shorter than a window is one shorter window. Callers bound the
        pieces (a minute or two of speech at once): the STFT takes ~16 bytes per sample.
        """
        import torch  # deferred: torch costs 1.9 s (NOTES.md)

        frames_per_second = EMBEDDING_SAMPLE_RATE / self.mel_hop_samples
        full = max(1, int(round(window_seconds * frames_per_second)))
        hop = max(1, int(round(hop_seconds * frames_per_second)))
        windows: list[np.ndarray] = []  # (frames, 40) mel power at target_dbfs
        starts: list[np.ndarray] = []
        for audio in pieces:
            wav = resample(np.asarray(audio, dtype=np.float32), int(sample_rate), EMBEDDING_SAMPLE_RATE)
            mel = self.mel(wav)  # (frames, 40), power
            # a piece shorter than a window is one shorter window: silence padded after speech
            # moves the LSTM's last state, which is the embedding (0.5 s of speech padded to
            # 1.5 s was 0.5-0.6 alike with the rest of its voice)
            frames = min(full, len(mel))
            first = np.arange(0, max(1, len(mel) - frames + 1), hop)
            energy = np.concatenate([[0.0], np.cumsum(wav.astype(np.float64) ** 2)])
            lo = np.minimum(len(wav), first * self.mel_hop_samples)
            hi = np.minimum(len(wav), lo + frames * self.mel_hop_samples)
            rms = np.sqrt((energy[hi] - energy[lo]) / np.maximum(1, hi - lo))
            # power scales with the square of the amplitude: the mel of the window at target_dbfs
            gains = (10 ** (self.target_dbfs / 20) / np.maximum(rms, 1e-6)) ** 2
            windows += [(mel[f:f + frames] * gain).astype(np.float32) for f, gain in zip(first, gains)]
            starts.append(first / frames_per_second)
        out = np.zeros((len(windows), EMBEDDING_SIZE), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for index, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(index)
        with torch.inference_mode():
            for indices in by_length.values():
                for begin in range(0, len(indices), batch_size):
                    part = indices[begin:begin + batch_size]
                    batch = torch.from_numpy(np.stack([windows[i] for i in part])).to(self.device)
                    out[part] = self.encoder(batch).cpu().numpy()
        results, at = [], 0
        for first in starts:
            results.append((out[at:at + len(first)], first))
            at += len(first)
        return results

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "revision": self.revision, "device": self.device}


def _build_resemblyzer(cfg: SpeakerConfig, device: str) -> ResemblyzerEmbedder:
    resemblyzer = import_resemblyzer()
    import librosa.feature  # noqa: F401  (lazily imported on the first embedding otherwise: ~3.5 s)

    encoder = resemblyzer.VoiceEncoder(device=device, verbose=False)
    version = importlib.metadata.version("resemblyzer")
    log.info("speaker embedder: resemblyzer %s on %s", version, device)
    from resemblyzer import hparams  # deferred: resemblyzer is optional (the [eval] extra) and loads torch (1.9 s, NOTES.md)

    return ResemblyzerEmbedder(
        encoder,
        preprocess=lambda wav: resemblyzer.preprocess_wav(wav),
        normalize=lambda wav: resemblyzer.normalize_volume(wav, hparams.audio_norm_target_dBFS, increase_only=True),
        mel=resemblyzer.audio.wav_to_mel_spectrogram,
        device=device,
        target_dbfs=float(hparams.audio_norm_target_dBFS),
        mel_hop_samples=int(hparams.sampling_rate * hparams.mel_window_step / 1000),
        revision=f"resemblyzer {version}",
    )


# ---------------------------------------------------------------------- WavLM x-vector


@dataclass
class WavLMEmbedder:
    network: Any  # transformers WavLMForXVector, eval mode
    feature_extractor: Any
    device: str
    model: str
    revision: str | None
    name: str = "wavlm"

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch  # deferred: torch costs 1.9 s (NOTES.md)

        wav = resample(np.asarray(audio, dtype=np.float32), int(sample_rate), EMBEDDING_SAMPLE_RATE)
        inputs = self.feature_extractor(wav, sampling_rate=EMBEDDING_SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            embedding = self.network(input_values=inputs["input_values"].to(self.device)).embeddings[0]
        embedding = torch.nn.functional.normalize(embedding.float(), dim=-1)
        return embedding.cpu().numpy().astype(np.float32)

    def describe(self) -> dict[str, Any]:
        import transformers  # deferred: transformers costs 1.6 s (-X importtime, shared machine); only speaker=wavlm needs it

        return {
            "name": self.name, "model": self.model, "revision": self.revision, "device": self.device,
            "library": f"transformers {transformers.__version__}",
        }


def _build_wavlm(cfg: SpeakerConfig, device: str) -> WavLMEmbedder:
    spec = (cfg.model or DEFAULT_WAVLM).strip()
    local = Path(spec).expanduser()
    if local.is_dir():
        folder, model_id, revision = local.resolve(), str(local.resolve()), None
    elif len(spec.split("/")) == 2 and all(spec.split("/")) and not spec.startswith((".", "~")):
        folder, model_id, revision = _fetch_wavlm(spec, cfg)
    else:
        raise SpeakerModelUnavailable(f"speaker.model={spec} is neither a folder nor a Hub id such as {DEFAULT_WAVLM}")
    if not (folder / "config.json").is_file() or not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise SpeakerModelUnavailable(
            f"speaker.model={spec} ({folder}) needs config.json and {' or '.join(WEIGHT_FILES)} (a transformers save_pretrained folder)"
        )
    try:
        from transformers import Wav2Vec2FeatureExtractor, WavLMForXVector  # deferred: transformers costs 1.6 s (-X importtime, shared machine); only speaker=wavlm needs it
    except ImportError:
        raise SpeakerModelUnavailable("speaker=wavlm needs transformers: pip install transformers") from None
    try:
        network = WavLMForXVector.from_pretrained(str(folder), local_files_only=True).to(device).eval()
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        raise SpeakerModelUnavailable(f"cannot load the speaker model {model_id} from {folder}: {first_line(error)}") from None
    if (folder / "preprocessor_config.json").is_file():
        feature_extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    else:  # the settings microsoft/wavlm-base-plus-sv ships
        feature_extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=EMBEDDING_SAMPLE_RATE, padding_value=0.0, do_normalize=False)
    log.info("speaker embedder: WavLM x-vector %s (revision %s) on %s", model_id, revision or "-", device)
    return WavLMEmbedder(network, feature_extractor, device, model_id, revision)


def _fetch_wavlm(repo_id: str, cfg: SpeakerConfig) -> tuple[Path, str, str | None]:
    def fetch(filename: str) -> Path:
        return fetch_hub_file(
            repo_id, filename, cfg.revision, cfg.cache_dir, what="speaker model", setting="speaker.model", repo_setting="speaker.model",
            alternative="give a local folder with speaker.model=DIR, or use speaker=resemblyzer (bundled)",
        )

    def whole_repo(error: PretrainedUnavailable) -> str:
        message = str(error)
        for name in ("config.json", *WEIGHT_FILES):
            message = message.replace(f"hf download {repo_id} {name}", f"hf download {repo_id}")
        return message

    try:
        config = fetch("config.json")
    except PretrainedUnavailable as error:
        raise SpeakerModelUnavailable(whole_repo(error)) from None
    weights_error: PretrainedUnavailable | None = None
    for name in WEIGHT_FILES:
        try:
            fetch(name)
            break
        except PretrainedUnavailable as error:
            weights_error = weights_error or error
    else:
        assert weights_error is not None
        raise SpeakerModelUnavailable(whole_repo(weights_error))
    try:
        fetch("preprocessor_config.json")
    except PretrainedUnavailable:
        pass  # optional: the default feature extractor settings apply
    folder = config.parent
    revision = folder.name if folder.parent.name == "snapshots" else cfg.revision
    return folder, repo_id, revision


#: name -> builder; a new embedder is one function here plus one YAML in conf/speaker/.
EMBEDDERS: dict[str, Callable[[SpeakerConfig, str], SpeakerEmbedder]] = {
    "resemblyzer": _build_resemblyzer,
    "wavlm": _build_wavlm,
}
