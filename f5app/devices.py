"""The one rule for choosing a device, for every model f5app loads (the speech model, the vocoder,
the ASR, the speaker embedder).

``pick_device(name, ...)``:

1. An explicit name (``cpu``, ``cuda``, ``cuda:1``, ``mps``) must be a kind the model's library
   runs on (``kinds``) and be present here; otherwise a :class:`DeviceError` (a UserError) names
   the setting and the options. An explicit choice is never silently replaced.
2. ``auto`` with ``inherit`` (the device of the model a helper serves, e.g. the evaluator's ASR
   beside the synthesiser) takes that device when the helper's library runs on its kind and it
   is present.
3. Otherwise ``auto`` is the first present of ``cuda``, ``mps``, ``cpu`` among ``kinds``.

Presence is asked of torch unless the library has its own view (CTranslate2 counts its own CUDA
devices and has no MPS): pass ``present``.
"""

from __future__ import annotations

from typing import Callable

from f5app.errors import UserError

#: ``auto`` tries these in order.
AUTO_ORDER = ("cuda", "mps", "cpu")


class DeviceError(UserError, ValueError):
    """A device setting that names no device, or one absent on this machine."""


def torch_present(kind: str) -> bool:
    """Whether torch can use a device of ``kind`` here."""
    if kind == "cpu":
        return True
    import torch  # deferred: torch costs 1.9 s (NOTES.md) and the help and ckpt paths never pick a device

    if kind == "cuda":
        return torch.cuda.is_available()
    return kind == "mps" and hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def pick_device(
    name: str, *, setting: str = "device", kinds: tuple[str, ...] = AUTO_ORDER,
    present: Callable[[str], bool] = torch_present, inherit: str | None = None,
) -> str:
    """The device ``name`` means under the module docstring's rule (``setting`` names it in errors)."""
    if name == "auto":
        if inherit and inherit != "auto" and inherit.split(":")[0] in kinds and present(inherit.split(":")[0]):
            return inherit
        return next(kind for kind in AUTO_ORDER if kind in kinds and present(kind))
    kind = name.split(":")[0]
    if kind not in kinds:
        options = ["auto", *(k for k in ("cpu", "cuda", "mps") if k in kinds)]
        raise DeviceError(f"{setting}={name} is not an option; use {', '.join(options[:-1])} or {options[-1]}")
    if not present(kind):
        raise DeviceError(f"{setting}={name} is not available on this machine; use {setting}=auto or {setting}=cpu")
    return name
