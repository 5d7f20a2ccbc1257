"""Evaluation during training: the EMA weights speak the held-out prompts every ``eval.every`` updates.

Runs on the main process only, inside ``forked_rng``, so the training RNG streams never move and
an interrupted-and-resumed run stays bit-identical with evaluation on. The ASR and the speaker
embedder are loaded at setup: a model that cannot be had fails the run before its first update.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from f5app.audio.io import read_audio
from f5app.audio.vocoder import load_vocoder
from f5app.ckpt.schema import EvalScores
from f5app.config import TrainConfig
from f5app.evaluation.evaluator import build_evaluator
from f5app.evaluation.prompts import PromptListError, held_out_prompts
from f5app.evaluation.sets import EvalSet, SetResults, load_sets, normalisers_by_language, score_sets, speak_set
from f5app.inference.synthesizer import SamplingSettings, Synthesizer
from f5app.files import write_json_atomic

log = logging.getLogger("f5app.train")

#: Generated clips sent to the tracker at each evaluation (all are written under the run folder).
TRACKED_AUDIO = 2
#: Beside the clips of one evaluation (``<run>/eval/update_<N>/``): each prompt's text, transcript and
#: scores, as ``EvalResult.to_dict`` (the same shape f5app.eval writes); the studio reads it.
RESULTS_FILENAME = "results.json"


class TrainingEvaluation:
    def __init__(self, cfg: TrainConfig, val_clips: list, vocab: list[str], device: str, run_dir: Path,
                 metadata_path: Path | None = None):  # noqa: ANN001

        self.cfg = cfg
        self.every = cfg.eval.every
        self.run_dir = Path(run_dir)
        self.vocab = vocab
        self.device = device
        self.sets: list[EvalSet] = load_sets(
            cfg.eval, held_out=lambda one: held_out_prompts(cfg.data, val_clips, one.num_prompts, one.seed, metadata_path=metadata_path)
        )
        if not self.sets[0].prompts:
            raise PromptListError("eval.every > 0 needs held-out prompts, but the validation split is empty; raise data.val_fraction or give eval.prompt_file")
        started = time.perf_counter()
        # the same words for the text synthesised and the text WER compares with (f5app/text/)
        self._normaliser_for = normalisers_by_language(cfg.text_norm, cfg.eval.language or cfg.asr.language)
        self.normaliser = self._normaliser_for(None)
        self.evaluator = build_evaluator(cfg.asr, cfg.speaker, device=device, language=cfg.eval.language, normaliser=self.normaliser)
        self._vocoder = None
        log.info("evaluation: %s every %d updates (models loaded in %.1f s)",
                 ", ".join(f"{len(one.prompts)} prompts" + (f" of set {one.name}" if one.name else " held out") for one in self.sets),
                 self.every, time.perf_counter() - started)

    def due(self, update: int, final: bool) -> bool:
        return self.every > 0 and (update % self.every == 0 or final)

    def run(self, ema_model: Any, update: int) -> tuple[EvalScores, SetResults]:
        """Score ``ema_model`` on every set now; returns the typed scores and the full results."""
        from f5app.inference import fast_attention  # deferred, as forked_rng: both pull torch at import
        from f5app.training.rng import forked_rng  # deferred: pulls torch at import (1.9 s, NOTES.md)

        if self._vocoder is None:
            self._vocoder = load_vocoder(self.cfg.vocoder, self.cfg.model.mel, device=self.device)
        was_training = ema_model.training
        ema_model.eval()
        synthesizer = Synthesizer(
            cfm=ema_model, vocoder=self._vocoder, vocab=self.vocab, model_config=self.cfg.model, device=self.device,
            dtype=next(ema_model.parameters()).dtype,
            settings=SamplingSettings(progress=False), source=f"EMA weights at update {update}", normaliser=self.normaliser,
        )
        out_dir = self.run_dir / "eval" / f"update_{update:08d}" if self.cfg.eval.save_audio else None
        started = time.perf_counter()

        try:
            # the attention f5app.eval and inference run, so the scores recorded here are theirs too
            with forked_rng(), fast_attention.installed(ema_model.transformer):
                results = score_sets(self.sets, self.evaluator, self._normaliser_for,
                                     lambda one, scorer: speak_set(one, scorer, synthesizer, self.cfg.eval, out_dir))
        finally:
            ema_model.train(was_training)
        if out_dir is not None:
            try:
                write_json_atomic(out_dir / RESULTS_FILENAME, {"update": update, **results.to_dict()}, durable=False)
            except (OSError, ValueError) as error:  # a score that is not finite, a full disk: the scores still count
                log.warning("update %d: evaluation details not written to %s: %s", update, out_dir, error)
        scores, result = results.scores(), results.overall
        log.info(
            "update %d: evaluation WER %s, CER %s, SIM %s on %d prompts (%.1f s)",
            update, _fmt(result.wer), _fmt(result.cer), _fmt(result.sim), result.num_prompts, time.perf_counter() - started,
        )
        return scores, results

    def track(self, tracker: Any, results: SetResults, update: int) -> None:
        """Scalars (each set's under ``eval/NAME/``), the first clips, and a table of text against transcript."""

        result = results.overall
        scalars = {f"eval/{k}": v for k, v in (("wer", result.wer), ("cer", result.cer), ("sim", result.sim)) if v is not None}
        for name, one in results.by_set.items():
            scalars.update({f"eval/{name}/{k}": v for k, v in (("wer", one.wer), ("cer", one.cer), ("sim", one.sim)) if v is not None})
        tracker.scalars(scalars, update)
        for item in result.items[:TRACKED_AUDIO]:
            if item.audio:
                wav, sr = read_audio(item.audio)
                tracker.audio(f"eval/audio/{item.id}", wav, sr, update)
        rows = [[item.id, item.text, item.transcript, f"{item.wer:.3f}", "-" if item.sim is None else f"{item.sim:.3f}"] for item in result.items]
        tracker.table("eval/transcripts", ["prompt", "text", "transcript", "wer", "sim"], rows, update)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
