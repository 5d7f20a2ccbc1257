"""``python -m f5app.eval``: WER, CER and speaker similarity of any checkpoint, or of the recordings.

    python -m f5app.eval run_name=demo                         # the demo run's best/last checkpoint
    python -m f5app.eval run_name=demo source=recordings       # the ground truth: the ceiling
    python -m f5app.eval run_name=demo 'compare=[demo,recordings]'
    python -m f5app.eval ckpt=custom ckpt.path=model_1250000.safetensors eval.prompt_file=meta.lst

Prints a table and writes a JSON file (``out=FILE``; default under the run folder) with
``metrics`` (wer, cer, sim), ``items`` (per prompt: text, transcript, wer, cer, sim, audio),
``checkpoint`` and ``models``. The asr/speaker/eval/vocoder settings recorded in the checkpoint
apply unless given on the command line. Bad input prints ``error: ...`` and exits 2.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from f5app.ckpt.resolve import resolve
from f5app.cli_help import run_hydra_app
from f5app.config import CONF_DIR, EvalAppConfig, InferConfig, to_settings
from f5app.devices import pick_device
from f5app.errors import UserError, exit_on_user_error
from f5app.evaluation.settings import effective_settings, overridden_groups
from f5app.files import write_json_atomic
from f5app.infer import unused_name
from f5app.text.normalise import recorded_language
from f5app.inference.upstream_import import defer_unused_imports

log = logging.getLogger("f5app.eval")

RECORDINGS = "recordings"


class EvalInputError(UserError):
    """A bad ``f5app.eval`` setting; the message names it."""


def run(cfg: DictConfig | EvalAppConfig, overrides: list[str] | None = None) -> dict[str, Any]:
    """Evaluate as the command line does; returns what was written to the JSON file (plus ``path``)."""
    from f5app.evaluation.evaluator import build_evaluator  # deferred: f5app.evaluation.evaluator costs 0.58 s to import (numpy, soundfile; -X importtime); --help must stay fast
    from f5app.evaluation.prompts import load_prompts  # deferred: f5app.evaluation.prompts costs 0.39 s to import (numpy, soundfile; -X importtime); --help must stay fast
    from f5app.evaluation.sets import load_sets, normalisers_by_language, score_sets  # deferred: imports the evaluator (0.58 s, above)

    settings: EvalAppConfig = cfg if isinstance(cfg, EvalAppConfig) else to_settings(cfg, EvalAppConfig)
    if settings.source not in ("model", RECORDINGS):
        raise EvalInputError(f"source={settings.source} is not an option; use model or recordings")
    _check_out(settings.out)  # before anything is resolved or loaded
    entries = list(settings.compare) or [RECORDINGS if settings.source == RECORDINGS else None]
    targets = [_target(settings, entry) for entry in entries]
    out_path = _output_path(settings, targets)

    # Which model the settings, data and prompts come from: the first target that records them.
    recorded = next((t.recorded_config for t in targets if t.recorded_config), None)
    chosen = effective_settings(settings.asr, settings.speaker, settings.eval, recorded, overridden_groups(overrides or []), settings.vocoder)
    for note in chosen.notes:
        log.info("evaluation settings: %s", note)
    sets = load_sets(chosen.eval, held_out=lambda one: load_prompts(one, chosen.data))
    # One normaliser for the text synthesis is given and the text WER compares with (both in words);
    # a named set in a language of its own has its own (f5app/text/).
    normaliser_for = normalisers_by_language(settings.text_norm, chosen.eval.language or recorded_language(recorded))
    normaliser = normaliser_for(None)

    evaluator = build_evaluator(chosen.asr, chosen.speaker, device=pick_device(settings.device), language=chosen.eval.language,
                                normaliser=normaliser)
    log.info("evaluating %s with %s", ", ".join(f"{len(one.prompts)} prompt(s)" + (f" of set {one.name}" if one.name else "") for one in sets),
             ", ".join(t.label for t in targets))

    by_set = []
    audio_root = out_path.with_suffix("")
    folders = _audio_folders([t.label for t in targets])
    for target in targets:
        started = time.perf_counter()
        scored = score_sets(sets, evaluator, normaliser_for, _scorer(settings, chosen, target, audio_root / folders[target.label] if len(targets) > 1 else audio_root, normaliser))
        by_set.append((target.label, scored))
        log.info("%s: %d prompts in %.1f s", target.label, scored.overall.num_prompts, time.perf_counter() - started)

    print(format_table(by_set), flush=True)
    record = _record(by_set, chosen)
    _write_json(out_path, record)
    print(out_path, flush=True)
    return {**record, "path": str(out_path)}


# ---------------------------------------------------------------------- what is evaluated


class _Target:
    """One column: a checkpoint to synthesise with (its ckpt settings), or the recordings."""

    def __init__(self, label: str, ckpt=None, run_dir: Path | None = None, resolved=None):  # noqa: ANN001
        self.label = label
        self.ckpt = ckpt
        self.run_dir = run_dir
        self.resolved = resolved  # ResolvedCheckpoint, when there is one

    @property
    def recorded_config(self) -> dict | None:
        metadata = getattr(self.resolved, "metadata", None)
        return metadata.config if metadata is not None and metadata.config else None

    def describe(self) -> dict[str, Any] | None:
        if self.resolved is None:
            return None
        metadata = self.resolved.metadata
        return {
            "label": self.label,
            "source": self.resolved.source,
            "path": str(self.resolved.path),
            "kind": self.resolved.kind,
            "update": metadata.update if metadata is not None else None,
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }


def _target(settings: EvalAppConfig, entry: str | None) -> _Target:
    """Resolve one compare entry (None: this run with ``ckpt=``) without loading weights."""

    run_dir = Path(settings.run_dir)
    ckpt = settings.ckpt
    if entry == RECORDINGS:
        # The ground truth still needs the run's recorded data set for its prompts (when no list is given).
        if settings.eval.prompt_file:
            return _Target(RECORDINGS)
        resolution = resolve(ckpt, purpose="infer", run_dir=run_dir, model=settings.model, dry_run=True)
        return _Target(RECORDINGS, resolved=resolution.chosen, run_dir=run_dir)
    label = entry or settings.run_name
    if entry is not None:
        path = Path(entry).expanduser()
        if entry == "pretrained":
            ckpt = replace(ckpt, name="pretrained", infer_chain=["pretrained"])
        elif path.is_file() or (path.is_dir() and not (path / "checkpoints").is_dir()):
            ckpt = replace(ckpt, name="custom", path=str(path), infer_chain=["custom"])
        elif path.is_dir():
            run_dir = path
        elif (Path(settings.output_root) / "runs" / entry).is_dir():
            run_dir = Path(settings.output_root) / "runs" / entry
        else:
            raise EvalInputError(
                f"compare entry {entry!r} is not a run name under {Path(settings.output_root) / 'runs'}, "
                "a run folder, a checkpoint path, 'pretrained' or 'recordings'"
            )
    resolution = resolve(ckpt, purpose="infer", run_dir=run_dir, model=settings.model, dry_run=True)
    return _Target(label, ckpt=ckpt, run_dir=run_dir, resolved=resolution.chosen)


def _scorer(settings: EvalAppConfig, chosen, target: _Target, folder: Path, normaliser):  # noqa: ANN001, ANN202
    """How one target scores one set: its recordings, or its model speaking each set in the set's words."""
    from f5app.evaluation.sets import speak_set  # deferred, as in run(): imports the evaluator (0.58 s)

    if target.label == RECORDINGS:
        return lambda one, scorer: scorer.evaluate_recordings(
            one.prompts, f"eval.sets.{one.name}" if one.name else chosen.eval.prompt_file or "the validation split")
    synthesizer = _synthesizer(settings, target, chosen.vocoder or settings.vocoder, normaliser.language)
    return lambda one, scorer: speak_set(one, scorer, synthesizer, chosen.eval, folder, checkpoint=target.describe())


