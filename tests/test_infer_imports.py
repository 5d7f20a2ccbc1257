"""The CLI's import deferral: a deferred module runs only when used, and then behaves as itself."""

from __future__ import annotations

import sys

import pytest

from f5app.inference.upstream_import import DeferredModule, defer_unused_imports

MODULE_SOURCE = """
import pathlib
pathlib.Path(__file__).with_name("imported.marker").write_text("yes")
class Style:
    TONE3 = 8
def greet(name, style=None):
    return f"hello {name} {style}"
"""


@pytest.fixture
def slow_module(tmp_path, monkeypatch):
    (tmp_path / "f5app_test_slowmod.py").write_text(MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path / "imported.marker"
    sys.modules.pop("f5app_test_slowmod", None)


def test_a_deferred_module_runs_only_when_first_used_then_acts_as_itself(slow_module):
    defer_unused_imports({"f5app_test_slowmod": ("Style", "greet")})
    from f5app_test_slowmod import Style, greet  # bound at import time, as upstream does

    import f5app_test_slowmod

    assert isinstance(sys.modules["f5app_test_slowmod"], DeferredModule) and not slow_module.exists()
    assert greet("you", style=Style.TONE3) == "hello you 8"
    assert slow_module.exists()
    assert not isinstance(sys.modules["f5app_test_slowmod"], DeferredModule)
    assert f5app_test_slowmod.greet("me") == "hello me None"


def test_modules_already_imported_or_absent_are_left_alone():
    before = sys.modules["json"] if "json" in sys.modules else __import__("json")
    defer_unused_imports({"json": (), "f5app_no_such_module_anywhere": ()})
    assert sys.modules["json"] is before and "f5app_no_such_module_anywhere" not in sys.modules
