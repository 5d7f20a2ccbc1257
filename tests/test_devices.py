"""The one device rule (f5app/devices.py), as every model loader applies it. Presence is given as a
function, so each branch is checked on this CPU-only machine as it would run on a GPU one."""

from __future__ import annotations

import pytest

from f5app.devices import DeviceError, pick_device


def present_here(*kinds: str):
    return lambda kind: kind in kinds


@pytest.mark.parametrize(("here", "expected"), [(("cuda", "mps", "cpu"), "cuda"), (("mps", "cpu"), "mps"), (("cpu",), "cpu")])
def test_auto_is_the_first_present_of_cuda_mps_cpu(here, expected):
    assert pick_device("auto", present=present_here(*here)) == expected


def test_auto_takes_the_callers_device_when_the_library_runs_there():
    assert pick_device("auto", inherit="cuda:1", present=present_here("cuda", "cpu")) == "cuda:1"
    # CTranslate2 (the ASR) has no MPS: beside a model on mps it runs on cuda when present, else cpu
    assert pick_device("auto", inherit="mps", kinds=("cuda", "cpu"), present=present_here("mps", "cpu")) == "cpu"
    assert pick_device("auto", inherit="mps", kinds=("cuda", "cpu"), present=present_here("cuda", "mps", "cpu")) == "cuda"


def test_an_explicit_device_is_kept_or_refused_never_replaced():
    assert pick_device("cuda:1", present=present_here("cuda", "cpu")) == "cuda:1"
    with pytest.raises(DeviceError, match=r"^asr.device=cuda is not available on this machine; use asr.device=auto or asr.device=cpu$"):
        pick_device("cuda", setting="asr.device", kinds=("cuda", "cpu"), present=present_here("cpu"))
    with pytest.raises(DeviceError, match=r"^asr.device=mps is not an option; use auto, cpu or cuda$"):
        pick_device("mps", setting="asr.device", kinds=("cuda", "cpu"), present=present_here("mps", "cpu"))


def test_every_loader_uses_the_one_rule():
    """No second device rule: the ASR, the speaker embedder and the synthesiser import this one."""
    import f5app.inference.synthesizer as synthesizer
    import f5app.speech.asr as asr
    import f5app.speech.speaker as speaker

    for module in (asr, speaker, synthesizer):
        assert module.pick_device is pick_device
        assert not hasattr(module, "_pick_device")


@pytest.mark.parametrize(("message", "expected"), [
    ("first\nsecond", "first"), ("\n\n  indented first  \nnext", "indented first"), ("", "ValueError"), ("\n \n", "ValueError"),
])
def test_the_first_line_of_an_error_never_raises_and_names_the_type_when_empty(message, expected):
    from f5app.errors import first_line

    assert first_line(ValueError(message)) == expected
    assert first_line(ValueError(message), default="") == ("" if expected == "ValueError" else expected)
    assert first_line(ValueError("x" * 300), limit=100) == "x" * 100