def _synthesizer(settings: EvalAppConfig, target: _Target, vocoder, language: str | None):  # noqa: ANN001, ANN202
    from f5app.inference.synthesizer import Synthesizer  # deferred: f5app.inference.synthesizer costs 0.58 s to import (numpy, soundfile; -X importtime); --help must stay fast

    infer = InferConfig(
        run_name=settings.run_name, output_root=settings.output_root, run_dir=str(target.run_dir),
        device=settings.device, dtype=settings.dtype, quantize=settings.quantize, compile=settings.compile, progress=False,
        model=settings.model, ckpt=target.ckpt, vocoder=vocoder,
        text_norm=replace(settings.text_norm, language=language or settings.text_norm.language),
        asr=settings.asr, speaker=settings.speaker,  # a reference without a transcript, or too long, is prepared with these
    )
    synthesizer = Synthesizer.from_config(infer, run_dir=target.run_dir)
    log.info("%s: loaded %s on %s", target.label, synthesizer.source, synthesizer.device)
    return synthesizer


# ---------------------------------------------------------------------- output


def format_table(by_set: list[tuple[str, Any]]) -> str:
    """``by_set``: (label, SetResults) per target. Aggregates side by side (each named set's too),
    then each prompt's text and transcripts."""
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    results = [(label, scored.overall) for label, scored in by_set]
    labels = [label for label, _ in results]
    names = list(dict.fromkeys(name for _, scored in by_set for name in scored.by_set))
    head = max(10, *(len(f"wer@{name}") + 1 for name in names)) if names else 10
    width = max(12, *(len(label) for label in labels))
    lines = [f"{'':<{head}}" + "".join(f"{label:>{width + 2}}" for label in labels)]
    for metric in ("wer", "cer", "sim"):
        lines.append(f"{metric.upper():<{head}}" + "".join(f"{number(getattr(r, metric)):>{width + 2}}" for _, r in results))
    lines.append(f"{'prompts':<{head}}" + "".join(f"{r.num_prompts:>{width + 2}}" for _, r in results))
    for name in names:
        for metric in ("wer", "cer", "sim"):
            row = f"{metric}@{name}"
            lines.append(f"{row:<{head}}" + "".join(
                f"{number(getattr(scored.by_set[name], metric) if name in scored.by_set else None):>{width + 2}}" for _, scored in by_set))
    lines.append("")
    by_id = [{item.id: item for item in result.items} for _, result in results]
    order = list(dict.fromkeys(item.id for _, result in results for item in result.items))
    for prompt_id in order:
        text = next(scored[prompt_id].text for scored in by_id if prompt_id in scored)
        lines.append(f"[{prompt_id}] {text}")
        for (label, _), scored in zip(results, by_id):
            other = scored.get(prompt_id)
            if other is None:
                lines.append(f"  {label}: skipped")
                continue
            sim = "" if other.sim is None else f" sim {other.sim:.2f}"
            lines.append(f"  {label}: wer {other.wer:.2f}{sim}  \"{other.transcript}\"")
    skipped = list(dict.fromkeys(item.describe() for _, result in results for item in result.skipped))
    if skipped:
        lines += ["", f"skipped {len(skipped)} prompt(s), not in the scores above:"] + [f"  {line}" for line in skipped]
    return "\n".join(lines)


