"""``python -m f5app.infer`` with references prepared for it and every chunk checked (in-process, tiny model).

The tiny model buzzes, so its chunks never pass: every chunk is drawn ``verify.max_tries`` times
and the sidecar holds each try's measured scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import f5app.infer as infer_cli
from eval_fixtures import HUMAN_CLIPS, example_path
from infer_fixtures import tiny_run_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # tiny.en and resemblyzer load per run

FAST = ["nfe_step=4", "vocoder.n_iter=4", "device=cpu", "progress=false", "run_name=voice"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    tiny_run_checkpoint(root / "runs" / "voice", update=2, val_loss=1.0)
    return root


def test_infer_without_ref_text_transcribes_the_reference_and_logs_what_it_heard(compose_cfg, outputs, tmp_path, caplog):
    town = example_path("multi/town.flac")
    cfg = compose_cfg("infer", [f"output_root={outputs}", *FAST, "text=Hi there.", f"ref_audio={town}", f"out={tmp_path / 'hi.wav'}"])
    caplog.set_level("INFO")
    assert infer_cli.run(cfg) == tmp_path / "hi.wav"
    assert "no ref_text given; transcribed with asr=tiny_en" in caplog.text
    assert "rainbow depends considerably" in caplog.text
    assert "DNSMOS ovrl" in caplog.text and "speaker spread" in caplog.text  # the quality numbers, in the log


def test_a_ref_text_that_disagrees_with_the_audio_is_a_warning_naming_both(compose_cfg, outputs, tmp_path, caplog):
    basic = example_path("basic/basic_ref_en.wav")
    cfg = compose_cfg("infer", [f"output_root={outputs}", *FAST, "text=Hi there.", f"ref_audio={basic}",
                                "ref_text=The quick brown fox jumps over the lazy dog.", f"out={tmp_path / 'fox.wav'}"])
    infer_cli.run(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "ref_text disagrees" in r.getMessage()]
    assert warnings and "lazy dog" in warnings[0] and "mother nature" in warnings[0].lower()


def test_verify_asr_draws_each_chunk_again_and_writes_every_try_beside_the_audio(compose_cfg, outputs, tmp_path):
    basic = example_path("basic/basic_ref_en.wav")
    out = tmp_path / "checked.wav"
    cfg = compose_cfg("infer", [f"output_root={outputs}", *FAST, "text=Hello there. How are you today?", f"ref_audio={basic}",
                                f"ref_text={HUMAN_CLIPS['basic/basic_ref_en.wav']!r}", "verify=asr", "verify.max_tries=2",
                                "seed=7", f"out={out}", "reference.check=false"])
    infer_cli.run(cfg)
    record = json.loads((tmp_path / "checked.wav.json").read_text())
    assert record["seed"] == 7 and len(record["verify"]) == len(record["chunks"])
    first = record["verify"][0]
    assert [t["seed"] for t in first["tries"]] == [7, 8]  # buzz never passes: both tries drawn
    assert first["passed"] is False and first["kept_seed"] in (7, 8)
    assert all(0.0 <= t["wer"] and t["transcript"] is not None for t in first["tries"])
    assert str(basic) in record["references"]
    # A second run into the same file is refused before the model loads, scores included.
    from f5app.inference.errors import InferenceInputError

    out.unlink()
    with pytest.raises(InferenceInputError, match="checked.wav.json"):
        infer_cli.run(cfg)
