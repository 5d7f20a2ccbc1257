"""The Synthesizer API: build once (checkpoint, model, vocoder), synthesise many texts.

The maths follows upstream ``f5_tts.infer.utils_infer.infer_process``/``infer_batch_process``
(reference loudness normalisation, duration from the text-length ratio and ``speed``, chunks
sized from the reference, cross-fade) without importing that module, which costs ~8 s and
pulls transformers and pydub.

    synth = Synthesizer.from_config(cfg, run_dir)
    wav, sr = synth.synthesize("Hello there.", ref_audio="me.wav", ref_text="What I say in me.wav.")
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from f5app.config import InferConfig, ModelConfig, VoiceConfig, model_config_from_dict, to_settings
from f5app.inference.chunking import cross_fade
from f5app.inference.defaults import DefaultReference, default_reference
from f5app.inference.errors import InferenceInputError
from f5app.inference.reference import Reference, load_reference
from f5app.inference.text import (
    MAIN_VOICE,
    apply_unknown_policy,
    chunk_text,
    max_chunk_bytes,
    normalize_ref_text,
    split_voices,
    to_tokens,
)

if TYPE_CHECKING:
    import torch

    from f5app.audio.vocoder import Vocoder
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

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass
class _Voice:
    reference: Reference
    tokens: list[str]  # reference transcript as model tokens
    rms: float


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
    adapters: Optional["AdapterVoices"] = None  # LoRA voices on one base (inference/adapters.py)
    _voice_cache: dict[tuple[str, str], _Voice] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- building

    @classmethod
    def from_config(cls, cfg: InferConfig, run_dir: str | Path) -> "Synthesizer":
        """Resolve the checkpoint (``cfg.ckpt``), build and load the model, build the vocoder."""
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
            adapters=adapters,
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
        settings = self._settings_with(overrides)
        if text is None or not text.strip():
            raise InferenceInputError("text is empty; pass text=\"something to say\" or text_file=FILE")
        voices = {**self.voices, MAIN_VOICE: self._main_voice(ref_audio, ref_text)}
        segments = split_voices(text, set(voices))
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**31)

        plan: list[tuple[str, _Voice, str, float]] = []  # (voice name, voice, chunk text, speed)
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
            plan += [(segment.voice, voice, chunk, speed) for chunk in chunk_text(kept_text, max_bytes) if chunk.strip()]
        if dropped:
            log.warning("dropped characters missing from the model's vocabulary: %s", " ".join(repr(c) for c in dropped))
        if not plan:
            raise InferenceInputError("nothing left to say: every character of the text is missing from the vocabulary")

        waves, mels = [], []
        for index, (name, voice, chunk, speed) in enumerate(self._progress(plan, settings)):
            if self.adapters is not None:
                self.adapters.use(name)
            wave, mel = self._generate_chunk(voice, chunk, replace(settings, speed=speed), seed + index)
            waves.append(wave)
            mels.append(mel)
        wav = cross_fade(waves, self.sample_rate, settings.cross_fade)
        return Synthesis(
            wav=wav,
            sample_rate=self.sample_rate,
            mel=np.concatenate(mels, axis=1),
            chunks=[(name, chunk) for name, _, chunk, _ in plan],
            seed=seed,
            dropped_chars=dropped,
        )

    def _generate_chunk(self, voice: _Voice, text: str, settings: SamplingSettings, seed: int) -> tuple[np.ndarray, np.ndarray]:
        import torch

        hop = self.model_config.mel.hop_length
        audio = torch.from_numpy(voice.reference.wav)[None].to(self.device)
        if voice.rms < settings.target_rms:
            audio = audio * settings.target_rms / voice.rms
        tokens = voice.tokens + to_tokens(text, self._vocab_map)
        tokens = [t for t in tokens if t in self._vocab_map]
        ref_frames = audio.shape[-1] // hop
        ref_bytes = max(1, len(voice.reference.text.encode("utf-8")))
        gen_bytes = len(text.encode("utf-8"))
        # Upstream: very short texts get a slower pace so a word is not swallowed.
        speed = 0.3 if gen_bytes < 10 else settings.speed
        duration = ref_frames + int(ref_frames / ref_bytes * gen_bytes / speed)
        with torch.inference_mode():
            generated, _ = self.cfm.sample(
                cond=audio,
                text=[tokens],
                duration=duration,
                steps=settings.nfe_step,
                cfg_strength=settings.cfg_strength,
                sway_sampling_coef=settings.sway_sampling_coef,
                seed=seed,
            )
            mel = generated.to(torch.float32)[:, ref_frames:, :].permute(0, 2, 1)
            torch.manual_seed(seed)  # Griffin-Lim starts from random phases
            wave = self.vocoder.decode(mel)
            if voice.rms < settings.target_rms:
                wave = wave * voice.rms / settings.target_rms
        return wave.squeeze(0).float().cpu().numpy(), mel[0].cpu().numpy()

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
        if ref_audio is not None and ref_text is not None:
            return VoiceConfig(ref_audio=str(ref_audio), ref_text=ref_text)
        if ref_audio is not None:
            raise InferenceInputError(f"ref_audio={ref_audio} needs ref_text=\"what the reference says\"")
        if ref_text is not None:
            raise InferenceInputError("ref_text is set but ref_audio is not; pass both (or neither, for the default voice)")
        if MAIN_VOICE in self.voices:
            return self.voices[MAIN_VOICE]
        if self.default_voice is None:
            raise InferenceInputError("no reference voice: pass ref_audio=FILE and ref_text=\"its transcript\"")
        log.info("reference: %s (%s)", self.default_voice.audio, self.default_voice.why)
        return VoiceConfig(ref_audio=str(self.default_voice.audio), ref_text=self.default_voice.text)

    def _voice(self, ref_audio: str, ref_text: str, settings: SamplingSettings) -> _Voice:
        key = (str(ref_audio), ref_text)
        if key not in self._voice_cache:
            reference = load_reference(ref_audio, ref_text, self.sample_rate, settings.max_ref_seconds)
            reference = replace(reference, text=normalize_ref_text(reference.text))
            tokens, _ = apply_unknown_policy(
                to_tokens(reference.text, self._vocab_map), self._vocab_map, "drop", "ref_text"
            )
            rms = float(np.sqrt(np.mean(reference.wav.astype(np.float64) ** 2)))
            self._voice_cache[key] = _Voice(reference=reference, tokens=tokens, rms=max(rms, 1e-8))
        return self._voice_cache[key]

    def _progress(self, plan: list, settings: SamplingSettings) -> Any:
        if not settings.progress or len(plan) < 2:
            return plan
        from tqdm import tqdm

        return tqdm(plan, desc="chunks", unit="chunk")


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

