"""Named prompt sets (``eval.sets``): every language that matters, each scored on its own.

    eval.sets = {target: {}, en: {prompt_file: prompts/en.lst, language: en}}

A set without ``prompt_file`` is the run's own held-out split (the validation prompts); a set with
one reads that list (the formats of :mod:`f5app.evaluation.prompts`). Each set's ``language`` is
what the ASR is told and which text normaliser (f5app/text/) says its words; null takes
``eval.language``. Its scores are named ``wer@NAME``, ``cer@NAME``, ``sim@NAME``.

Without ``eval.sets`` there is one unnamed set: ``eval.prompt_file`` or the held-out split, in
``eval.language``, exactly as before sets existed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from f5app.ckpt.schema import EvalScores, parse_metric
from f5app.config import EvalConfig, EvalSetConfig, TextNormConfig
from f5app.evaluation.evaluator import EvalResult, Evaluator, Timings
from f5app.evaluation.prompts import FORMATS, Prompt, PromptListError, load_prompts
from f5app.text.normalise import Normaliser, build_normaliser

log = logging.getLogger(__name__)

#: A set's name appears in metric names (wer@NAME), tracker keys (eval/NAME/wer) and folder names.
SET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


class EvalSetError(PromptListError):
    """A set, or a metric or bound naming one, that cannot work; the message names the setting."""


@dataclass(frozen=True)
class EvalSet:
    name: Optional[str]  # None: the one unnamed set of a run without eval.sets
    language: Optional[str]  # None: the ASR's configured language
    prompts: list[Prompt]


def check_sets(settings: EvalConfig) -> None:
    """Refuse, in one line, a set whose name or settings cannot work (before any model is loaded)."""
    for name, chosen in settings.sets.items():
        if not SET_NAME.fullmatch(str(name)):
            raise PromptListError(
                f"eval.sets.{name}: a set name is 1-32 lower-case letters, digits, '_' or '-', starting with a letter or digit"
            )
        if chosen.prompt_format not in FORMATS:
            raise EvalSetError(f"eval.sets.{name}.prompt_format={chosen.prompt_format} is not a format; use one of {', '.join(FORMATS)}")
        if chosen.prompt_file is not None and not Path(chosen.prompt_file).expanduser().is_file():
            raise EvalSetError(f"eval.sets.{name}.prompt_file={chosen.prompt_file} does not exist")
        if chosen.num_prompts is not None and chosen.num_prompts < 0:
            raise EvalSetError(f"eval.sets.{name}.num_prompts={chosen.num_prompts} must be 0 (all) or more")


def set_names(settings: EvalConfig) -> list[str]:
    return [str(name) for name in settings.sets]


def load_sets(settings: EvalConfig, held_out: Callable[[EvalConfig], list[Prompt]]) -> list[EvalSet]:
    """The prompts of every set; ``held_out(eval settings)`` gives the held-out split's prompts."""
    check_sets(settings)
    if not settings.sets:
        prompts = load_prompts(settings) if settings.prompt_file else held_out(settings)
        return [EvalSet(None, settings.language, prompts)]
    if settings.prompt_file:
        log.info("eval.prompt_file=%s is not used: eval.sets names the prompts", settings.prompt_file)
    sets = []
    for name, chosen in settings.sets.items():
        one = set_settings(settings, chosen)
        prompts = load_prompts(one) if one.prompt_file else held_out(one)
        if not prompts:
            raise EvalSetError(f"eval.sets.{name} holds no prompts (the held-out split is empty: raise data.val_fraction)")
        sets.append(EvalSet(str(name), one.language, prompts))
    return sets


def set_settings(settings: EvalConfig, chosen: EvalSetConfig) -> EvalConfig:
    """``settings`` as one set sees them: its prompts, its language, no further sets."""
    return replace(
        settings, sets={}, prompt_file=chosen.prompt_file, prompt_format=chosen.prompt_format, audio_root=chosen.audio_root,
        num_prompts=settings.num_prompts if chosen.num_prompts is None else chosen.num_prompts,
        language=chosen.language if chosen.language is not None else settings.language,
    )


@dataclass(frozen=True)
class SetResults:
    """Every set's prompts scored together (``overall``, item ids ``NAME:ID`` when sets are named)
    and each named set's own result (``by_set``; empty without eval.sets)."""

    overall: EvalResult
    by_set: dict[str, EvalResult]
    languages: dict[str, Optional[str]]  # the language each set was heard in (None: the ASR's own)

    def scores(self) -> EvalScores:
        """The typed record a checkpoint's metadata holds."""
        def typed(result: EvalResult, models: dict) -> EvalScores:
            return EvalScores(result.wer, result.cer, result.sim, result.num_prompts, models)

        overall = typed(self.overall, self.overall.models)
        return replace(overall, sets={name: typed(result, {}) for name, result in self.by_set.items()})

    def to_dict(self) -> dict:
        record = self.overall.to_dict()
        if self.by_set:
            record["sets"] = {name: {"metrics": result.metrics(), "language": self.languages.get(name)} for name, result in self.by_set.items()}
        return record


