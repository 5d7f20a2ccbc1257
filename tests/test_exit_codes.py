"""Exit statuses, the same for every entry point: 0 ok, 1 error, 2 bad input or a refused
checkpoint (one line, no traceback), 3 stopped by a signal (README.md, f5app/errors.py).

Each entry point is run in-process through its ``main()``, as the console script runs it.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from f5app.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_STOPPED, USER_ERRORS, UserError, run_entry_point

#: Every expected failure of the code base is a UserError; each keeps its older base for callers
#: that catch that.
EXPECTED_FAILURES = [
    ("f5app.data.prepare", "DataError", ValueError),
    ("f5app.ckpt.resolve", "ResolutionError", RuntimeError),
    ("f5app.ckpt.adapt", "WeightsMismatch", ValueError),
    ("f5app.ckpt.reader", "UnreadableWeights", ValueError),
    ("f5app.hub", "PretrainedUnavailable", RuntimeError),
    ("f5app.ckpt.store", "CheckpointSaveError", RuntimeError),
    ("f5app.training.lock", "RunLockedError", RuntimeError),
    ("f5app.inference.errors", "InferenceInputError", ValueError),
    ("f5app.report", "ReportError", Exception),
]


@pytest.mark.parametrize(("module", "name", "older_base"), EXPECTED_FAILURES)
def test_every_expected_failure_is_a_user_error(module, name, older_base):
    error_type = getattr(importlib.import_module(module), name)
    assert issubclass(error_type, UserError) and issubclass(error_type, older_base)


def test_errors_py_finds_user_errors_by_type_not_by_module_name():
    source = Path(importlib.import_module("f5app.errors").__file__).read_text(encoding="utf-8")
    assert "sys.modules" not in source
    assert USER_ERRORS == (UserError, FileNotFoundError)  # a file the user named that is missing


# ------------------------------------------------------------------------------ the one rule


def test_a_user_error_is_one_line_and_status_2(capsys):
    def body():
        raise UserError("data.path=/nowhere does not exist; pass the folder holding metadata.csv")

    assert run_entry_point("f5app.x", body) == EXIT_BAD_INPUT
    assert capsys.readouterr().err == "error: data.path=/nowhere does not exist; pass the folder holding metadata.csv\n"


def test_a_missing_file_is_bad_input_and_a_crash_is_a_traceback():
    def missing():
        open("/nonexistent/f5app/story.txt")

    def crash():
        raise RuntimeError("a bug")

    assert run_entry_point("f5app.x", missing) == EXIT_BAD_INPUT
    with pytest.raises(RuntimeError, match="a bug"):  # Python prints it and exits 1
        run_entry_point("f5app.x", crash)


def test_ctrl_c_and_sigterm_are_status_3_and_the_previous_handler_comes_back(capsys):
    def interrupted():
        raise KeyboardInterrupt

    def terminated():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # the handler raises before this returns

    before = signal.getsignal(signal.SIGTERM)
    assert run_entry_point("f5app.x", interrupted) == EXIT_STOPPED
    assert run_entry_point("f5app.x", terminated) == EXIT_STOPPED
    assert signal.getsignal(signal.SIGTERM) is before
    assert capsys.readouterr().err.splitlines() == ["f5app.x: stopped by a signal"] * 2
    assert run_entry_point("f5app.x", lambda: None) == EXIT_OK


# ------------------------------------------------------------------------------ each entry point


@pytest.fixture
def hydra_main(monkeypatch, tmp_path):
    """hydra_main("f5app.train", "optim.lrr=1") -> the exit status of that command line, in-process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.chdir(tmp_path)  # anything Hydra writes lands here

    def _run(module: str, *argv: str) -> int:
        monkeypatch.setattr(sys, "argv", [module, *argv])
        try:
            importlib.import_module(module).main()
        except SystemExit as done:
            return done.code
        return EXIT_OK

    yield _run
    root.handlers[:], root.level = handlers, level  # a job's run reconfigures logging


@pytest.mark.parametrize(
    ("module", "argv", "message"),
    [
        ("f5app.train", ["optim.lrr=1"], "Could not override 'optim.lrr'"),
        ("f5app.train", ["trainer.max_updates=many"], "could not be converted to Integer"),
        ("f5app.infer", ["model=nope", "text=Hi"], "Could not find 'model/nope'"),
        ("f5app.prepare", ["data=csv_wavs"], "data.path is required"),
    ],
)
def test_hydra_entry_points_exit_2_on_a_bad_command_line(hydra_main, capsys, module, argv, message):
    assert hydra_main(module, *argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_infer_exits_2_when_the_text_file_is_missing(hydra_main, capsys, tmp_path):
    assert hydra_main("f5app.infer", f"output_root={tmp_path}", "text_file=/nonexistent/story.txt") == EXIT_BAD_INPUT
    assert "text_file=/nonexistent/story.txt does not exist" in capsys.readouterr().err


def test_prepare_exits_2_on_data_it_cannot_use(hydra_main, capsys, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.csv").write_text("file|words\n", encoding="utf-8")
    assert hydra_main("f5app.prepare", "data=csv_wavs", f"data.path={tmp_path / 'bad'}", f"output_root={tmp_path}") == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "wrong header" in err and "Traceback" not in err


def test_a_hydra_entry_point_stopped_by_a_signal_exits_3(monkeypatch, capsys):
    from f5app.cli_help import run_hydra_app

    monkeypatch.setattr(sys, "argv", ["f5app.infer", "text=Hi"])
    with pytest.raises(SystemExit) as stopped:
        run_hydra_app(lambda: os.kill(os.getpid(), signal.SIGTERM) or signal.pause(), "infer", "usage")
    assert stopped.value.code == EXIT_STOPPED
    assert "stopped by a signal" in capsys.readouterr().err


def test_report_exits_2_on_a_folder_that_is_no_sweep_and_3_when_interrupted(tmp_path, capsys, monkeypatch):
    from f5app import report

    assert report.main([str(tmp_path / "nowhere")]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith("error: sweep folder")

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "collect", interrupted)
    assert report.main([str(tmp_path)]) == EXIT_STOPPED


def test_ckpt_exits_2_on_bad_input_and_1_when_the_answer_is_nothing_found(tmp_path, capsys):
    from f5app.ckpt_cli import main

    assert main(["resolve", "ckpt=nonexistent_option"]) == EXIT_BAD_INPUT
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out.safetensors")]) == EXIT_BAD_INPUT
    assert main(["prune", str(tmp_path), "--keep-last", "0"]) == EXIT_BAD_INPUT
    assert main(["list", str(tmp_path / "nowhere")]) == 1  # documented: invalid or nothing found
    with pytest.raises(SystemExit) as usage:  # argparse's own usage errors
        main(["resolve", "--for", "sing"])
    assert usage.value.code == EXIT_BAD_INPUT
    assert "Traceback" not in capsys.readouterr().err
