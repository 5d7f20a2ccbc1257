"""``python -m f5app.infer``: the Hydra command composes a config and speaks through the Synthesizer."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

import f5app.infer as infer_cli
from infer_fixtures import (
    UPSTREAM_REF_TEXT,
    tiny_run_checkpoint,
    upstream_ref_wav,
    upstream_release_safetensors,
    upstream_trainer_pt,
)

FAST = ["nfe_step=4", "vocoder.n_iter=4", "device=cpu", "progress=false", "reference.check=false"]  # checks: test_reference.py


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    tiny_run_checkpoint(root / "runs" / "voice", update=2, val_loss=2.0)
    tiny_run_checkpoint(root / "runs" / "voice", update=4, val_loss=1.0, seed=1)
    return root


@pytest.fixture
def cli(compose_cfg, outputs):
    """cli("text=Hi", ...) runs the command's task in-process and returns the written path."""

    def _run(*overrides: str) -> Path:
        cfg = compose_cfg("infer", [f"output_root={outputs}", "run_name=voice", *FAST, *overrides])
        return infer_cli.run(cfg)

    return _run


def test_defaults_speak_with_the_runs_best_checkpoint_into_its_samples_folder(cli, outputs, capsys, caplog):
    caplog.set_level("INFO")
    path = cli("text=Hello there.")
    assert path.parent == outputs / "runs" / "voice" / "samples" and path.suffix == ".wav"
    info = sf.info(path)
    assert info.samplerate == 24000 and info.frames > 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(path)
    assert "update_00000004" in caplog.text  # best (val_loss 1.0) wins in ckpt=auto
    assert "real-time factor" in caplog.text and "audio" in caplog.text and "wall" in caplog.text


def test_two_runs_never_overwrite_each_other(cli):
    first, second = cli("text=Hi there.", "seed=1"), cli("text=Hi there.", "seed=1")
    assert first != second and first.exists() and second.exists()


def test_ckpt_last_and_best_choose_their_pointers(cli, caplog):
    caplog.set_level("INFO")
    cli("ckpt=last", "text=Hello.")
    assert "infer with" in caplog.text and "update_00000004" in caplog.text


def test_existing_out_is_refused_before_loading_and_kept(cli, tmp_path):
    out = tmp_path / "keep.wav"
    out.write_bytes(b"precious")
    with pytest.raises(infer_cli.InferenceInputError, match="already exists.*overwrite=true"):
        cli("text=Hello.", f"out={out}")
    assert out.read_bytes() == b"precious"
    cli("text=Hello.", f"out={out}", "overwrite=true")
    assert sf.info(out).frames > 0


def test_out_with_an_unknown_suffix_or_in_an_unwritable_place_is_refused(cli, tmp_path):
    with pytest.raises(infer_cli.InferenceInputError, match=r"must end in \.wav, \.flac or \.ogg"):
        cli("text=Hello.", f"out={tmp_path / 'speech.mp3'}")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(infer_cli.InferenceInputError, match="cannot create output folder"):
        cli("text=Hello.", f"out={blocker / 'sub' / 'speech.wav'}")


