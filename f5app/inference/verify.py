"""Drawing again until the speech says the words: ``verify=asr`` for every chunk, ``best_of`` for a whole text.

One mechanism, :func:`f5app.evaluation.evaluator.draw_best`: make a try with a seed, score it (WER of the ASR's transcript
against the text the Synthesizer was given, SIM against the reference voice, both through
:meth:`f5app.evaluation.evaluator.Evaluator.score`), keep the best try (lowest WER, then highest
SIM). ``verify=asr`` stops at the first try that passes ``verify.max_wer`` and ``verify.min_sim``
and draws at most ``verify.max_tries`` (seeds ``seed``, ``seed + 1``…); ``best_of=N`` is the same
loop over the whole text with N tries and no early stop.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Optional

from f5app.config import VerifyConfig
from f5app.evaluation.evaluator import Evaluator, ItemScore, as_written, draw_best
from f5app.inference.errors import InferenceInputError

if TYPE_CHECKING:
    from f5app.inference.reference import ReferencePreparer
    from f5app.inference.synthesizer import ChunkJob, RenderedChunk

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Try:
    seed: int
    wer: float
    sim: Optional[float]
    transcript: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["wer"] = round(self.wer, 4)
        record["sim"] = None if self.sim is None else round(self.sim, 4)
        record["seconds"] = round(self.seconds, 3)
        return record


@dataclass(frozen=True)
class Draws:
    """Every try of one text (a chunk, or the whole text for best_of) and the one kept."""

    text: str
    tries: tuple[Try, ...]
    kept: int  # index into tries
    passed: Optional[bool]  # verify: whether the kept try met the thresholds; best_of: None

    @property
    def kept_try(self) -> Try:
        return self.tries[self.kept]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kept_seed": self.kept_try.seed, "passed": self.passed,
                "tries": [t.to_dict() for t in self.tries]}


def tries_of(scores: list["ItemScore"]) -> tuple[Try, ...]:
    return tuple(Try(int(s.seed if s.seed is not None else -1), s.wer, s.sim, s.transcript, s.seconds) for s in scores)


class ChunkVerifier:
    """``verify=asr``: each rendered chunk scored; one that misses is drawn again with the next seed."""

    def __init__(self, settings: VerifyConfig, evaluator: "Evaluator"):
        if settings.max_tries < 1:
            raise InferenceInputError(f"verify.max_tries={settings.max_tries} must be at least 1")
        self.settings = settings
        self.evaluator = evaluator

    def passes(self, item: "ItemScore") -> bool:
        sim_ok = item.sim is None or item.sim >= self.settings.min_sim
        return item.wer <= self.settings.max_wer and sim_ok

    def check(
        self, chunk: "ChunkJob", first: "RenderedChunk", render_one: Callable[["ChunkJob"], "RenderedChunk"], sample_rate: int,
    ) -> "RenderedChunk":
        """The best of ``first`` and up to ``max_tries - 1`` redraws of ``chunk``, with its :class:`Draws` attached."""
        def make(seed: int) -> "RenderedChunk":
            return first if seed == chunk.seed else render_one(replace(chunk, seed=seed))

        def score(rendered: "RenderedChunk", seed: int) -> "ItemScore":
            return self.evaluator.score(as_written(rendered.wave, sample_rate), sample_rate, chunk.text,
                                        chunk.voice.reference.path, id=f"seed{seed}", seed=seed)

        seeds = [chunk.seed + k for k in range(self.settings.max_tries)]
        kept, scores, index = draw_best(make, score, seeds, self.passes)
        draws = Draws(chunk.text, tries_of(scores), index, self.passes(scores[index]))
        best = draws.kept_try
        sim = "-" if best.sim is None else f"{best.sim:.3f}"
        (log.info if draws.passed else log.warning)(
            "verify: chunk %r: %d tr%s, kept seed %d (wer %.3f, sim %s)%s", _short(chunk.text), len(scores),
            "y" if len(scores) == 1 else "ies", best.seed, best.wer, sim, "" if draws.passed else " - still over the thresholds",
        )
        return replace(kept, verification=draws)


def build_verifier(settings: VerifyConfig, references: "ReferencePreparer") -> ChunkVerifier:
    """``verify=asr`` with the reference preparer's ASR and speaker models (loaded once, shared)."""
    if settings.name != "asr":
        raise InferenceInputError(f"verify={settings.name} is not an option; use verify=off or verify=asr")
    evaluator = Evaluator(references.transcriber(), references.embedder(), language=references.asr.language)
    return ChunkVerifier(settings, evaluator)


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
