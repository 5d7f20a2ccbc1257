"""Which evaluation settings apply: the ones recorded with a checkpoint, unless the command line says otherwise.

A run trained with ``experiment=demo`` records ``asr=tiny_en speaker=resemblyzer`` and its
``eval`` settings in every checkpoint's config; ``python -m f5app.eval`` on that run scores with
the same models, prompts and vocoder. A group the user named on the command line (``asr=whisper``,
``eval.num_prompts=8``) wins over the recorded one, group by group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from f5app.config import AsrConfig, DataConfig, EvalConfig, SpeakerConfig, VocoderConfig, data_schema_for, to_settings
from f5app.errors import first_line

#: Settings a checkpoint records that decide how it is scored (the vocoder: how its mels are heard).
GROUPS = ("asr", "speaker", "eval", "vocoder")


@dataclass(frozen=True)
class EvalSettings:
    asr: AsrConfig
    speaker: SpeakerConfig | None
    eval: EvalConfig
    data: DataConfig | None  # the data set the model was trained on (validation prompts), if recorded
    notes: tuple[str, ...] = field(default_factory=tuple)
    vocoder: VocoderConfig | None = None  # which settings came from where, for the log


def overridden_groups(overrides: Iterable[str]) -> dict[str, set[str] | None]:
    """What the command line set, per evaluation group: None for the whole group (``asr=whisper``,
    ``~speaker``), else the keys inside it (``eval.num_prompts=8`` -> ``{"num_prompts"}``)."""
    named: dict[str, set[str] | None] = {}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        group, _, rest = key.partition(".")
        group = group.split("/", 1)[0]
        if group not in GROUPS:
            continue
        if not rest:
            named[group] = None
        elif named.get(group, set()) is not None:
            named.setdefault(group, set()).add(rest)  # type: ignore[union-attr]
    return named


def effective_settings(
    asr: AsrConfig, speaker: SpeakerConfig | None, evaluation: EvalConfig, recorded: dict[str, Any] | None,
    overridden: dict[str, set[str] | None], vocoder: VocoderConfig | None = None,
) -> EvalSettings:
    """Current settings, with each group replaced by its ``recorded`` value (a checkpoint's config)
    except what ``overridden`` names: a whole group keeps the current one, keys keep theirs."""

    recorded = recorded if isinstance(recorded, dict) else {}
    current: dict[str, Any] = {"asr": asr, "speaker": speaker, "eval": evaluation, "vocoder": vocoder}
    schemas = {"asr": AsrConfig, "speaker": SpeakerConfig, "eval": EvalConfig, "vocoder": VocoderConfig}
    notes = []
    for group in GROUPS:
        value = recorded.get(group)
        if (group in overridden and overridden[group] is None) or not isinstance(value, dict) or current[group] is None:
            continue
        merged = dict(value)
        mine = asdict(current[group]) if current[group] is not None else {}
        for key in overridden.get(group) or ():
            top = key.split(".", 1)[0]
            if top in mine:
                merged[top] = mine[top]
        try:
            current[group] = to_settings(merged, schemas[group])
        except Exception as error:  # a checkpoint from another f5app version: keep ours, say so
            notes.append(f"{group}: the checkpoint's recorded settings do not fit this version ({first_line(error)}); using the command line's")
            continue
        kept = sorted(overridden.get(group) or ())
        notes.append(f"{group}: as recorded in the checkpoint" + (f", except {', '.join(kept)} from the command line" if kept else ""))
    data = None
    if isinstance(recorded.get("data"), dict) and recorded["data"].get("path"):
        try:
            data = to_settings(recorded["data"], data_schema_for(recorded["data"]))
        except Exception as error:
            notes.append(f"data: the recorded data settings do not fit this version ({first_line(error)})")
    return EvalSettings(current["asr"], current["speaker"], current["eval"], data, tuple(notes), current["vocoder"])
