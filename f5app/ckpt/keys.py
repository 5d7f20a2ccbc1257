"""State-dict key names: the canonical CFM form and the known ways other files spell it.

The canonical key of a weight is what ``f5app.model.build_cfm(...).state_dict()`` uses:
``transformer.…``. Files from elsewhere wrap those names in prefixes added by the tool that
saved them, in any combination:

- ``ema_model.`` — ema_pytorch's EMA wrapper (upstream's trainer checkpoints and released weights)
- ``ema.`` — other EMA wrappers
- ``module.`` — DistributedDataParallel / DataParallel
- ``_orig_mod.`` — ``torch.compile``

and carry entries that are not weights of the model: the EMA wrapper's ``initted`` and ``step``,
a trainer's ``update``, and mel-spectrogram buffers (``mel_spec.mel_stft.mel_scale.fb``,
``mel_spec.mel_stft.spectrogram.window``) that older upstream versions saved and newer ones
recompute (upstream's ``load_checkpoint`` deletes them the same way).

No torch import here: these are names only, so the checkpoint CLI can use them cheaply.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping, TypeVar

#: Wrapper prefixes stripped from the front of a key, repeatedly, in any order.
WRAPPER_PREFIXES: tuple[str, ...] = ("ema_model.", "ema.", "module.", "_orig_mod.")
#: Whole keys (after prefixes are stripped) that are bookkeeping, not weights.
NON_WEIGHT_KEYS: frozenset[str] = frozenset({"initted", "step", "update"})
#: Key prefixes (after prefixes are stripped) of buffers the model recomputes instead of loading.
NON_WEIGHT_PREFIXES: tuple[str, ...] = ("mel_spec.",)

V = TypeVar("V")


def split_key(key: str) -> tuple[str, str]:
    """``"module._orig_mod.transformer.x"`` -> ``("module._orig_mod.", "transformer.x")``."""
    stripped = key
    while True:
        for prefix in WRAPPER_PREFIXES:
            if stripped.startswith(prefix):
                stripped = stripped[len(prefix) :]
                break
        else:
            return key[: len(key) - len(stripped)], stripped


def is_non_weight(canonical: str) -> bool:
    return canonical in NON_WEIGHT_KEYS or canonical.startswith(NON_WEIGHT_PREFIXES)


def normalize_key(key: str) -> str | None:
    """The canonical name of ``key``, or None when the entry is not a model weight."""
    _, canonical = split_key(key)
    if not canonical or is_non_weight(canonical):
        return None
    return canonical


class DuplicateWeightKeys(ValueError):
    """Two raw keys name the same canonical weight (e.g. both ``module.x`` and ``x``)."""


def canonicalize(state: Mapping[str, V]) -> tuple[dict[str, V], list[str]]:
    """Rename every key to its canonical form and drop non-weight entries.

    Returns the new mapping and one human-readable note per adaptation applied.
    """
    canonical_state: dict[str, V] = {}
    origin: dict[str, str] = {}
    stripped: Counter[str] = Counter()
    dropped: list[str] = []
    dropped_buffers: list[str] = []
    for key, value in state.items():
        prefix, canonical = split_key(key)
        if canonical.startswith(NON_WEIGHT_PREFIXES):
            dropped_buffers.append(canonical)
            continue
        if not canonical or is_non_weight(canonical):
            dropped.append(key)
            continue
        if canonical in canonical_state:
            raise DuplicateWeightKeys(
                f"keys {origin[canonical]!r} and {key!r} both name weight {canonical!r}; "
                "the file mixes two copies of the model — export one of them"
            )
        canonical_state[canonical] = value
        origin[canonical] = key
        if prefix:
            stripped[prefix] += 1
    notes = [f"stripped {prefix!r} prefix from {count} keys" for prefix, count in sorted(stripped.items())]
    if dropped:
        notes.append(f"dropped non-weight entries: {_short_list(sorted(dropped))}")
    if dropped_buffers:
        notes.append(f"dropped mel-spectrogram buffers (recomputed by the model): {_short_list(sorted(dropped_buffers))}")
    return canonical_state, notes


def _short_list(items: Iterable[str], limit: int = 6) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, … ({len(items)} in all)"
