"""The training form: named settings, each checked against its type and range.

The page never sends Hydra overrides: an override such as ``+hydra.callbacks.x._target_=...``
would run any code the sender names. It sends values for the settings below; each becomes one
``key=value`` argument written by this module, and the command is an argument list (never a
shell). Resuming replays the overrides the run recorded, each checked by the same rules.
"""

from __future__ import annotations

import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from f5app.ckpt.schema import read_metadata
from f5app.errors import UserError
from f5app.run_state import read_progress
from f5app.studio.roots import Roots, valid_name

#: Characters a path may hold to be passed to Hydra unquoted: no ``$`` (interpolation), no
#: ``,`` (a sweep list), no quotes, brackets or ``=``.
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./ ~+-]+$")


class FormError(UserError):
    """A training setting with a value outside its type or range; the message names it."""


@dataclass(frozen=True)
class Setting:
    key: str
    kind: str  # choice | int | float | path | name
    label: str
    choices: tuple[str, ...] = ()
    low: float = 0
    high: float = 0
    default: Any = None

    def check(self, value: Any, roots: Roots) -> str:
        """The override's value, written by us; :class:`FormError` when ``value`` does not fit."""
        if self.kind == "choice":
            if value not in self.choices:
                raise FormError(f"{self.key}={value!r} is not an option; use one of {', '.join(self.choices)}")
            return str(value)
        if self.kind in ("int", "float"):
            try:
                number = int(value) if self.kind == "int" and not isinstance(value, float) else float(value)
            except (TypeError, ValueError):
                raise FormError(f"{self.key}={value!r} is not a{'n integer' if self.kind == 'int' else ' number'}") from None
            if isinstance(value, bool) or (self.kind == "int" and number != int(number)) or not math.isfinite(number) or not self.low <= number <= self.high:
                raise FormError(f"{self.key}={value!r} must be {'an integer ' if self.kind == 'int' else ''}between {self.low:g} and {self.high:g}")
            return str(int(number)) if self.kind == "int" else repr(float(number))
        if self.kind == "name":
            if not valid_name(value):
                raise FormError(f"{self.key}={value!r} is not a name (letters, digits and _.=,+- only)")
            if not re.match(r"^[A-Za-z0-9_.-]+$", value):
                raise FormError(f"{self.key}={value!r}: use letters, digits, '_', '.' and '-' only")
            return value
        if self.kind == "path":
            folder = roots.in_data(value)
            if not SAFE_PATH.match(str(folder)):
                raise FormError(f"{self.key}: the folder {folder} has characters Hydra would read as syntax ($ , = quotes brackets); rename it")
            return str(folder)
        raise AssertionError(self.kind)


SETTINGS: tuple[Setting, ...] = (
    Setting("run_name", "name", "run name", default="my_voice"),
    Setting("experiment", "choice", "preset", ("none", "demo"), default="none"),
    Setting("data", "choice", "data kind", ("csv_wavs", "recordings", "demo"), default="csv_wavs"),
    Setting("data.path", "path", "data folder"),
    Setting("model", "choice", "model", ("f5tts_v1_base", "f5tts_v1_small", "f5tts_base", "f5tts_small", "e2tts_base", "e2tts_small", "tiny"),
            default="f5tts_v1_base"),
    Setting("finetune", "choice", "fine-tuning", ("full", "lora"), default="full"),
    Setting("ckpt", "choice", "start from", ("auto", "pretrained", "last", "best"), default="auto"),
    Setting("asr", "choice", "ASR (recordings, evaluation)", ("whisper", "tiny_en"), default="whisper"),
    Setting("logger", "choice", "logger", ("tensorboard", "none"), default="tensorboard"),
    Setting("trainer.max_updates", "int", "updates", low=1, high=10_000_000, default=10000),
    Setting("trainer.epochs", "int", "epochs (at most)", low=1, high=10_000_000, default=1000),
    Setting("trainer.save_every", "int", "save every", low=1, high=10_000_000, default=500),
    Setting("trainer.val_every", "int", "validate every", low=0, high=10_000_000, default=250),
    Setting("eval.every", "int", "evaluate every (0: never)", low=0, high=10_000_000, default=500),
    Setting("optim.lr", "float", "learning rate", low=1e-8, high=1.0, default=1e-5),
    Setting("optim.warmup_updates", "int", "warm-up updates", low=0, high=10_000_000, default=200),
    Setting("data.frames_per_gpu", "int", "frames per batch", low=100, high=10_000_000, default=38400),
    Setting("data.max_samples", "int", "clips per batch (max)", low=1, high=4096, default=64),
    Setting("data.val_fraction", "float", "held-out fraction", low=0.0, high=0.9, default=0.1),
)
BY_KEY = {setting.key: setting for setting in SETTINGS}
#: Set by the studio itself, never by the form.
OWN_KEYS = ("output_root",)


def train_overrides(values: dict[str, Any], roots: Roots) -> list[str]:
    """``key=value`` arguments for ``f5app.train`` from the form's values (unknown keys refused)."""
    if not isinstance(values, dict):
        raise FormError("the form must be an object of named settings")
    unknown = sorted(set(values) - set(BY_KEY))
    if unknown:
        raise FormError(f"unknown setting(s) {', '.join(map(str, unknown))[:200]}; the form takes: {', '.join(BY_KEY)}")
    if not values.get("run_name"):
        raise FormError("run_name is required")
    overrides = []
    for setting in SETTINGS:  # a fixed order: the same form gives the same command
        value = values.get(setting.key)
        if value is None or value == "":
            continue
        if setting.key == "experiment" and value == "none":
            continue
        overrides.append(f"{setting.key}={setting.check(value, roots)}")
    kind = values.get("data") or "csv_wavs"
    if kind != "demo" and values.get("experiment") != "demo" and not values.get("data.path"):
        raise FormError(f"data={kind} needs a data folder (data.path)")
    if kind == "demo" and values.get("data.path"):
        raise FormError("data=demo is the bundled set; leave the data folder empty")
    return overrides


def checked_overrides(recorded: list[str], roots: Roots) -> list[str]:
    """A run's recorded overrides, each checked as the form's values are; anything else refused."""
    values: dict[str, Any] = {}
    for override in recorded:
        key, sep, value = str(override).partition("=")
        key = key.strip()
        if not sep or key not in BY_KEY and key not in OWN_KEYS:
            raise FormError(f"the run was started with {override!r}, which the studio does not replay; resume it from a terminal")
        if key in BY_KEY:
            values[key] = value
    return train_overrides(values, roots)


def command(module: str, overrides: list[str], output_root: Path) -> tuple[list[str], str]:
    """(argument list to run, the command as a user would type it)."""
    args = ["-m", module, f"output_root={output_root}", *overrides]
    return [sys.executable, *args], shlex.join(["python", *args])


def recorded_overrides(run_dir: Path) -> Optional[list[str]]:
    """The overrides the run's newest checkpoint records (what its command line said), or None."""
    last = read_progress(run_dir).last_checkpoint
    metadata = read_metadata(last) if last is not None else None
    return list(metadata.hydra.overrides) if metadata is not None else None


def form_description() -> list[dict[str, Any]]:
    return [{"key": s.key, "kind": s.kind, "label": s.label, "choices": list(s.choices), "low": s.low, "high": s.high,
             "default": s.default} for s in SETTINGS]
