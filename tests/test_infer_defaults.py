"""Defaults chosen for the user: the reference voice that matches a model, the device and dtype."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch

from ckpt_factory import checkpoint_record, tiny_model_config, tiny_vocab
from f5app.inference.defaults import DEMO_DATA_DIR, UPSTREAM_REF_TEXT, default_reference
from f5app.inference.errors import InferenceInputError
from f5app.devices import DeviceError, pick_device
from f5app.inference.precision import cpu_has_native_bf16, pick_dtype


def trained_on(data: dict):
    """The metadata a checkpoint of a run with this ``data`` config carries (the real record)."""
    return checkpoint_record(100, tiny_model_config(), tiny_vocab(), config={"data": data}).metadata


def test_weights_without_f5app_metadata_use_upstreams_english_reference():
    ref = default_reference(None)
    assert ref.audio.name == "basic_ref_en.wav" and ref.audio.is_file() and ref.text == UPSTREAM_REF_TEXT


def test_demo_checkpoints_use_the_first_clip_of_the_bundled_demo_set():
    ref = default_reference(trained_on({"name": "demo", "path": "/nowhere"}))
    first_line = (DEMO_DATA_DIR / "metadata.csv").read_text(encoding="utf-8").splitlines()[1]
    audio, text = first_line.split("|", 1)
    assert ref.audio == (DEMO_DATA_DIR / audio).resolve() and ref.text == text


def test_checkpoints_trained_on_a_user_set_use_its_first_clip(tmp_path):
    (tmp_path / "wavs").mkdir()
    sf.write(tmp_path / "wavs" / "a.wav", [0.1] * 2400, 24000)
    (tmp_path / "metadata.csv").write_text("audio_file|text\nwavs/missing.wav|Gone.\nwavs/a.wav|Hello there.\n", encoding="utf-8")
    ref = default_reference(trained_on({"name": "csv_wavs", "path": str(tmp_path)}))
    assert ref.audio == (tmp_path / "wavs" / "a.wav").resolve() and ref.text == "Hello there."


def test_a_set_that_moved_away_falls_back_to_a_bundled_reference(tmp_path):
    ref = default_reference(trained_on({"name": "csv_wavs", "path": str(tmp_path / "gone")}))
    assert ref.audio.is_file()


def test_auto_device_is_cuda_then_mps_then_cpu():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device("auto") == expected
    assert pick_device("cpu") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_an_absent_cuda_is_a_clear_error():
    with pytest.raises(DeviceError, match="device=cuda is not available.*device=auto or device=cpu"):
        pick_device("cuda")


def test_unknown_device_or_dtype_names_the_options():
    with pytest.raises(DeviceError, match="auto, cpu, cuda or mps"):
        pick_device("tpu")
    with pytest.raises(InferenceInputError, match="auto, fp32, fp16 or bf16"):
        pick_dtype("fp8", "cpu", "vocos")


def test_dtype_auto_is_bf16_on_cpus_with_native_bf16_else_fp32_and_fp32_for_bigvgan_models_and_explicit_names_map():
    assert pick_dtype("auto", "cpu", "vocos") == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert pick_dtype("auto", "cpu", "bigvgan") == torch.float32
    assert pick_dtype("auto", "cuda", "bigvgan") == torch.float32
    assert [pick_dtype(n, "cpu", "vocos") for n in ("fp32", "fp16", "bf16")] == [torch.float32, torch.float16, torch.bfloat16]
