"""Import upstream's CFM/DiT without running ``f5_tts/model/__init__.py``.

That ``__init__`` imports upstream's Trainer (wandb, datasets, accelerate…), about 2 s that
inference never uses. Registering ``f5_tts.model`` as a lazy package first lets
``f5_tts.model.backbones.dit`` and ``f5_tts.model.cfm`` load on their own, while
``from f5_tts.model import CFM`` (or ``Trainer``) elsewhere in the process still works: the
names resolve on first access through a module ``__getattr__`` (PEP 562).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_EXPORTS = {
    "CFM": "f5_tts.model.cfm",
    "DiT": "f5_tts.model.backbones.dit",
    "MMDiT": "f5_tts.model.backbones.mmdit",
    "UNetT": "f5_tts.model.backbones.unett",
    "Trainer": "f5_tts.model.trainer",
}


def register_lazy_f5_model_package() -> None:
    """No-op when ``f5_tts.model`` is already imported."""
    if "f5_tts.model" in sys.modules:
        return
    spec = importlib.util.find_spec("f5_tts.model")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("f5_tts.model")
    package.__path__ = list(spec.submodule_search_locations)
    package.__file__ = spec.origin
    package.__spec__ = spec
    package.__package__ = "f5_tts.model"

    def __getattr__(name: str):  # noqa: N807 (PEP 562 hook)
        if name in _EXPORTS:
            value = getattr(importlib.import_module(_EXPORTS[name]), name)
            setattr(package, name, value)
            return value
        raise AttributeError(f"module 'f5_tts.model' has no attribute {name!r}")

    package.__getattr__ = __getattr__  # type: ignore[attr-defined]
    package.__all__ = list(_EXPORTS)  # type: ignore[attr-defined]
    sys.modules["f5_tts.model"] = package
    import f5_tts

    f5_tts.model = package  # type: ignore[attr-defined]