def test_save_spectrogram_writes_a_png_beside_the_wav(cli, tmp_path):
    out = cli("text=Hello there.", f"out={tmp_path / 'speech.flac'}", "save_spectrogram=true")
    png = out.with_suffix(".png")
    assert out.suffix == ".flac" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_text_file_is_read_as_utf8_and_spoken_in_chunks(cli, tmp_path, caplog):
    caplog.set_level("INFO")
    story = tmp_path / "story.txt"
    story.write_text(" ".join(["The birch canoe slid on the smooth planks."] * 8), encoding="utf-8")
    out = cli(f"text_file={story}", f"out_dir={tmp_path / 'out'}", f"ref_audio={upstream_ref_wav()}", f"ref_text='{UPSTREAM_REF_TEXT}'")
    assert out.parent == tmp_path / "out"
    chunks = int(re.search(r"(\d+) chunk\(s\)", caplog.text).group(1))
    assert chunks >= 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["text=''"], "text is empty"),
        ([], "nothing to say"),
        (["text=Hi", "text_file=/nonexistent/story.txt"], "not both"),
        (["text_file=/nonexistent/story.txt"], "does not exist"),
        (["text=Hi", "ref_audio=/nonexistent/ref.wav", "ref_text=Hello"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_with_exit_status_2(compose_cfg, outputs, capsys, overrides, message):
    from f5app.errors import exit_on_user_error

    cfg = compose_cfg("infer", [f"output_root={outputs}", "run_name=voice", *FAST, *overrides])
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error(infer_cli.log):
        infer_cli.run(cfg)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_text_file_that_is_not_utf8_is_refused(cli, tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Olá, tudo bem?".encode("latin-1"))
    with pytest.raises(infer_cli.InferenceInputError, match="not UTF-8"):
        cli(f"text_file={bad}")


def test_upstream_trainer_pt_loads_through_ckpt_custom(cli, tmp_path):
    weights = upstream_trainer_pt(tmp_path / "upstream" / "model_last.pt")
    out = cli("ckpt=custom", f"ckpt.path={weights}", "model=tiny", "text=Hello there.", f"out={tmp_path / 'a.wav'}")
    assert sf.info(out).frames > 0


def test_foreign_weights_are_adapted_once_and_the_cached_copy_is_reused(cli, tmp_path, monkeypatch, caplog):
    from f5app.ckpt.reader import CheckpointReader

    monkeypatch.setenv("F5APP_CACHE_DIR", str(tmp_path / "cache"))
    weights = upstream_trainer_pt(tmp_path / "community" / "model_last.pt")
    conversions = []
    real_read = CheckpointReader.weights
    monkeypatch.setattr(CheckpointReader, "weights", lambda self, **kw: conversions.append(self.path) or real_read(self, **kw))
    caplog.set_level("INFO")
    for name in ("first.wav", "second.wav"):
        cli("ckpt=custom", f"ckpt.path={weights}", "model=tiny", "text=Hello there.", f"out={tmp_path / name}")
    assert [Path(p) for p in conversions].count(weights) == 1, "the source was converted more than once"
    cached = list((tmp_path / "cache" / "adapted").glob("*/model.safetensors"))
    assert len(cached) == 1 and f"cached at {cached[0]}" in caplog.text


def test_upstream_release_safetensors_loads_through_ckpt_custom(cli, tmp_path):
    weights = upstream_release_safetensors(tmp_path / "release" / "model_1250000.safetensors")
    out = cli("ckpt=custom", f"ckpt.path={weights}", "model=tiny", "text=Hello there.", f"out={tmp_path / 'b.wav'}")
    assert sf.info(out).frames > 0


def test_voices_from_the_command_line_are_used_for_tags(cli, tmp_path, caplog):
    caplog.set_level("INFO")
    out = cli(
        "text='Hello. [town] Good day.'", f"+voices.town.ref_audio={upstream_ref_wav()}",
        f"+voices.town.ref_text='{UPSTREAM_REF_TEXT}'", f"out={tmp_path / 'story.wav'}",
    )
    assert sf.info(out).frames > 0 and "2 chunk(s)" in caplog.text


@pytest.mark.slow
def test_command_line_end_to_end_in_a_fresh_process(outputs, tmp_path):
    out = tmp_path / "e2e.wav"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "f5app.infer", f"output_root={outputs}", "run_name=voice", "text=Hello from the command line.",
         f"out={out}", "seed=3", *FAST],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == str(out)
    assert sf.info(out).samplerate == 24000 and "real-time factor" in result.stdout + result.stderr


def test_an_existing_spectrogram_is_refused_before_anything_is_written(cli, tmp_path):
    (tmp_path / "speech.png").write_bytes(b"old picture")
    with pytest.raises(infer_cli.InferenceInputError, match="speech.png .* already exists"):
        cli("text=Hello.", f"out={tmp_path / 'speech.wav'}", "save_spectrogram=true")
    assert not (tmp_path / "speech.wav").exists() and (tmp_path / "speech.png").read_bytes() == b"old picture"
