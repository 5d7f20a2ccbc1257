"""The Synthesizer API: build once (checkpoint, model, vocoder), synthesise many texts.

The maths follows upstream ``f5_tts.infer.utils_infer.infer_process``/``infer_batch_process``
(reference loudness normalisation, duration from the text-length ratio and ``speed``, chunks
sized from the reference, cross-fade) without importing that module, which costs ~8 s and
pulls transformers and pydub.

    synth = Synthesizer.from_config(cfg, run_dir)
    wav, sr = synth.synthesize("Hello there.", ref_audio="me.wav", ref_text="What I say in me.wav.")
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from f5app.audio.vocoder import check_vocoder_matches_mel, load_vocoder
from f5app.ckpt.adapt import adapt_cached, load_into
from f5app.ckpt.reader import CheckpointReader, ResolvedCheckpoint, UnreadableWeights, WeightsRead
from f5app.ckpt.resolve import resolve_and_load
from f5app.ckpt.schema import DamagedCheckpoint
from f5app.config import InferConfig, ModelConfig, VoiceConfig, model_config_from_dict, to_settings
from f5app.data.vocab import read_vocab, upstream_vocab_path
from f5app.devices import pick_device
from f5app.errors import first_line
from f5app.inference.adapters import OneBase, apply_one_base, read_one_base, resolve_voice_adapters
from f5app.inference.upstream_import import register_lazy_f5_model_package
from f5app.model import build_cfm
from f5app.audio.silence import remove_long_silences
from f5app.inference.chunking import CrossFadeStream, cross_fade
from f5app.inference.defaults import DefaultReference, default_reference
from f5app.inference.duration import SpeakingRate, TimedWord, rate_from_duration, rate_from_words
from f5app.inference.errors import InferenceInputError
from f5app.inference.reference import TAIL_SILENCE_SECONDS, PreparedReference, Reference, ReferencePreparer, default_preparer
from f5app.inference.verify import build_verifier
from f5app.inference.text import (
    MAIN_VOICE,
    apply_unknown_policy,
    chunk_text,
    first_sentence,
    max_chunk_bytes,
    normalize_ref_text,
    split_voices,
    to_tokens,
)
from f5app.speech.asr import Transcriber
from f5app.text.normalise import Normaliser, build_normaliser, recorded_language

if TYPE_CHECKING:
    import torch

    from f5app.audio.vocoder import Vocoder
    from f5app.ckpt.schema import CheckpointMetadata
    from f5app.inference.adapters import AdapterVoices
    from f5app.inference.sampling import Network

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    """Per-call knobs; ``Synthesizer.synthesize(**overrides)`` replaces any of them for one call."""

    # The defaults are InferConfig's, so the Python API and the command line agree.
    nfe_step: int = InferConfig.nfe_step
    cfg_strength: float = InferConfig.cfg_strength
    sway_sampling_coef: float = InferConfig.sway_sampling_coef
    speed: float = InferConfig.speed
    cross_fade: float = InferConfig.cross_fade
    seed: Optional[int] = InferConfig.seed
    unknown_chars: str = InferConfig.unknown_chars
    target_rms: float = InferConfig.target_rms
    max_ref_seconds: float = InferConfig.max_ref_seconds
    progress: bool = InferConfig.progress
    fix_duration: Optional[float] = InferConfig.fix_duration
    remove_silence: bool = InferConfig.remove_silence

    @classmethod
    def from_infer_config(cls, cfg: InferConfig) -> "SamplingSettings":
        names = {f.name for f in fields(cls)}
        settings = cls(**{name: getattr(cfg, name) for name in names if hasattr(cfg, name)})
        return replace(settings, nfe_step=preset_steps(cfg.steps)) if cfg.steps is not None else settings

    def validated(self) -> "SamplingSettings":
        """Every number inside the range that synthesis can honour; else one line naming the key."""
        for name, (low, high, whole) in _SETTING_RANGES.items():
            value = getattr(self, name)
            if name in ("seed", "fix_duration") and value is None:
                continue
            check_range(name, value, low, high, whole=whole)
        if self.unknown_chars not in ("drop", "error"):
            raise InferenceInputError(f"unknown_chars={self.unknown_chars!r} is not an option; use drop or error")
        return self


#: key -> (lowest, highest, integer?) accepted. Beyond these, synthesis asks for absurd memory or
#: time (speed=1e-9: a 10^12-frame duration; nfe_step=10^9 steps), torch refuses the number
#: (seed=2**70: "Overflow when unpacking long"), or the arithmetic turns to NaN.
_SETTING_RANGES: dict[str, tuple[float, float, bool]] = {
    "nfe_step": (1, 1000, True),
    "cfg_strength": (0.0, 100.0, False),
    "sway_sampling_coef": (-10.0, 10.0, False),
    "speed": (0.1, 10.0, False),
    "cross_fade": (0.0, 10.0, False),  # seconds
    "seed": (0, 2**63 - 1, True),  # torch.manual_seed takes 64 bits; chunk i uses seed + i
    "target_rms": (1e-4, 1.0, False),
    "max_ref_seconds": (1.0, 30.0, False),
    "fix_duration": (0.1, 60.0, False),  # seconds, reference included (upstream's meaning)
}


#: ``steps=NAME``: the step counts upstream tunes its EPSS grids for (7, 16: dense near t = 0,
#: f5app/inference/sampling.py) and its default (32). Cost is proportional to the count
#: (docs/benchmarks.md has the measured speed of each).
STEP_PRESETS = {"fast": 7, "balanced": 16, "quality": 32}


def preset_steps(name: str) -> int:
    if name not in STEP_PRESETS:
        raise InferenceInputError(f"steps={name} is not a preset; use {', '.join(STEP_PRESETS)} (or set nfe_step=N)")
    return STEP_PRESETS[name]


def check_range(name: str, value: Any, low: float, high: float, *, whole: bool = False) -> None:
    """:class:`InferenceInputError` naming ``name`` unless ``value`` is a number in ``[low, high]``."""
    kind = "an integer" if whole else "a number"
    ok_type = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not (low <= value <= high):  # NaN fails the comparison
        span = f"{low} to {high}" if whole else f"{low:g} to {high:g}"
        raise InferenceInputError(f"{name}={value!r:.40} is out of range: use {kind} from {span}")


@dataclass
class Synthesis:
    """One synthesis: the audio plus what was done to produce it."""

    wav: np.ndarray  # float32 mono
    sample_rate: int
    mel: np.ndarray  # (n_mels, frames) of the generated speech, chunks concatenated
    chunks: list[tuple[str, str]]  # (voice, text) in order
    seed: int
    dropped_chars: list[str] = field(default_factory=list)
    normalized_text: str = ""  # the text as spoken (text_norm), voice tags removed
    chunk_waves: list[np.ndarray] = field(default_factory=list)  # each chunk's audio before cross-fading
    verification: list[Any] = field(default_factory=list)  # verify=asr: each chunk's Draws (inference/verify.py)

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass
class _Voice:
    prepared: PreparedReference
    tokens: list[str]  # reference transcript as model tokens
    rms: float
    rate: SpeakingRate  # how fast this voice speaks (f5app/inference/duration.py)

    @property
    def reference(self):  # noqa: ANN201
        return self.prepared.reference


@dataclass
class Synthesizer:
    cfm: Any  # upstream f5_tts.model.CFM, eval mode, on device
    vocoder: "Vocoder"
    vocab: list[str]
    model_config: ModelConfig
    device: str
    dtype: "torch.dtype"
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    default_voice: Optional[DefaultReference] = None
    voices: dict[str, VoiceConfig] = field(default_factory=dict)  # extra voices for [NAME] tags
    source: str = ""  # what was loaded, for logs
    metadata: Optional["CheckpointMetadata"] = None  # the checkpoint's record (f5app checkpoints): its recorded settings
    max_batch: int = 1  # chunks synthesised together in one padded batch (1: one after another)
    adapters: Optional["AdapterVoices"] = None  # LoRA voices on one base (inference/adapters.py)
    network: Optional["Network"] = None  # how the DiT runs (inference/precision.py); None: fp32
    normaliser: Normaliser = field(default_factory=lambda: Normaliser("none", None))  # text_norm=
    rate_transcriber: Optional["Transcriber"] = None  # word timestamps of references (speaking_rate=asr)
    # Reference preparation (inference/reference.py); default: no checks, the bundled tiny.en for
    # references without a transcript or too long to use whole.
    references: ReferencePreparer = field(default_factory=lambda: default_preparer())
    verifier: Any = None  # f5app.inference.verify.ChunkVerifier: every chunk checked (verify=asr); None: off
    # Prepared references, most recently used last; a long-lived server bounds it (server.reference_cache_size).
    reference_cache_size: int = 16
    _voice_cache: "OrderedDict[tuple, _Voice]" = field(default_factory=OrderedDict, repr=False)
    _voice_cache_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ---------------------------------------------------------------- building

    def with_normaliser(self, normaliser: Normaliser) -> "Synthesizer":
        """The same loaded model speaking another language's words (eval.sets): its own reference cache,
        since a prepared reference holds its transcript as the old normaliser said it."""
        return replace(self, normaliser=normaliser, _voice_cache=OrderedDict(), _voice_cache_lock=threading.Lock())

    @classmethod
    def from_config(cls, cfg: InferConfig, run_dir: str | Path, references: Optional[ReferencePreparer] = None) -> "Synthesizer":
        """Resolve the checkpoint (``cfg.ckpt``), build and load the model, build the vocoder.

        ``references``: a preparer to share (the server's uploads use the same models); default:
        one from ``cfg.reference``, ``cfg.asr`` and ``cfg.speaker``.
        """
        from f5app.inference.precision import pick_dtype, prepare_network  # deferred: imports torch (1.9 s, NOTES.md)

        # Everything the user typed is checked before seconds go into loading weights.
        settings = SamplingSettings.from_infer_config(cfg).validated()
        rate_from_asr = speaking_rate_from_asr(cfg)
        voices = parse_voices(cfg.voices)
        require_files([(f"voices.{name}.ref_audio", v.ref_audio) for name, v in voices.items()])
        device = pick_device(cfg.device)
        voice_adapters = resolve_voice_adapters(voices, cfg.ckpt) if any(v.adapter for v in voices.values()) else {}

        def read(chosen: ResolvedCheckpoint) -> Any:
            # Runs inside resolution: damage found while reading quarantines the choice (this run's).
            check_vocoder_matches_mel(cfg.vocoder.name, _model_config(chosen, cfg).mel)
            try:
                if chosen.base is not None or voice_adapters:
                    return read_one_base(chosen, voice_adapters, _model_config(chosen, cfg), cfg.ckpt.use_ema)
                return read_weights(chosen, cfg.ckpt.use_ema)
            except UnreadableWeights as error:
                raise DamagedCheckpoint(str(error)) from None

        resolution, sections = resolve_and_load(cfg.ckpt, purpose="infer", run_dir=Path(run_dir), model=cfg.model, load=read)
        chosen = resolution.chosen
        if chosen is None or sections is None:  # resolve raises when nothing fits; this guards a changed contract
            raise InferenceInputError(f"no checkpoint to load for ckpt={cfg.ckpt.name}")
        model_config = _model_config(chosen, cfg)
        register_lazy_f5_model_package()
        if isinstance(sections, OneBase):
            cfm, vocab, adapters = apply_one_base(sections, model_config)
        else:
            cfm, vocab, adapters = model_with(sections, model_config), sections.vocab, None
        dtype = pick_dtype(cfg.dtype, device, model_config.mel.mel_spec_type)
        cfm = cfm.to(device=device).eval()  # the mel front end stays fp32; prepare_network casts the DiT
        network = prepare_network(cfm, dtype, device, quantize=cfg.quantize, compile=cfg.compile)
        vocoder = load_vocoder(cfg.vocoder, model_config.mel, device=device)
        normaliser = build_normaliser(cfg.text_norm, recorded_language(chosen.metadata.config if chosen.metadata else None))
        if references is None:
            references = ReferencePreparer(cfg.reference, cfg.asr, cfg.speaker, device=device)
        verifier = build_verifier(cfg.verify, references) if cfg.verify.name != "off" else None
        return cls(
            cfm=cfm,
            vocoder=vocoder,
            vocab=vocab,
            model_config=model_config,
            device=device,
            dtype=dtype,
            settings=settings,
            default_voice=default_reference(chosen.metadata),
            voices=voices,
            source=f"{chosen.source}: {chosen.path}" + (f" on base {chosen.base.path}" if chosen.base is not None else ""),
            metadata=chosen.metadata,
            max_batch=pick_max_batch(cfg.max_batch, device),
            adapters=adapters,
            network=network,
            normaliser=normaliser,
            rate_transcriber=references.transcriber() if rate_from_asr else None,
            references=references,
            verifier=verifier,
        )

    # ---------------------------------------------------------------- synthesis

    @property
    def sample_rate(self) -> int:
        return self.model_config.mel.target_sample_rate

    def synthesize(
        self, text: str, ref_audio: str | Path | None = None, ref_text: str | None = None, **overrides: Any
    ) -> tuple[np.ndarray, int]:
        """Speak ``text`` in the reference's voice; returns ``(float32 mono wav, sample_rate)``.

        ``overrides`` replace :class:`SamplingSettings` fields for this call (``seed=1``, ``speed=0.9``…).
        """
        result = self.generate(text, ref_audio, ref_text, **overrides)
        return result.wav, result.sample_rate

    def generate(
        self, text: str, ref_audio: str | Path | None = None, ref_text: str | None = None, **overrides: Any
    ) -> Synthesis:
        """Like :meth:`synthesize`, with the mel, chunks, seed and dropped characters."""
        plan = self.plan(text, ref_audio, ref_text, **overrides)
        rendered = self.render(plan.chunks, progress=plan.settings.progress)
        return plan.assemble(rendered, self.sample_rate)

    def stream(
        self, text: str, ref_audio: str | Path | None = None, ref_text: str | None = None, **overrides: Any
    ) -> Iterator[np.ndarray]:
        """Speak ``text`` piece by piece: the first (short) chunk alone, so audio starts early, then the rest batched.

        The pieces concatenated are the cross-faded audio of :meth:`generate` with ``first_chunk_small=True``.
        """
        plan = self.plan(text, ref_audio, ref_text, first_chunk_small=True, **overrides)
        joiner = CrossFadeStream(self.sample_rate, plan.settings.cross_fade)
        for start, end in plan.stream_rounds():
            for piece in self.render(plan.chunks[start:end]):
                yield joiner.push(piece.wave)
        yield joiner.finish()

    def plan(
        self,
        text: str,
        ref_audio: str | Path | None = None,
        ref_text: str | None = None,
        first_chunk_small: bool = False,
        **overrides: Any,
    ) -> "SpeechPlan":
        """Check the input and cut it into chunks (voice, text, speed, seed) without running the model.

        ``first_chunk_small``: the first chunk is the first sentence (clauses of it when it is
        longer than a quarter of the usual chunk), so a stream's first audio comes after a short
        synthesis; the rest is chunked as usual.
        """
        settings = self._settings_with(overrides)
        if text is None or not text.strip():
            raise InferenceInputError("text is empty; pass text=\"something to say\" or text_file=FILE")
        voices = {**self.voices, MAIN_VOICE: self._main_voice(ref_audio, ref_text)}
        segments = split_voices(text, set(voices))
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)

        pieces: list[tuple[str, _Voice, str, float]] = []  # (voice name, voice, chunk text, speed)
        dropped: list[str] = []
        spoken_segments: list[str] = []
        for segment in segments:
            config = voices[segment.voice]
            voice = self._voice(config.ref_audio, config.ref_text, settings)
            check_fix_duration(settings.fix_duration, voice.reference)
            speed = config.speed if config.speed is not None else settings.speed
            spoken = self.normaliser.normalise(segment.text)
            spoken_segments.append(spoken)
            _, missing = apply_unknown_policy(
                to_tokens(spoken, self._vocab_map), self._vocab_map, settings.unknown_chars, "text"
            )
            dropped += [c for c in missing if c not in dropped]
            kept_text = " ".join("".join(ch for ch in spoken if ch not in missing).split())
            max_bytes = max_chunk_bytes(voice.reference.text, voice.reference.seconds, speed)
            if first_chunk_small and not pieces:
                first, rest = first_sentence(kept_text, max(1, max_bytes // 4))
                chunks = [first] + chunk_text(rest, max_bytes)
            else:
                chunks = chunk_text(kept_text, max_bytes)
            pieces += [(segment.voice, voice, chunk, speed) for chunk in chunks if chunk.strip()]
        if dropped:
            log.warning("dropped characters missing from the model's vocabulary: %s", " ".join(repr(c) for c in dropped))
        if not pieces:
            raise InferenceInputError("nothing left to say: every character of the text is missing from the vocabulary")
        chunks = [
            ChunkJob(name, voice, chunk, replace(settings, speed=speed), seed + index)
            for index, (name, voice, chunk, speed) in enumerate(pieces)
        ]
        return SpeechPlan(chunks=chunks, seed=seed, settings=settings, dropped_chars=dropped,
                          normalized_text=" ".join(spoken_segments))

    def render(self, chunks: Sequence["ChunkJob"], progress: bool = False) -> list["RenderedChunk"]:
        """Synthesise ``chunks`` (of one text or of several requests), in order.

        Chunks that share the sampling knobs run as one padded batch through ``CFM.sample``, at
        most ``max_batch`` at a time (1: one after another). Each chunk keeps its own seed, and the
        padding is masked out of attention, so a chunk sounds the same batched or alone (within
        float rounding: the padded sums run in another order). With a ``verifier`` (verify=asr)
        each chunk is then checked and, when it misses, drawn again alone with the next seed.
        """
        results: list[Optional[RenderedChunk]] = [None] * len(chunks)
        groups: dict[tuple, list[int]] = {}
        for index, chunk in enumerate(chunks):
            # with LoRA voices, one batch runs with one adapter: a chunk's voice joins its key
            key = (chunk.batch_key, chunk.voice_name if self.adapters is not None else None)
            groups.setdefault(key, []).append(index)
        batches: list[list[int]] = []
        for indices in groups.values():
            # Neighbours in length share a batch, so little of it is padding.
            indices.sort(key=lambda i: self._frames(chunks[i])[1])
            size = max(1, self.max_batch)
            batches += [indices[start : start + size] for start in range(0, len(indices), size)]
        for batch in self._progress(batches, progress and len(chunks) > 1):
            for index, rendered in zip(batch, self._render_batch([chunks[i] for i in batch])):
                results[index] = rendered
        if self.verifier is not None:
            results = [
                self.verifier.check(chunk, first, lambda job: self._render_batch([job])[0], self.sample_rate)
                for chunk, first in zip(chunks, results)
            ]
        return [r for r in results if r is not None]

    def _frames(self, chunk: "ChunkJob") -> tuple[int, int]:
        """(reference frames, total frames) of a chunk: the reference plus the text at the voice's rate.

        ``fix_duration`` sets the total instead, reference included, for every chunk (as upstream).
        """
        hop = self.model_config.mel.hop_length
        ref_frames = len(chunk.voice.reference.wav) // hop
        if chunk.settings.fix_duration is not None:
            return ref_frames, int(chunk.settings.fix_duration * self.sample_rate / hop)
        seconds = chunk.voice.rate.seconds_for(chunk.text, chunk.settings.speed)
        return ref_frames, ref_frames + max(1, round(seconds * self.sample_rate / hop))

    def _render_batch(self, chunks: list["ChunkJob"]) -> list["RenderedChunk"]:
        import torch  # deferred: torch costs 1.9 s (NOTES.md)
        from torch.nn.utils.rnn import pad_sequence  # deferred: torch costs 1.9 s (NOTES.md)

        from f5app.inference.sampling import Network, sample  # deferred: imports torch (1.9 s, NOTES.md)

        settings = chunks[0].settings
        if self.adapters is not None:
            self.adapters.use(chunks[0].voice_name)
        audios, tokens, ref_frames, durations = [], [], [], []
        for chunk in chunks:
            audio = torch.from_numpy(chunk.voice.reference.wav)[None].to(self.device)
            if chunk.voice.rms < settings.target_rms:
                audio = audio * settings.target_rms / chunk.voice.rms
            audios.append(audio)
            chunk_tokens = chunk.voice.tokens + to_tokens(chunk.text, self._vocab_map)
            tokens.append([t for t in chunk_tokens if t in self._vocab_map])
            frames, duration = self._frames(chunk)
            ref_frames.append(frames)
            durations.append(duration)
        with torch.inference_mode():
            if len(chunks) == 1:
                cond, lens, duration = audios[0], None, durations[0]
                masked = contextlib.nullcontext()
                ends: list[Optional[int]] = [None]
            else:
                mels = [self.cfm.mel_spec(audio)[0].permute(1, 0) for audio in audios]  # (frames, n_mels) each
                lens = torch.tensor([len(m) for m in mels], device=self.device)
                cond = pad_sequence(mels, batch_first=True)
                # the sampler lengthens a duration shorter than the text or the prompt; each row ends there.
                ends = [max(max(len(t), len(m)) + 1, d) for t, m, d in zip(tokens, mels, durations)]
                duration = torch.tensor(durations, device=self.device)
                masked = _padding_masked_in_attention(self.cfm)
            with masked:
                generated = sample(
                    self.cfm,
                    cond,
                    tokens,
                    duration,
                    lens=lens,
                    steps=settings.nfe_step,
                    cfg_strength=settings.cfg_strength,
                    sway_sampling_coef=settings.sway_sampling_coef,
                    seeds=[chunk.seed for chunk in chunks],
                    network=self.network or Network(),
                )
            generated = generated.to(torch.float32)
            rendered = []
            for row, (chunk, frames) in enumerate(zip(chunks, ref_frames)):
                mel = generated[row : row + 1, frames : ends[row], :].permute(0, 2, 1)
                torch.manual_seed(chunk.seed)  # Griffin-Lim starts from random phases
                wave = self.vocoder.decode(mel)
                if chunk.voice.rms < settings.target_rms:
                    wave = wave * chunk.voice.rms / settings.target_rms
                rendered.append(RenderedChunk(wave.squeeze(0).float().cpu().numpy(), mel[0].cpu().numpy()))
        return rendered

    # ---------------------------------------------------------------- helpers

    @property
    def _vocab_map(self) -> dict[str, int]:
        return self.cfm.vocab_char_map

    def _settings_with(self, overrides: dict[str, Any]) -> SamplingSettings:
        unknown = sorted(set(overrides) - {f.name for f in fields(SamplingSettings)})
        if unknown:
            allowed = ", ".join(f.name for f in fields(SamplingSettings))
            raise TypeError(f"unknown synthesis option(s) {', '.join(unknown)}; allowed: {allowed}")
        return replace(self.settings, **overrides).validated()

    def _main_voice(self, ref_audio: str | Path | None, ref_text: str | None) -> VoiceConfig:
        if ref_audio is not None:  # without ref_text the reference is transcribed (inference/reference.py)
            return VoiceConfig(ref_audio=str(ref_audio), ref_text=ref_text or "")
        if ref_text is not None:
            raise InferenceInputError("ref_text is set but ref_audio is not; pass both (or neither, for the default voice)")
        if MAIN_VOICE in self.voices:
            return self.voices[MAIN_VOICE]
        if self.default_voice is None:
            raise InferenceInputError("no reference voice: pass ref_audio=FILE and ref_text=\"its transcript\"")
        log.info("reference: %s (%s)", self.default_voice.audio, self.default_voice.why)
        return VoiceConfig(ref_audio=str(self.default_voice.audio), ref_text=self.default_voice.text)

    def _voice(self, ref_audio: str, ref_text: str, settings: SamplingSettings) -> _Voice:
        # The file's size and mtime are part of the key: a long-lived process (the server) sees a
        # reference replaced under the same name (a voice deleted and uploaded again) afresh.
        try:
            stat = Path(ref_audio).expanduser().stat()
            version: tuple = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            version = ()
        key = (str(ref_audio), ref_text, *version)
        with self._voice_cache_lock:
            if key in self._voice_cache:
                self._voice_cache.move_to_end(key)
                return self._voice_cache[key]
        prepared = self.references.prepare(ref_audio, ref_text, self.sample_rate, settings.max_ref_seconds)
        prepared.log_summary(str(ref_audio))
        spoken = normalize_ref_text(self.normaliser.normalise(prepared.reference.text))
        prepared = replace(prepared, reference=replace(prepared.reference, text=spoken))
        reference = prepared.reference
        tokens, _ = apply_unknown_policy(
            to_tokens(reference.text, self._vocab_map), self._vocab_map, "drop", "ref_text"
        )
        rms = float(np.sqrt(np.mean(reference.wav.astype(np.float64) ** 2)))
        rate = self._speaking_rate(reference)
        log.info("speaking rate of %s: %s", reference.path, rate.describe())
        voice = _Voice(prepared=prepared, tokens=tokens, rms=max(rms, 1e-8), rate=rate)
        with self._voice_cache_lock:
            self._voice_cache[key] = voice
            while len(self._voice_cache) > max(1, self.reference_cache_size):
                self._voice_cache.popitem(last=False)
        return voice

    def set_reference_cache_size(self, size: int) -> None:
        with self._voice_cache_lock:
            self.reference_cache_size = size
            while len(self._voice_cache) > max(1, size):
                self._voice_cache.popitem(last=False)

    def forget_reference(self, ref_audio: str | Path) -> int:
        """Drop the prepared copies of ``ref_audio`` (a voice deleted or replaced); returns how many."""
        with self._voice_cache_lock:
            doomed = [key for key in self._voice_cache if key[0] == str(ref_audio)]
            for key in doomed:
                del self._voice_cache[key]
        return len(doomed)

    def reference_cache_entries(self) -> int:
        return len(self._voice_cache)

    def _speaking_rate(self, reference: Reference) -> SpeakingRate:
        """From the reference's word timestamps when a transcriber is set, else from its duration."""
        speech = reference.wav[: max(1, len(reference.wav) - int(TAIL_SILENCE_SECONDS * self.sample_rate))]
        by_duration = rate_from_duration(reference.text, len(speech) / self.sample_rate)
        if self.rate_transcriber is None:
            return by_duration
        words = self.rate_transcriber.transcribe(speech, self.sample_rate, word_timestamps=True).words
        return rate_from_words([TimedWord(self.normaliser.normalise(w.text), w.start, w.end) for w in words], by_duration)

    def prepared_references(self) -> dict[str, dict[str, Any]]:
        """Each reference prepared so far (path -> how it was prepared and judged), for result files."""
        return {str(voice.reference.path): voice.prepared.to_dict() for voice in self._voice_cache.values()}

    def _progress(self, batches: list, show: bool) -> Any:
        if not show:
            return batches

        return tqdm(batches, desc="batches of chunks", unit="batch")


@dataclass(frozen=True)
class ChunkJob:
    """One chunk to synthesise: a piece of text in one voice, with its own settings and seed."""

    voice_name: str
    voice: _Voice
    text: str
    settings: SamplingSettings
    seed: int

    @property
    def batch_key(self) -> tuple:
        """Chunks with the same key can share one ``CFM.sample`` call."""
        s = self.settings
        return (s.nfe_step, s.cfg_strength, s.sway_sampling_coef, s.target_rms)


@dataclass
class RenderedChunk:
    wave: np.ndarray  # float32 mono
    mel: np.ndarray  # (n_mels, frames)
    verification: Any = None  # verify=asr: the chunk's Draws (f5app.inference.verify)


@dataclass
class SpeechPlan:
    """A text cut into chunks, ready for :meth:`Synthesizer.render`."""

    chunks: list[ChunkJob]
    seed: int
    settings: SamplingSettings
    dropped_chars: list[str] = field(default_factory=list)
    normalized_text: str = ""  # what the chunks say, joined (the text after text_norm)

    def stream_rounds(self) -> list[tuple[int, int]]:
        """Chunk ranges to render in turn when streaming: the first chunk alone, then the rest."""
        return [(0, 1)] + ([(1, len(self.chunks))] if len(self.chunks) > 1 else [])

    def assemble(self, rendered: list[RenderedChunk], sample_rate: int) -> Synthesis:
        wav = cross_fade([r.wave for r in rendered], sample_rate, self.settings.cross_fade)
        if self.settings.remove_silence:
            wav = remove_long_silences(wav, sample_rate)
        return Synthesis(
            wav=wav,
            sample_rate=sample_rate,
            mel=np.concatenate([r.mel for r in rendered], axis=1),
            chunks=[(c.voice_name, c.text) for c in self.chunks],
            seed=self.seed,
            dropped_chars=self.dropped_chars,
            normalized_text=self.normalized_text,
            chunk_waves=[r.wave for r in rendered],
            verification=[r.verification for r in rendered if r.verification is not None],
        )


@contextlib.contextmanager
def _padding_masked_in_attention(cfm: Any) -> Iterator[None]:
    """Mask padded frames out of attention for one batched call.

    Released F5-TTS configs have ``attn_mask_enabled=False`` (one text at a time needs no mask);
    in a padded batch the short items would then attend to the padding and sound different.
    Upstream already masks the padding everywhere else (text embedding, convolutional position
    embedding) when given per-item lengths.
    """
    # The flag lives on each Attention's processor, a plain object (not a submodule).
    processors = [m.processor for m in cfm.modules() if hasattr(getattr(m, "processor", None), "attn_mask_enabled")]
    before = [m.attn_mask_enabled for m in processors]
    for module in processors:
        module.attn_mask_enabled = True
    try:
        yield
    finally:
        for module, value in zip(processors, before):
            module.attn_mask_enabled = value


# ---------------------------------------------------------------------- config edges



def parse_voices(raw: dict[str, Any]) -> dict[str, VoiceConfig]:
    """``voices`` from the config (plain dicts) as VoiceConfig; a bad entry is an input error naming it."""

    voices = {}
    for name, entry in (raw or {}).items():
        if not str(name).isidentifier():
            raise InferenceInputError(f"voice name {name!r} must be a single word (letters, digits, _) to use it as [{name}]")
        try:
            voices[str(name)] = to_settings(entry, VoiceConfig)
        except (OmegaConfBaseException, ValueError) as exc:
            raise InferenceInputError(
                f"voices.{name}: {first_line(exc)}; give +voices.{name}.ref_audio=FILE +voices.{name}.ref_text=\"...\""
            ) from None
        if voices[str(name)].speed is not None:
            low, high, _ = _SETTING_RANGES["speed"]
            check_range(f"voices.{name}.speed", voices[str(name)].speed, low, high)
    return voices


def check_fix_duration(fix_duration: Optional[float], reference: Reference) -> None:
    """``fix_duration`` counts the reference (upstream's meaning): it must leave time for speech."""
    if fix_duration is not None and fix_duration <= reference.seconds:
        raise InferenceInputError(
            f"fix_duration={fix_duration:g} s is not longer than the reference {reference.path.name} "
            f"({reference.seconds:.2f} s); it is the total, reference included: use more than {reference.seconds:.2f}"
        )


def speaking_rate_from_asr(cfg: InferConfig) -> bool:
    """Whether each voice's speaking rate comes from the asr= model's word timestamps (else from its duration).

    ``speaking_rate=auto`` uses the asr= model only when it needs no download (``asr=tiny_en``,
    bundled; or ``asr.model`` naming a local folder); ``asr`` always does; ``duration`` never.
    The model is the reference preparer's, loaded once for both.
    """
    choice = cfg.speaking_rate
    if choice not in ("auto", "asr", "duration"):
        raise InferenceInputError(f"speaking_rate={choice} is not an option; use auto, asr or duration")
    local = cfg.asr.name == "tiny_en" or Path(cfg.asr.model).expanduser().is_dir()
    if choice == "duration" or (choice == "auto" and not local):
        log.info("speaking rate: from each reference's duration (speaking_rate=%s; asr=tiny_en learns it from word timestamps)", choice)
        return False
    log.info("speaking rate: from word timestamps of %s (speaking_rate=%s)", cfg.asr.name, choice)
    return True


def require_files(named_paths: list[tuple[str, str | Path | None]]) -> None:
    """Refuse early, naming the option, when an input file does not exist."""
    for option, path in named_paths:
        if path is not None and not Path(path).expanduser().is_file():
            raise InferenceInputError(f"{option}={path} does not exist")


# ---------------------------------------------------------------------- model, device, dtype


def _model_config(chosen: ResolvedCheckpoint, cfg: InferConfig) -> ModelConfig:
    """The architecture the checkpoint records (ours, an export's sidecar), else the configured one."""
    return model_config_from_dict(chosen.model_config) if chosen.model_config else cfg.model


def read_weights(chosen: ResolvedCheckpoint, use_ema: bool = True) -> WeightsRead:
    """The weights resolution chose, with their vocabulary (upstream's when none is beside them).
    Foreign files (community checkpoints with other key layouts) are converted once to canonical
    keys and the cached copy read; our checkpoints and the Hub's released files are read in place."""
    if chosen.kind != "f5app" and chosen.source != "pretrained":
        converted = adapt_cached(chosen.path, use_ema=use_ema)
        log.info("weights: using the adapted copy of %s cached at %s", chosen.path, converted)
        reader = CheckpointReader(converted, vocab_path=chosen.vocab_path)
    else:
        reader = CheckpointReader.of(chosen)
    weights = reader.weights(use_ema=use_ema)
    if weights.vocab is None:
        weights.vocab = read_vocab(upstream_vocab_path())
        log.info("no vocab.txt beside %s; using upstream's pretrained vocabulary (%d tokens)", chosen.path, len(weights.vocab))
    return weights


def model_with(weights: WeightsRead, model_config: ModelConfig) -> Any:
    """The CFM for ``model_config`` holding ``weights`` (applied through the checkpoint adapters)."""
    for note in weights.notes:
        log.info("weights: %s", note)
    cfm = build_cfm(model_config, weights.vocab)
    report = load_into(cfm, weights.state, old_vocab=weights.vocab, new_vocab=weights.vocab)
    for note in report.notes:
        log.info("weights: %s", note)
    return cfm


#: ``max_batch=0`` (auto) per device kind. On this project's 2-core CPU padded batches of chunks
#: were slower than one chunk after another (scripts/bench.py --only serve: a long text's 4 chunks
#: took 79 s in batches of 4 against 31 s one at a time): sampling is compute-bound there, padding
#: adds work and a masked attention takes a slower kernel. GPUs run one chunk far below capacity,
#: which is where batching should pay; not measured yet (no GPU in that task).
AUTO_MAX_BATCH = {"cuda": 8, "mps": 1, "cpu": 1}


def pick_max_batch(max_batch: int, device: str) -> int:
    if max_batch < 0:
        raise InferenceInputError(f"max_batch={max_batch} must be 0 (auto) or a positive number of chunks")
    return max_batch or AUTO_MAX_BATCH.get(device.split(":")[0], 1)