def normalisers_by_language(text_norm: TextNormConfig, fallback: Optional[str]) -> Callable[[Optional[str]], Normaliser]:
    """Each language's normaliser, built once: a set's own language decides how its text is said
    (``text_norm.language`` does not override it); None is ``text_norm`` as configured, whose
    language ``fallback`` stands in for when unset."""
    built: dict[Optional[str], Normaliser] = {}

    def normaliser_for(language: Optional[str]) -> Normaliser:
        if language not in built:
            built[language] = build_normaliser(replace(text_norm, language=language) if language else text_norm, fallback)
        return built[language]

    return normaliser_for


def score_sets(
    sets: list[EvalSet], evaluator: Evaluator, normaliser_for: Callable[[Optional[str]], Normaliser],
    score_one: Callable[[EvalSet, Evaluator], EvalResult],
) -> SetResults:
    """``score_one(set, that set's evaluator)`` for each set; each set is heard in its own language
    and its text said by its own normaliser (``normaliser_for(language)``)."""
    if len(sets) == 1 and sets[0].name is None:
        return SetResults(score_one(sets[0], evaluator), {}, {})
    by_set: dict[str, EvalResult] = {}
    for one in sets:
        assert one.name is not None
        scorer = replace(evaluator, language=one.language or evaluator.language, normaliser=normaliser_for(one.language), timings=Timings())
        by_set[one.name] = score_one(one, scorer)
        log.info("eval set %s: WER %s, CER %s, SIM %s on %d prompts", one.name, _fmt(by_set[one.name].wer), _fmt(by_set[one.name].cer),
                 _fmt(by_set[one.name].sim), by_set[one.name].num_prompts)
    return SetResults(_together(by_set), by_set, {one.name: one.language or evaluator.language for one in sets if one.name})


def speak_set(one: EvalSet, scorer: Evaluator, synthesizer: Any, settings: EvalConfig, folder: Optional[Path],
              checkpoint: Optional[dict] = None) -> EvalResult:
    """``synthesizer`` speaks ``one``'s prompts and ``scorer`` scores them: a named set in its own
    words (the scorer's normaliser) with its clips in ``folder/NAME``; the unnamed set as before sets existed.
    Training's evaluation and f5app.eval both speak a set this way, so their scores agree."""
    if one.name is None:
        return scorer.evaluate(synthesizer, one.prompts, settings, folder, checkpoint=checkpoint)
    return scorer.evaluate(synthesizer.with_normaliser(scorer.normaliser), one.prompts, settings,
                           folder / one.name if folder is not None else None, checkpoint=checkpoint)


def _together(by_set: dict[str, EvalResult]) -> EvalResult:
    results = list(by_set.values())
    timings = Timings(*(sum(getattr(r.timings, name) for r in results) for name in ("synthesis", "asr", "embedding", "audio")))
    items = tuple(replace(item, id=f"{name}:{item.id}") for name, result in by_set.items() for item in result.items)
    skipped = tuple(replace(item, id=f"{name}:{item.id}") for name, result in by_set.items() for item in result.skipped)
    first = results[0]
    return EvalResult(items, first.models, first.source, first.checkpoint, timings, skipped)


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def check_metric_sets(settings: EvalConfig, best_metric: str, objective: str, base_set: Optional[str]) -> None:
    """Refuse, in one line, a metric or bound that names a set ``eval.sets`` does not hold."""
    check_sets(settings)
    names = set_names(settings)
    known = ", ".join(names) if names else "none: give eval.sets"
    for key, metric in (("ckpt.best_metric", best_metric), ("objective", objective)):
        try:
            _, set_name = parse_metric(metric)
        except ValueError as error:
            raise EvalSetError(f"{key}={metric}: {error}") from None
        if set_name is not None and set_name not in names:
            raise EvalSetError(f"{key}={metric} names set {set_name!r}, which eval.sets does not hold (sets: {known})")
    if base_set is not None and base_set not in names:
        raise EvalSetError(f"ckpt.base_set={base_set} is not a set of eval.sets (sets: {known})")
    if (base_set is not None or "@" in best_metric) and settings.every <= 0:
        raise EvalSetError(f"ckpt.best_metric={best_metric} ckpt.base_set={base_set} are measured by evaluation, which eval.every=0 switches off; set eval.every=N")
