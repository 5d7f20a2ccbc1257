"""Synthesise prompts, transcribe, score: the one place WER, CER and SIM are computed.

    evaluator = build_evaluator(asr_cfg, speaker_cfg, device="cpu")      # loads both models once
    result = evaluator.evaluate(synthesizer, prompts, eval_cfg, out_dir)  # EvalResult
    result.wer, result.cer, result.sim, result.items[0].transcript

Aggregates are means over prompts of the per-prompt scores (upstream's evaluation reports the
mean per-utterance WER too). SIM compares the generated clip with the prompt's reference
recording (upstream's SIM-o); audio that holds no speech to embed scores SIM 0.
``evaluate_recordings`` scores the ground-truth recordings of the same prompts: the ceiling
a fine-tune is compared with.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TypeVar

import numpy as np

import soundfile as sf

from f5app.audio.io import read_audio, write_audio
from f5app.config import AsrConfig, EvalConfig, SpeakerConfig
from f5app.errors import UserError, first_line
from f5app.evaluation.prompts import MAX_LISTED, Prompt, require_targets
from f5app.speech.asr import Transcriber, build_transcriber
from f5app.speech.speaker import SpeakerEmbedder, build_embedder, similarity
from f5app.speech.text import score

if TYPE_CHECKING:  # the synthesiser is handed in (duck-typed); evaluation sits below inference
    from f5app.inference.synthesizer import Synthesis, Synthesizer
    from f5app.text.normalise import Normaliser

log = logging.getLogger(__name__)

T = TypeVar("T")


class NothingToScore(UserError):
    """Every prompt was skipped; the message lists them."""


@dataclass(frozen=True)
class ItemScore:
    id: str
    text: str  # what should have been said
    transcript: str  # what the ASR heard
    wer: float
    cer: float
    sim: float | None  # None when no speaker embedder is configured
    audio: str | None  # the scored clip (None when not saved)
    ref_audio: str
    seconds: float  # audio length
    seed: int | None = None  # synthesis seed (None for recordings)
    confidence: float = 0.0  # ASR confidence, see f5app.speech.asr
    spoken_text: str | None = None  # ``text`` after text_norm: what WER compares with (None: no normaliser)


@dataclass(frozen=True)
class SkippedPrompt:
    """A prompt that could not be spoken (e.g. no character of its text is in the model's vocabulary)."""

    id: str
    line: int | None  # in the prompt list (None for validation prompts)
    text: str
    reason: str

    def describe(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        return f"prompt {self.id}{where} {self.text[:60]!r}: {self.reason}"


@dataclass
class Timings:
    synthesis: float = 0.0
    asr: float = 0.0
    embedding: float = 0.0
    audio: float = 0.0  # seconds of audio scored

    def per_prompt(self, count: int) -> dict[str, float]:
        count = max(count, 1)
        return {"synthesis": self.synthesis / count, "asr": self.asr / count, "embedding": self.embedding / count}


@dataclass(frozen=True)
class EvalResult:
    items: tuple[ItemScore, ...]
    models: dict[str, Any]  # {"asr": {...}, "speaker": {...} | None}
    source: str  # "model" or "recordings"
    checkpoint: dict[str, Any] | None = None
    timings: Timings = field(default_factory=Timings)
    skipped: tuple[SkippedPrompt, ...] = ()  # not scored: not in the aggregates

    @property
    def wer(self) -> float | None:
        return _mean([item.wer for item in self.items])

    @property
    def cer(self) -> float | None:
        return _mean([item.cer for item in self.items])

    @property
    def sim(self) -> float | None:
        return _mean([item.sim for item in self.items if item.sim is not None])

    @property
    def num_prompts(self) -> int:
        return len(self.items)

    def metrics(self) -> dict[str, float | None]:
        return {"wer": self.wer, "cer": self.cer, "sim": self.sim, "num_prompts": self.num_prompts}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "metrics": self.metrics(),
            "checkpoint": self.checkpoint,
            "models": self.models,
            "seconds_per_prompt": self.timings.per_prompt(self.num_prompts),
            "items": [asdict(item) for item in self.items],
            "skipped": [asdict(item) for item in self.skipped],
        }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@dataclass
class Evaluator:
    """ASR + optional speaker embedder, built once; every score in f5app goes through :meth:`score`."""

    transcriber: Transcriber
    embedder: SpeakerEmbedder | None = None
    language: str | None = None  # default: the ASR's configured language
    # text_norm: the target text and the transcript both said in words ("6" and "six" agree),
    # exactly as synthesis was given the text
    normaliser: "Normaliser | None" = None
    timings: Timings = field(default_factory=Timings)
    _references: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def models(self) -> dict[str, Any]:
        return {"asr": self.transcriber.describe(), "speaker": self.embedder.describe() if self.embedder else None}

    def score(
        self, wav: np.ndarray, sample_rate: int, text: str, ref_audio: str | Path, *,
        id: str = "", audio: str | None = None, seed: int | None = None,  # noqa: A002
    ) -> ItemScore:
        """Transcribe ``wav``, compare with ``text``, compare its voice with ``ref_audio``."""
        language = self.language or self.transcriber.cfg.language
        started = time.perf_counter()
        transcript = self.transcriber.transcribe(wav, sample_rate, language=language)
        self.timings.asr += time.perf_counter() - started
        self.timings.audio += len(wav) / sample_rate
        spoken = self.normaliser.normalise(text) if self.normaliser is not None else None
        heard = self.normaliser.normalise(transcript.text) if self.normaliser is not None else transcript.text
        text_score = score(spoken if spoken is not None else text, heard, language or transcript.language)
        sim = None
        if self.embedder is not None:
            started = time.perf_counter()
            sim = self._similarity(wav, sample_rate, ref_audio)
            self.timings.embedding += time.perf_counter() - started
        return ItemScore(
            id=id,
            text=text,
            transcript=transcript.text,
            wer=text_score.wer,
            cer=text_score.cer,
            sim=sim,
            ref_audio=str(ref_audio),
            seconds=len(wav) / sample_rate,
            confidence=transcript.confidence,
            spoken_text=spoken,
            audio=audio,
            seed=seed,
        )

    def _similarity(self, wav: np.ndarray, sample_rate: int, ref_audio: str | Path) -> float:
        assert self.embedder is not None
        key = str(ref_audio)
        if key not in self._references:
            reference, ref_sr = read_audio(ref_audio)
            self._references[key] = self.embedder.embed(reference, ref_sr)
        try:
            generated = self.embedder.embed(wav, sample_rate)
        except ValueError:  # silent or too short: no voice to compare
            return 0.0
        return similarity(generated, self._references[key])

    # ------------------------------------------------------------------ whole sets

    def evaluate(
        self, synthesizer: "Synthesizer", prompts: list[Prompt], settings: EvalConfig, out_dir: Path | None = None,
        checkpoint: dict[str, Any] | None = None,
    ) -> EvalResult:
        """Synthesise every prompt with ``synthesizer`` (seed ``settings.seed + i``), then score it."""
        self.timings = Timings()
        items = []
        skipped = []
        for index, prompt in enumerate(prompts):
            started = time.perf_counter()
            try:
                synthesis = synthesizer.generate(
                    prompt.text, prompt.ref_audio, prompt.ref_text,
                    seed=settings.seed + index, nfe_step=settings.nfe_step, cfg_strength=settings.cfg_strength,
                    sway_sampling_coef=settings.sway_sampling_coef, speed=settings.speed, progress=False,
                )
            except UserError as error:  # this prompt's input (nothing sayable in its text): the others still count
                skipped.append(SkippedPrompt(prompt.id, prompt.line, prompt.text, first_line(error)))
                log.warning("skipped %s", skipped[-1].describe())
                continue
            self.timings.synthesis += time.perf_counter() - started
            wav = as_written(synthesis.wav, synthesis.sample_rate)
            audio = _save(out_dir, prompt.id, wav, synthesis.sample_rate) if settings.save_audio else None
            items.append(self.score(wav, synthesis.sample_rate, prompt.text, prompt.ref_audio, id=prompt.id, audio=audio, seed=synthesis.seed))
        if not items:
            raise NothingToScore(f"no prompt could be spoken: {'; '.join(item.describe() for item in skipped[:MAX_LISTED])}")
        return EvalResult(tuple(items), self.models(), "model", checkpoint, self.timings, tuple(skipped))

    def evaluate_recordings(self, prompts: list[Prompt], where: str = "the prompts") -> EvalResult:
        """Score each prompt's ground-truth recording of its target text (the ceiling)."""
        require_targets(prompts, where)
        self.timings = Timings()
        items = []
        for prompt in prompts:
            assert prompt.target_audio is not None
            wav, sr = read_audio(prompt.target_audio)
            items.append(self.score(wav, sr, prompt.text, prompt.ref_audio, id=prompt.id, audio=str(prompt.target_audio)))
        return EvalResult(tuple(items), self.models(), "recordings", None, self.timings)

    def best_of(
        self, synthesizer: "Synthesizer", text: str, *, ref_audio: str | Path | None, ref_text: str | None,
        sim_reference: str | Path, count: int, seed: int, **overrides: Any,
    ) -> tuple["Synthesis", list[ItemScore]]:
        """``count`` candidates with seeds ``seed``, ``seed + 1``…; keep the lowest WER (ties: highest SIM).

        ``ref_audio``/``ref_text`` go to the synthesizer as given (None: its default voice);
        ``sim_reference`` is the recording SIM compares with. Returns the kept synthesis and
        every candidate's scores, in seed order.
        """
        if count < 1:
            raise ValueError(f"count={count} must be at least 1")

        def make(candidate_seed: int) -> "Synthesis":
            return synthesizer.generate(text, ref_audio, ref_text, seed=candidate_seed, **overrides)

        def judge(synthesis: "Synthesis", candidate_seed: int) -> ItemScore:
            return self.score(as_written(synthesis.wav, synthesis.sample_rate), synthesis.sample_rate, text, sim_reference,
                              id=f"seed{synthesis.seed}", seed=synthesis.seed)

        # The mechanism verify=asr uses per chunk (f5app/inference/verify.py), over the whole text, with no early stop.
        best, scores, _ = draw_best(make, judge, [seed + index for index in range(count)])
        return best, scores


def rank(item: ItemScore) -> tuple[float, float]:
    """Lower is better: WER first, then SIM (higher wins; no SIM counts as 0)."""
    return (item.wer, -(item.sim if item.sim is not None else 0.0))


def draw_best(
    make: Callable[[int], T], score: Callable[[T, int], ItemScore], seeds: list[int],
    good: Optional[Callable[[ItemScore], bool]] = None,
) -> tuple[T, list[ItemScore], int]:
    """Try ``seeds`` in order (stopping at the first ``good`` one, when given); ``(best, scores, best index)``."""
    if not seeds:
        raise ValueError("draw_best needs at least one seed")
    best: Optional[tuple[tuple[float, float], T, int]] = None
    scores: list[ItemScore] = []
    for seed in seeds:
        made = make(seed)
        item = score(made, seed)
        scores.append(item)
        if best is None or rank(item) < best[0]:
            best = (rank(item), made, len(scores) - 1)
        if good is not None and good(item):
            break
    assert best is not None
    return best[1], scores, best[2]


def as_written(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """``wav`` as it reads back from the 16-bit WAV it is saved as. Scored this way, a clip scores
    the same in training, in ``f5app.eval`` and from its file: on unintelligible audio the ASR's
    guesses change with differences far below one 16-bit step (thread counts, devices)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(wav, dtype=np.float32), sample_rate, format="WAV", subtype="PCM_16")
    buffer.seek(0)
    data, _ = sf.read(buffer, dtype="float32")
    return data


def _save(out_dir: Path | None, name: str, wav: np.ndarray, sample_rate: int) -> str | None:
    if out_dir is None:
        return None
    return str(write_audio(Path(out_dir) / f"{name}.wav", wav, sample_rate, overwrite=True))


def build_evaluator(
    asr: AsrConfig, speaker: SpeakerConfig | None, device: str = "cpu", language: str | None = None,
    normaliser: "Normaliser | None" = None,
) -> Evaluator:
    """Load the ASR and the speaker embedder ``speaker`` names (none for None or ``speaker=none``), once."""
    return Evaluator(build_transcriber(asr, device=device), build_embedder(speaker, device=device), language, normaliser)
