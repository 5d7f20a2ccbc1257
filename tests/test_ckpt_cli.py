"""``python -m f5app.ckpt``: every command, exit codes and the JSON keys scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ckpt_factory import (
    make_f5app_checkpoint,
    make_safetensors,
    make_temp_leftover,
    dead_pid,
    tiny_model_config,
    tiny_vocab,
    truncate,
)
from f5app.ckpt_cli import main

MODEL, VOCAB = tiny_model_config(), tiny_vocab()


@pytest.fixture
def run(tmp_path):
    """outputs/runs/voice with update 100 (best), 200, 300 (last)."""
    run_dir = tmp_path / "outputs" / "runs" / "voice"
    for update, loss in ((100, 0.1), (200, 0.5), (300, 0.4)):
        make_f5app_checkpoint(run_dir / "checkpoints", update, MODEL, VOCAB, val_loss=loss, run_name="voice")
    return run_dir


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_resolve_train_answers_what_training_would_load(run, tmp_path, capsys):
    overrides = [f"output_root={tmp_path / 'outputs'}", "run_name=voice", "model=tiny"]
    assert main(["resolve", "--for", "train", "--json", *overrides]) == 0
    answer = _json(capsys)
    assert answer["mode"] == "resume" and answer["chosen"].endswith("update_00000300")
    assert all(set(c) >= {"path", "status", "reason"} for c in answer["candidates"])

    assert main(["resolve", *overrides]) == 0
    out = capsys.readouterr().out
    assert "checkpoint resolution for train" in out and "train: resume from" in out


def test_resolve_infer_with_group_options(run, tmp_path, capsys):
    base = [f"output_root={tmp_path / 'outputs'}", "run_name=voice"]
    expected = {"best": "update_00000100", "last": "update_00000300", "latest": "update_00000300", "auto": "update_00000100"}
    for option, name in expected.items():
        assert main(["resolve", "--for", "infer", "--json", *base, f"ckpt={option}"]) == 0
        answer = _json(capsys)
        assert answer["mode"] == "infer" and answer["chosen"].endswith(name), option


def test_resolve_is_a_dry_run_and_exits_1_when_nothing_is_usable(run, tmp_path, capsys):
    truncate(run / "checkpoints" / "update_00000300" / "model.pt")
    base = [f"output_root={tmp_path / 'outputs'}", "run_name=voice"]
    assert main(["resolve", "--for", "infer", "--json", *base, "ckpt=last"]) == 1
    answer = _json(capsys)
    assert answer["chosen"] is None and answer["candidates"][0]["reason"].endswith("(would be quarantined)")
    assert (run / "checkpoints" / "update_00000300").is_dir()  # nothing renamed
    assert main(["resolve", "--for", "infer", "--json", *base, "ckpt=auto"]) == 0
    assert _json(capsys)["chosen"].endswith("update_00000100")
    assert main(["resolve", "--for", "infer", *base, "run_name=empty", f"ckpt.cache_dir={tmp_path}"]) == 1
    assert "error: no usable checkpoint for infer" in capsys.readouterr().out


def test_resolve_usage_errors_exit_2(capsys):
    assert main(["resolve", "ckpt=nonexistent_option"]) == 2
    assert "f5app-ckpt resolve:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as raised:
        main(["resolve", "--for", "sing"])
    assert raised.value.code == 2


def test_list_marks_best_and_last_and_reports_damage(run, capsys):
    truncate(run / "checkpoints" / "update_00000200" / "model.pt")
    make_temp_leftover(run / "checkpoints", 400, dead_pid(), MODEL, VOCAB)
    assert main(["list", str(run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = {line.split()[0]: line for line in lines[2:]}
    assert "best" in row["update_00000100"] and "last" in row["update_00000300"]
    assert "size mismatch model.pt" in row["update_00000200"]
    assert any(name.startswith(".tmp-update_00000400-") and "temporary" in line for name, line in row.items())

    assert main(["list", str(run), "--json"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    first = objects[0]
    assert set(first) >= {"name", "update", "metrics", "size_bytes", "status", "marks", "lineage", "config", "files", "fingerprint"}
    assert [o["update"] for o in objects][:3] == [400, 300, 200]
    assert objects[1]["marks"] == ["last"] and objects[1]["metrics"]["val_loss"] == 0.4


def test_list_of_a_missing_run_exits_1(tmp_path, capsys):
    assert main(["list", str(tmp_path / "nowhere")]) == 1


def test_info_json_has_the_stable_keys(run, capsys):
    folder = run / "checkpoints" / "update_00000200"
    assert main(["info", str(folder), "--json"]) == 0
    info = _json(capsys)
    assert set(info) >= {"update", "metrics", "config", "lineage", "files", "fingerprint"}
    assert info["update"] == 200 and info["metrics"]["val_loss"] == 0.5
    assert set(info["files"]) == {"model.pt", "training_state.pt", "vocab.txt", "rng_state_0.pt"}
    assert len(info["fingerprint"]) >= 16

    assert main(["info", str(folder)]) == 0
    assert "fingerprint" in capsys.readouterr().out
    assert main(["list", str(run), "--json"]) == 0
    listed = {o["name"]: o for o in map(json.loads, capsys.readouterr().out.splitlines())}
    assert listed["update_00000200"]["fingerprint"] == info["fingerprint"]  # recorded at save, no torch needed
    assert listed["update_00000100"]["fingerprint"] != info["fingerprint"]


def test_info_fingerprint_is_format_independent(run, tmp_path, capsys):
    folder = run / "checkpoints" / "update_00000300"
    out = tmp_path / "export"
    out.mkdir()
    assert main(["export", str(folder), str(out), "--format", "safetensors"]) == 0
    capsys.readouterr()
    exported = out / "model.safetensors"
    assert main(["info", str(folder), "--json"]) == 0
    ours = _json(capsys)["fingerprint"]
    assert main(["info", str(exported), "--json"]) == 0
    theirs = _json(capsys)
    assert theirs["fingerprint"] == ours and theirs["update"] == 300  # metadata carried along


def test_validate_exit_codes_and_json(run, tmp_path, capsys):
    good = run / "checkpoints" / "update_00000100"
    assert main(["validate", str(good), "--full"]) == 0
    assert "valid:" in capsys.readouterr().out
    truncate(good / "model.pt")
    assert main(["validate", str(good), "--json"]) == 1
    result = _json(capsys)
    assert result["ok"] is False and "truncated" in result["reason"] and result["kind"] == "f5app"
    safetensors = make_safetensors(tmp_path / "w.safetensors", MODEL, len(VOCAB))
    assert main(["validate", str(safetensors), "--full", "--json"]) == 0
    assert _json(capsys)["checks"][-1] == "finite"


def test_prune_keeps_newest_and_best(run, capsys):
    assert main(["prune", str(run), "--keep-last", "1"]) == 0
    out = capsys.readouterr().out
    assert "deleted update_00000200" in out
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.is_dir()) == ["update_00000100", "update_00000300"]
    assert main(["prune", str(run), "--keep-last", "0"]) == 2


@pytest.mark.slow
def test_help_runs_as_a_module_without_importing_torch():
    code = (
        "import sys, runpy; sys.argv = ['f5app-ckpt', '--help']\n"
        "try:\n    runpy.run_module('f5app.ckpt', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules and 'f5_tts' not in sys.modules, 'heavy import on --help'\n"
        "print('OK')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert "resolve" in result.stdout and "prune" in result.stdout and result.stdout.strip().endswith("OK")


def test_info_of_an_upstream_trainer_file_reads_its_update(tmp_path, capsys):
    from ckpt_factory import make_upstream_pt

    path = make_upstream_pt(tmp_path / "model_1234.pt", MODEL, len(VOCAB), update=1234)
    assert main(["info", str(path), "--json"]) == 0
    info = _json(capsys)
    assert info["kind"] == "upstream_pt" and info["update"] == 1234 and info["fingerprint"]