def _record(results: list[tuple[str, Any]], chosen) -> dict[str, Any]:  # noqa: ANN001
    """``results``: (label, SetResults) per target; each set's metrics under ``sets`` when eval.sets names any."""
    settings = {"asr": asdict(chosen.asr), "speaker": asdict(chosen.speaker) if chosen.speaker else None, "eval": asdict(chosen.eval)}
    rows = [{"label": label, **scored.to_dict()} for label, scored in results]
    if len(rows) == 1:
        return {**rows[0], "settings": settings, "created_at": _now()}
    return {
        "compare": rows,
        "metrics": {row["label"]: row["metrics"] for row in rows},
        "settings": settings,
        "created_at": _now(),
    }


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _check_out(out: str | None) -> None:
    if out is None:
        return
    path = Path(out).expanduser()
    if path.suffix.lower() != ".json":
        raise EvalInputError(f"out={path}: the results file name must end in .json")
    if path.is_dir():
        raise EvalInputError(f"out={path} is a directory; give a file name ending in .json")


def _output_path(settings: EvalAppConfig, targets: list[_Target]) -> Path:
    if settings.out:
        path = Path(settings.out).expanduser()
    else:
        what = "-vs-".join(_safe(t.label) for t in targets)
        folder = Path(settings.run_dir) / "eval"
        path = unused_name(folder, f"eval-{what}-{datetime.now().strftime('%Y%m%d-%H%M%S')}", ".json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvalInputError(f"cannot create {path.parent}: {error.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise EvalInputError(f"{path.parent} is not writable; choose another out=")
    return path


def _audio_folders(labels: list[str]) -> dict[str, str]:
    """A folder name per compared target; update_00000300 of two runs must not share one."""
    names: dict[str, str] = {}
    for label in labels:
        name = _safe(label)
        if name in names.values():
            name = _safe(f"{Path(label).parent.parent.name}-{Path(label).name}")
        while name in names.values():
            name += "_"
        names[label] = name
    return names


def _safe(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(label).name or label)[:60]


def _write_json(path: Path, record: dict[str, Any]) -> None:
    write_json_atomic(path, record)


# ---------------------------------------------------------------------- entry point


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    with exit_on_user_error(log):
        run(cfg, overrides=list(HydraConfig.get().overrides.task))


USAGE = (
    "usage: python -m f5app.eval [run_name=NAME] [ckpt=auto|best|last|latest|custom|pretrained] "
    "[source=model|recordings] ['compare=[A,B]'] [out=FILE.json] [asr=...] [speaker=...] [eval.KEY=VALUE ...] "
    "['++eval.sets={NAME:{prompt_file:LIST,language:LANG},...}'] (docs/evaluation.md)"
)


def main() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in f5app.infer: idle OpenMP threads must not spin

    defer_unused_imports()
    run_hydra_app(_hydra_main, "eval", USAGE)


if __name__ == "__main__":
    sys.exit(main())
