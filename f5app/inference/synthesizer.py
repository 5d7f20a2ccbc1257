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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from f5app.config import InferConfig, ModelConfig, VoiceConfig, model_config_from_dict, to_settings
from f5app.inference.chunking import CrossFadeStream, cross_fade
from f5app.inference.defaults import DefaultReference, default_reference
from f5app.inference.errors import InferenceInputError
from f5app.inference.reference import PreparedReference, ReferencePreparer, default_preparer
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

if TYPE_CHECKING:
    import torch

    from f5app.audio.vocoder import Vocoder
    from f5app.ckpt.schema import CheckpointMetadata
    from f5app.inference.adapters import AdapterVoices

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

    @classmethod
    def from_infer_config(cls, cfg: InferConfig) -> "SamplingSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{name: getattr(cfg, name) for name in names if hasattr(cfg, name)})

    def validated(self) -> "SamplingSettings":
        """Every number inside the range that synthesis can honour; else one line naming the key."""
        for name, (low, high, whole) in _SETTING_RANGES.items():
            value = getattr(self, name)
            if name == "seed" and value is None:
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
}


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
    verification: list[Any] = field(default_factory=list)  # verify=asr: each chunk's Draws (inference/verify.py)

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass
class _Voice:
    prepared: PreparedReference
    tokens: list[str]  # reference transcript as model tokens
    rms: float

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
    # Reference preparation (inference/reference.py); default: no checks, the bundled tiny.en for
    # references without a transcript or too long to use whole.
    references: ReferencePreparer = field(default_factory=lambda: default_preparer())
    verifier: Any = None  # f5app.inference.verify.ChunkVerifier: every chunk checked (verify=asr); None: off
    _voice_cache: dict[tuple, _Voice] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- building

    @classmethod
    def from_config(cls, cfg: InferConfig, run_dir: str | Path, references: Optional[ReferencePreparer] = None) -> "Synthesizer":
        """Resolve the checkpoint (``cfg.ckpt``), build and load the model, build the vocoder.

        ``references``: a preparer to share (the server's uploads use the same models); default:
        one from ``cfg.reference``, ``cfg.asr`` and ``cfg.speaker``.
        """
        from f5app.audio.vocoder import check_vocoder_matches_mel, load_vocoder
        from f5app.ckpt.resolve import resolve_and_load
        from f5app.ckpt.adapt import UnreadableWeights
        from f5app.ckpt.schema import MODEL_STATE, DamagedCheckpoint, require_finite, verified_read

        # Everything the user typed is checked before seconds go into loading weights.
        settings = SamplingSettings.from_infer_config(cfg).validated()
        voices = parse_voices(cfg.voices)
        require_files([(f"voices.{name}.ref_audio", v.ref_audio) for name, v in voices.items()])
        device = pick_device(cfg.device)
        voice_adapters = {}
        if any(v.adapter for v in voices.values()):
            from f5app.inference.adapters import resolve_voice_adapters

            voice_adapters = resolve_voice_adapters(voices, cfg.ckpt)

        def load(chosen):
            model_config = model_config_from_dict(chosen.model_config) if chosen.model_config else cfg.model
            check_vocoder_matches_mel(cfg.vocoder.name, model_config.mel)
            # The Hub's released files only need a prefix stripped: read them in place, no second copy.
            foreign = chosen.kind != "f5app" and chosen.source != "pretrained"
            weights_path = _adapted_once(chosen.path, cfg.ckpt.use_ema) if foreign else chosen.path

            def read():
                try:
                    if chosen.base is not None or voice_adapters:
                        from f5app.inference.adapters import load_on_one_base

                        return load_on_one_base(chosen, voice_adapters, model_config, cfg.ckpt.use_ema)
                    return (*load_model(weights_path, chosen.vocab_path, model_config, use_ema=cfg.ckpt.use_ema), None)
                except UnreadableWeights as error:
                    raise DamagedCheckpoint(str(error)) from None

            cfm, vocab, adapters = verified_read(chosen.path, chosen.metadata, read) if chosen.kind == "f5app" else read()
            require_finite({MODEL_STATE: cfm.state_dict()})
            return model_config, cfm, vocab, adapters

        resolution, loaded = resolve_and_load(cfg.ckpt, purpose="infer", run_dir=Path(run_dir), model=cfg.model, load=load)
        chosen = resolution.chosen
        if chosen is None or loaded is None:  # resolve raises when nothing fits; this guards a changed contract
            raise InferenceInputError(f"no checkpoint to load for ckpt={cfg.ckpt.name}")
        model_config, cfm, vocab, adapters = loaded
        dtype = pick_dtype(cfg.dtype, device, model_config.mel.mel_spec_type)
        cfm = cfm.to(device=device, dtype=dtype).eval()
        vocoder = load_vocoder(cfg.vocoder, model_config.mel, device=device)
        if references is None:
            references = ReferencePreparer(cfg.reference, cfg.asr, cfg.speaker, device=device)
        verifier = None
        if cfg.verify.name != "off":
            from f5app.inference.verify import build_verifier

            verifier = build_verifier(cfg.verify, references)
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
        for segment in segments:
            config = voices[segment.voice]
            voice = self._voice(config.ref_audio, config.ref_text, settings)
            speed = config.speed if config.speed is not None else settings.speed
            _, missing = apply_unknown_policy(
                to_tokens(segment.text, self._vocab_map), self._vocab_map, settings.unknown_chars, "text"
            )
            dropped += [c for c in missing if c not in dropped]
            kept_text = " ".join("".join(ch for ch in segment.text if ch not in missing).split())
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
        return SpeechPlan(chunks=chunks, seed=seed, settings=settings, dropped_chars=dropped)

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
        """(reference frames, total frames) of a chunk, as upstream computes its duration."""
        hop = self.model_config.mel.hop_length
        ref_frames = len(chunk.voice.reference.wav) // hop
        ref_bytes = max(1, len(chunk.voice.reference.text.encode("utf-8")))
        gen_bytes = len(chunk.text.encode("utf-8"))
        # Upstream: very short texts get a slower pace so a word is not swallowed.
        speed = 0.3 if gen_bytes < 10 else chunk.settings.speed
        return ref_frames, ref_frames + int(ref_frames / ref_bytes * gen_bytes / speed)

    def _render_batch(self, chunks: list["ChunkJob"]) -> list["RenderedChunk"]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

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
                cond, lens, seed, duration = audios[0], None, chunks[0].seed, durations[0]
                masked = contextlib.nullcontext()
                ends: list[Optional[int]] = [None]
            else:
                mels = [self.cfm.mel_spec(audio)[0].permute(1, 0) for audio in audios]  # (frames, n_mels) each
                lens = torch.tensor([len(m) for m in mels], device=self.device)
                cond = pad_sequence(mels, batch_first=True)
                # CFM.sample lengthens a duration shorter than the text or the prompt; each row ends there.
                ends = [max(max(len(t), len(m)) + 1, d) for t, m, d in zip(tokens, mels, durations)]
                seed = _PerItemSeeds([chunk.seed for chunk in chunks])
                duration = torch.tensor(durations, device=self.device)
                masked = _padding_masked_in_attention(self.cfm)
            with masked:
                generated, _ = self.cfm.sample(
                    cond=cond,
                    text=tokens,
                    duration=duration,
                    lens=lens,
                    steps=settings.nfe_step,
                    cfg_strength=settings.cfg_strength,
                    sway_sampling_coef=settings.sway_sampling_coef,
                    seed=seed,
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
        if key not in self._voice_cache:
            prepared = self.references.prepare(ref_audio, ref_text, self.sample_rate, settings.max_ref_seconds)
            prepared.log_summary(str(ref_audio))
            prepared = replace(prepared, reference=replace(prepared.reference, text=normalize_ref_text(prepared.reference.text)))
            reference = prepared.reference
            tokens, _ = apply_unknown_policy(
                to_tokens(reference.text, self._vocab_map), self._vocab_map, "drop", "ref_text"
            )
            rms = float(np.sqrt(np.mean(reference.wav.astype(np.float64) ** 2)))
            self._voice_cache[key] = _Voice(prepared=prepared, tokens=tokens, rms=max(rms, 1e-8))
        return self._voice_cache[key]

    def prepared_references(self) -> dict[str, dict[str, Any]]:
        """Each reference prepared so far (path -> how it was prepared and judged), for result files."""
        return {str(voice.reference.path): voice.prepared.to_dict() for voice in self._voice_cache.values()}

    def _progress(self, batches: list, show: bool) -> Any:
        if not show:
            return batches
        from tqdm import tqdm

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

    def stream_rounds(self) -> list[tuple[int, int]]:
        """Chunk ranges to render in turn when streaming: the first chunk alone, then the rest."""
        return [(0, 1)] + ([(1, len(self.chunks))] if len(self.chunks) > 1 else [])

    def assemble(self, rendered: list[RenderedChunk], sample_rate: int) -> Synthesis:
        return Synthesis(
            wav=cross_fade([r.wave for r in rendered], sample_rate, self.settings.cross_fade),
            sample_rate=sample_rate,
            mel=np.concatenate([r.mel for r in rendered], axis=1),
            chunks=[(c.voice_name, c.text) for c in self.chunks],
            seed=self.seed,
            dropped_chars=self.dropped_chars,
            verification=[r.verification for r in rendered if r.verification is not None],
        )


class _PerItemSeeds:
    """Each batch item's own seed through ``CFM.sample``'s one ``seed`` argument.

    Upstream seeds every item's noise with ``torch.manual_seed(seed)``, once per item in order,
    so all items would share one seed. ``torch.manual_seed`` reads ``int(seed)``: answering it
    with the items' seeds in turn gives item k the noise it gets alone (tested: batched equals
    one at a time).
    """

    def __init__(self, seeds: list[int]):
        self._seeds = iter(seeds)

    def __int__(self) -> int:
        return next(self._seeds)


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
    from omegaconf.errors import OmegaConfBaseException

    voices = {}
    for name, entry in (raw or {}).items():
        if not str(name).isidentifier():
            raise InferenceInputError(f"voice name {name!r} must be a single word (letters, digits, _) to use it as [{name}]")
        try:
            voices[str(name)] = to_settings(entry, VoiceConfig)
        except (OmegaConfBaseException, ValueError) as exc:
            first_line = str(exc).splitlines()[0]
            raise InferenceInputError(
                f"voices.{name}: {first_line}; give +voices.{name}.ref_audio=FILE +voices.{name}.ref_text=\"...\""
            ) from None
        if voices[str(name)].speed is not None:
            low, high, _ = _SETTING_RANGES["speed"]
            check_range(f"voices.{name}.speed", voices[str(name)].speed, low, high)
    return voices


def require_files(named_paths: list[tuple[str, str | Path | None]]) -> None:
    """Refuse early, naming the option, when an input file does not exist."""
    for option, path in named_paths:
        if path is not None and not Path(path).expanduser().is_file():
            raise InferenceInputError(f"{option}={path} does not exist")


# ---------------------------------------------------------------------- model, device, dtype


def _adapted_once(path: Path, use_ema: bool) -> Path:
    """Foreign weights (upstream files, community checkpoints with other key layouts) are
    converted to canonical keys once and cached; later runs load the cached copy directly."""
    from f5app.ckpt.adapt import adapt_cached

    converted = adapt_cached(path, use_ema=use_ema)
    log.info("weights: using the adapted copy of %s cached at %s", path, converted)
    return converted


def load_model(
    weights_path: str | Path, vocab_path: str | Path | None, model_config: ModelConfig, use_ema: bool = True
) -> tuple[Any, list[str]]:
    """Build the CFM for ``model_config`` and load the weights through the checkpoint adapters."""
    from f5app.ckpt.adapt import load_into, read_weights
    from f5app.inference.upstream_import import register_lazy_f5_model_package
    from f5app.data.vocab import read_vocab, upstream_vocab_path
    from f5app.model import build_cfm

    weights = read_weights(weights_path, use_ema=use_ema)
    if vocab_path is not None:
        vocab = read_vocab(vocab_path)
    elif weights.vocab is not None:
        vocab = weights.vocab
    else:
        vocab = read_vocab(upstream_vocab_path())
        log.info("no vocab.txt beside %s; using upstream's pretrained vocabulary (%d tokens)", weights_path, len(vocab))
    for note in weights.notes:
        log.info("weights: %s", note)
    register_lazy_f5_model_package()
    cfm = build_cfm(model_config, vocab)
    report = load_into(cfm, weights.state, old_vocab=vocab, new_vocab=vocab)
    for note in report.notes:
        log.info("weights: %s", note)
    return cfm, vocab


def pick_device(name: str) -> str:
    """``auto`` → cuda, then mps, then cpu; an explicit device that is absent is an input error."""
    import torch

    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
    }
    if name == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if available[d])
    kind = name.split(":")[0]
    if kind not in available:
        raise InferenceInputError(f"device={name} is not an option; use auto, cpu, cuda or mps")
    if not available[kind]:
        raise InferenceInputError(f"device={name} is not available on this machine; use device=auto or device=cpu")
    return name


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


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def pick_dtype(name: str, device: str, mel_spec_type: str) -> "torch.dtype":
    """``auto``: fp16 on CUDA GPUs of compute capability 7+ (as upstream), else fp32; bigvgan models stay fp32."""
    import torch

    if name == "auto":
        if mel_spec_type == "bigvgan" or not device.startswith("cuda"):
            return torch.float32
        return torch.float16 if torch.cuda.get_device_properties(device).major >= 7 else torch.float32
    if name not in _DTYPES:
        raise InferenceInputError(f"dtype={name} is not an option; use auto, fp32, fp16 or bf16")
    return getattr(torch, _DTYPES[name])

