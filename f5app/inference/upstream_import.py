"""Import upstream's CFM/DiT without paying for what inference never uses.

Two tools: :func:`register_lazy_f5_model_package` (safe in any process) and
:func:`defer_unused_imports` (for the CLI's own fresh process).

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
    import f5_tts  # deferred: f5_tts.model costs 6.7 s (NOTES.md): only code that builds or reads the model pays it

    f5_tts.model = package  # type: ignore[attr-defined]


#: Imported at module level on the way to upstream's DiT but never used when sampling it
#: (module -> names other modules bind with ``from module import name``):
#: einx (x_transformers; pulls torch._dynamo, ~1.5-2.5 s), x_transformers' package __init__
#: (every wrapper class), librosa.filters (``mel``, for bigvgan mels; pulls scipy.signal and
#: numba, ~1.5 s), rjieba/pypinyin (Chinese text only, ~1 s), scipy.integrate (torchdiffeq's
#: scipy solver, unused with euler).
DEFERRABLE_MODULES: dict[str, tuple[str, ...]] = {
    "einx": (),
    "x_transformers": (),
    "librosa.filters": ("mel",),
    "rjieba": (),
    "pypinyin": ("Style", "lazy_pinyin"),
    "scipy.integrate": ("solve_ivp",),
}


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is used; then imports the real one and
    mirrors it. ``names`` are bound elsewhere by ``from module import name`` at import time:
    they get proxies that load the real module when first called or inspected."""

    def __init__(self, name: str, spec: importlib.machinery.ModuleSpec, names: tuple[str, ...] = ()):
        super().__init__(name)
        self.__spec__ = spec
        self.__loader__ = spec.loader
        self.__file__ = spec.origin
        if spec.submodule_search_locations is not None:
            self.__path__ = list(spec.submodule_search_locations)
        for attribute in names:
            self.__dict__[attribute] = _AttributeProxy(self, attribute)

    def _load(self) -> types.ModuleType:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update({k: v for k, v in real.__dict__.items() if k != "__spec__"})
        return real

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._load(), name)


class _AttributeProxy:
    """``from module import name`` bound before the module loaded: calls and attribute reads load it."""

    def __init__(self, module: DeferredModule, name: str):
        self._module, self._name = module, name

    def _target(self):
        return getattr(self._module._load(), self._name)

    def __call__(self, *args, **kwargs):
        return self._target()(*args, **kwargs)

    def __getattr__(self, attribute: str):
        return getattr(self._target(), attribute)


def defer_unused_imports(modules: dict[str, tuple[str, ...]] | None = None) -> None:
    """Make the CLI's fresh process skip imports it will not use (see :data:`DEFERRABLE_MODULES`).

    Only for processes we own from the start (``python -m f5app.infer``): anything that later
    touches a deferred module still gets the real one, just loaded at that moment.
    """
    for name, names in (DEFERRABLE_MODULES if modules is None else modules).items():
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.loader is not None:
            sys.modules[name] = DeferredModule(name, spec, names)
