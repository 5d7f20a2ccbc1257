"""Speaker similarity: the same speaker scores above different speakers; Hub embedders load offline from the cache."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from eval_fixtures import human_audio, resemblyzer_embedder, tiny_wavlm_in_hub_cache
from f5app.config import SpeakerConfig
from f5app.errors import UserError
from f5app.speech.speaker import SpeakerModelUnavailable, build_embedder, import_resemblyzer, similarity

SPEAKERS = ["basic/basic_ref_en.wav", "basic/basic_ref_zh.wav", "multi/town.flac", "multi/main.flac", "multi/country.flac"]


def halves(name: str) -> tuple[np.ndarray, np.ndarray, int]:
    wav, sr = human_audio(name)
    middle = len(wav) // 2
    return wav[:middle], wav[middle:], sr


@pytest.fixture(scope="module")
def embeddings():
    """Two embeddings per speaker: the first and second half of each recording."""
    embedder = resemblyzer_embedder()
    result = {}
    for name in SPEAKERS:
        first, second, sr = halves(name)
        result[name] = (embedder.embed(first, sr), embedder.embed(second, sr))
    return result


@pytest.mark.parametrize("speaker", SPEAKERS)
def test_two_halves_of_one_recording_are_more_alike_than_any_other_speaker(embeddings, speaker):
    first, second = embeddings[speaker]
    same = similarity(first, second)
    others = [similarity(first, embeddings[other][1]) for other in SPEAKERS if other != speaker]
    assert same > max(others) + 0.1, (same, others)


def test_embeddings_have_unit_length_and_do_not_depend_on_the_sample_rate():
    from f5app.audio.io import resample

    wav, sr = human_audio("multi/town.flac")
    embedder = resemblyzer_embedder()
    native, at_16k = embedder.embed(wav, sr), embedder.embed(resample(wav, sr, 16000), 16000)
    assert np.linalg.norm(native) == pytest.approx(1.0, abs=1e-4)
    assert similarity(native, at_16k) > 0.99


def test_silence_cannot_be_embedded():
    with pytest.raises(ValueError, match="too short or silent"):
        resemblyzer_embedder().embed(np.zeros(24000, dtype=np.float32), 24000)


def test_cosine_similarity():
    assert similarity(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert similarity(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(0.0)
    assert similarity(np.array([1.0, 1.0]), np.array([-1.0, -1.0])) == pytest.approx(-1.0)


def test_resemblyzer_imports_without_pkg_resources(monkeypatch):
    """setuptools >= 81 has no pkg_resources, which webrtcvad 2.0.10 reads its version with."""
    for name in [m for m in sys.modules if m == "webrtcvad" or m.startswith("resemblyzer")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pkg_resources", None)  # `import pkg_resources` now fails
    resemblyzer = import_resemblyzer()
    assert hasattr(resemblyzer, "VoiceEncoder") and sys.modules["webrtcvad"].__version__
    assert sys.modules["pkg_resources"] is None  # the stand-in does not outlive the import


@pytest.mark.slow
def test_a_wavlm_verification_model_loads_from_the_hub_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tiny_wavlm_in_hub_cache(tmp_path / "hub")
    embedder = build_embedder(SpeakerConfig(name="wavlm", model="test-org/tiny-wavlm-sv", cache_dir=str(tmp_path / "hub")))
    assert (embedder.model, embedder.revision) == ("test-org/tiny-wavlm-sv", snapshot.name)
    assert embedder.describe()["library"].startswith("transformers ")
    first, second, sr = halves("multi/main.flac")
    a, again, b = embedder.embed(first, sr), embedder.embed(first, sr), embedder.embed(second, sr)
    assert a.shape == (8,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert similarity(a, again) == pytest.approx(1.0, abs=1e-6)
    assert similarity(a, b) < 1.0 - 1e-6


def test_a_wavlm_folder_loads_directly(tmp_path):
    snapshot = tiny_wavlm_in_hub_cache(tmp_path / "hub")
    embedder = build_embedder(SpeakerConfig(name="wavlm", model=str(snapshot)))
    assert embedder.revision is None and embedder.embed(np.ones(16000, dtype=np.float32) * 0.01, 16000).shape == (8,)


def test_an_uncached_wavlm_offline_is_one_line_saying_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpeakerModelUnavailable) as caught:
        build_embedder(SpeakerConfig(name="wavlm", model="microsoft/wavlm-base-plus-sv", cache_dir=str(tmp_path)))
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert "hf download microsoft/wavlm-base-plus-sv " in message or "hf download microsoft/wavlm-base-plus-sv`" in message
    assert "speaker=resemblyzer" in message


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (SpeakerConfig(name="ecapa2000"), "not an option"),
        (SpeakerConfig(name="wavlm", model="./no/such/folder"), "neither a folder nor a Hub id"),
        (SpeakerConfig(name="resemblyzer", device="tpu"), "speaker.device=tpu"),
    ],
)
def test_bad_settings_are_one_line_naming_the_setting(cfg, expected):
    with pytest.raises(UserError, match=expected):  # SpeakerModelUnavailable, or DeviceError for speaker.device
        build_embedder(cfg)


def test_no_speaker_model_is_decided_in_one_place():
    assert build_embedder(None) is None and build_embedder(SpeakerConfig(name="none")) is None
