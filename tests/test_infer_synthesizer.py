"""The Python API: build once from config, then synthesise; each bad input is one clear error."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf

from f5app.config import CkptConfig, InferConfig, VocoderConfig
from f5app.inference.errors import InferenceInputError
from f5app.inference.synthesizer import Synthesizer
from serve_fixtures import run_dir  # noqa: F401 (a fixture: the run with one tiny checkpoint)
from infer_fixtures import UPSTREAM_REF_TEXT, random_vocos_folder, tiny_model_config, upstream_ref_wav

FAST = {"nfe_step": 4, "progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def infer_config(run_dir, **overrides) -> InferConfig:
    cfg = InferConfig(
        run_name=run_dir.name, run_dir=str(run_dir), model=tiny_model_config(), ckpt=CkptConfig(name="auto"),
        vocoder=VocoderConfig(name="griffinlim", n_iter=4), device="cpu", **FAST,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def synth(run_dir) -> Synthesizer:
    return Synthesizer.from_config(infer_config(run_dir), run_dir)


def speak(synth, text="Hello there, how are you?", **kw):
    return synth.synthesize(text, upstream_ref_wav(), UPSTREAM_REF_TEXT, **kw)


def test_from_config_uses_the_model_recorded_in_the_checkpoint(run_dir):
    cfg = infer_config(run_dir)
    cfg.model.arch.dim = 1024  # the configured model is ignored for our own checkpoints
    synth = Synthesizer.from_config(cfg, run_dir)
    assert synth.model_config.arch.dim == 64 and synth.sample_rate == 24000
    assert "update_00000002" in synth.source


def test_tiny_model_speaks_through_griffinlim(synth):
    wav, sr = speak(synth, seed=0)
    # Duration: the reference's pace in letters per second (no ASR configured: over its whole length).
    ref_seconds = sf.info(upstream_ref_wav()).duration
    expected = ref_seconds * len("Hellotherehowareyou") / len(UPSTREAM_REF_TEXT.replace(" ", "").replace(",", "").replace(".", ""))
    assert sr == 24000 and wav.dtype == np.float32 and wav.ndim == 1
    assert np.isfinite(wav).all() and np.abs(wav).max() > 0
    assert len(wav) / sr == pytest.approx(expected, rel=0.2)


def test_same_seed_gives_the_same_audio_and_another_seed_differs(synth):
    first, _ = speak(synth, seed=7)
    again, _ = speak(synth, seed=7)
    other, _ = speak(synth, seed=8)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_no_seed_draws_one_and_reports_it_so_the_audio_can_be_reproduced(synth):
    result = synth.generate("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT)
    replay, _ = speak(synth, "Hello there.", seed=result.seed)
    assert np.array_equal(result.wav, replay)


def test_speed_changes_the_duration(synth):
    normal, _ = speak(synth, seed=0)
    fast, _ = speak(synth, seed=0, speed=2.0)
    assert len(fast) == pytest.approx(len(normal) / 2, rel=0.1)


def test_long_text_is_spoken_in_order_in_chunks_and_cross_faded(synth):
    sentences = [f"Sentence number {word} is here." for word in ("one", "two", "three", "four", "five", "six")]
    text = " ".join(sentences * 2)
    result = synth.generate(text, upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0, cross_fade=0.1)
    assert len(result.chunks) >= 2
    assert " ".join(chunk for _, chunk in result.chunks).split() == text.split()
    singles = [len(synth.synthesize(chunk, upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=result.seed + i)[0])
               for i, (_, chunk) in enumerate(result.chunks)]
    assert len(result.wav) == sum(singles) - int(0.1 * 24000) * (len(singles) - 1)


def test_voice_tags_switch_between_configured_references(run_dir, tmp_path):
    town = tmp_path / "town.wav"
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    sf.write(town, wav[: sr * 3] * 0.5, sr)
    cfg = infer_config(run_dir, voices={"town": {"ref_audio": str(town), "ref_text": "Some call me nature."}})
    synth = Synthesizer.from_config(cfg, run_dir)

    result = synth.generate("Hello. [town] Good day to you. [main] Bye now.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=1)

    assert [voice for voice, _ in result.chunks] == ["main", "town", "main"]
    town_alone, _ = synth.synthesize("[town] Good day to you.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=2)
    town_as_main, _ = synth.synthesize("Good day to you.", town, "Some call me nature.", seed=2)
    assert np.array_equal(town_alone, town_as_main)


def test_a_voice_without_ref_audio_is_refused_by_name(run_dir):
    cfg = infer_config(run_dir, voices={"town": {"ref_text": "hi"}})
    with pytest.raises(InferenceInputError, match=r"voices.town: .*ref_audio"):
        Synthesizer.from_config(cfg, run_dir)


def test_default_reference_is_the_first_demo_clip_for_our_checkpoints(synth):
    result = synth.generate("Hello there.", seed=0)
    assert result.wav.size > 0
    assert synth.default_voice is not None and synth.default_voice.audio.name == "harvard_001.flac"


@pytest.mark.parametrize("text", ["", "   \n "])
def test_empty_text_is_refused(synth, text):
    with pytest.raises(InferenceInputError, match="text is empty"):
        speak(synth, text)


def test_unknown_characters_are_dropped_with_a_warning_or_refused(synth, caplog):
    with caplog.at_level(logging.WARNING):
        dropped, _ = speak(synth, "Hello 🙂 there ©.", seed=3)
    assert "'🙂'" in caplog.text and "'©'" in caplog.text
    clean, _ = speak(synth, "Hello there .", seed=3)
    assert np.array_equal(dropped, clean)
    with pytest.raises(InferenceInputError, match=r"missing from the model's vocabulary: '🙂'"):
        speak(synth, "Hello 🙂", unknown_chars="error")


def test_text_made_only_of_unknown_characters_is_refused(synth):
    with pytest.raises(InferenceInputError, match="nothing left to say"):
        speak(synth, "你好世界")


def test_missing_reference_is_refused(synth, tmp_path):
    with pytest.raises(InferenceInputError, match="reference audio: .*missing.wav does not exist"):
        synth.synthesize("Hello.", tmp_path / "missing.wav", "Hi.")


def test_unreadable_reference_is_refused(synth, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav" * 50)
    with pytest.raises(InferenceInputError, match="reference audio: cannot read audio file"):
        synth.synthesize("Hello.", bad, "Hi.")


def test_reference_without_transcript_is_transcribed_with_the_bundled_asr(synth):
    synth.synthesize("Hello.", upstream_ref_wav(), "  ", seed=0)
    prepared = synth.prepared_references()[str(upstream_ref_wav())]
    assert prepared["transcript_source"] == "transcribed"
    assert prepared["transcript"].lower().replace(",", "").replace(".", "").strip() == "some call me nature others call me mother nature"


def test_long_reference_is_cut_where_its_transcript_ends(synth, tmp_path, caplog):
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    long_ref = tmp_path / "long.wav"
    sf.write(long_ref, np.concatenate([wav, wav, wav]), sr)  # ~16 s; the transcript says the first third
    with caplog.at_level(logging.INFO):
        result = synth.generate("Hi there.", long_ref, UPSTREAM_REF_TEXT, seed=0)
    assert "cut to" in caplog.text and "limit is 12 s" in caplog.text
    prepared = synth.prepared_references()[str(long_ref)]
    assert prepared["cut"]["last_word"] == "nature." and prepared["seconds"] < 6.0
    assert result.wav.size > 0


def test_stereo_reference_at_another_rate_is_converted(synth, tmp_path):
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    import torch
    import torchaudio.functional as AF

    resampled = AF.resample(torch.from_numpy(wav), sr, 44100).numpy()
    stereo = tmp_path / "stereo44k.flac"
    sf.write(stereo, np.stack([resampled, resampled], axis=1), 44100)
    converted, sr_out = synth.synthesize("Hello there.", stereo, UPSTREAM_REF_TEXT, seed=0)
    original, _ = synth.synthesize("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0)
    assert sr_out == 24000 and abs(len(converted) - len(original)) <= 2 * 256


def test_unknown_override_is_a_type_error(synth):
    with pytest.raises(TypeError, match="nfe_steps"):
        speak(synth, nfe_steps=3)


def test_tiny_model_speaks_through_a_local_vocos(run_dir, tmp_path):
    folder = random_vocos_folder(tmp_path / "vocos-mel-24khz")
    cfg = infer_config(run_dir, vocoder=VocoderConfig(name="vocos", local_path=str(folder)))
    synth = Synthesizer.from_config(cfg, run_dir)
    wav, sr = speak(synth, seed=0)
    assert synth.vocoder.name == "vocos" and sr == 24000
    assert np.isfinite(wav).all() and len(wav) > sr // 2


@pytest.mark.parametrize(("dtype", "expected"), [("bf16", "bfloat16"), ("fp16", "float16")])
def test_half_precision_models_still_return_float32_audio(run_dir, dtype, expected):
    synth = Synthesizer.from_config(infer_config(run_dir, dtype=dtype), run_dir)
    wav, _ = speak(synth, "Hello there.", seed=0)
    assert str(synth.dtype) == f"torch.{expected}" and next(synth.cfm.transformer.parameters()).dtype == synth.dtype
    assert wav.dtype == np.float32 and np.isfinite(wav).all() and wav.size > 0
