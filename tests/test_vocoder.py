"""Vocoders turn the model's log-mel back into audio; each refuses a model trained on another mel."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from f5app.audio.io import read_audio
from f5app.audio.vocoder import GriffinLimVocoder, VocoderError, check_vocoder_matches_mel, load_vocoder
from f5app.config import MelConfig, VocoderConfig
from infer_fixtures import random_vocos_folder, upstream_ref_wav


def vocos_style_mel(wav: torch.Tensor, mel: MelConfig) -> torch.Tensor:
    """Upstream's get_vocos_mel_spectrogram, without importing f5_tts (it must agree with it)."""
    import torchaudio.transforms as T

    transform = T.MelSpectrogram(
        sample_rate=mel.target_sample_rate, n_fft=mel.n_fft, win_length=mel.win_length, hop_length=mel.hop_length,
        n_mels=mel.n_mel_channels, power=1, center=True, normalized=False, norm=None,
    )
    return transform(wav).clamp(min=1e-5).log()


@pytest.fixture(scope="module")
def speech_mel():
    wav, _ = read_audio(upstream_ref_wav(), target_sr=24000)
    return vocos_style_mel(torch.from_numpy(wav[: 24000 * 2])[None], MelConfig())


def mel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    frames = min(a.shape[-1], b.shape[-1])
    return (a[..., :frames] - b[..., :frames]).abs().mean().item()


def test_griffinlim_inverts_the_vocos_style_mel_of_real_speech(speech_mel):
    vocoder = load_vocoder(VocoderConfig(name="griffinlim", n_iter=16), MelConfig())
    torch.manual_seed(0)
    wav = vocoder.decode(speech_mel)

    assert wav.shape[0] == 1 and abs(wav.shape[-1] - speech_mel.shape[-1] * 256) <= 256
    again = vocos_style_mel(wav, MelConfig())
    noise = vocos_style_mel(torch.randn_like(wav) * wav.std(), MelConfig())
    assert mel_distance(again, speech_mel) < 0.25 * mel_distance(noise, speech_mel)


def test_vocos_loads_a_local_folder_in_the_hub_layout_and_decodes(tmp_path, speech_mel):
    folder = random_vocos_folder(tmp_path / "vocos-mel-24khz")
    vocoder = load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())

    wav = vocoder.decode(speech_mel)

    assert vocoder.name == "vocos" and vocoder.sample_rate == 24000
    assert wav.shape == (1, (speech_mel.shape[-1] - 1) * 256) and torch.isfinite(wav).all()


def test_vocos_folder_without_weights_says_what_is_missing(tmp_path):
    folder = random_vocos_folder(tmp_path / "vocos")
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(VocoderError, match="lacks pytorch_model.bin"):
        load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())


def test_vocos_offline_without_cache_points_to_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(VocoderError, match="vocoder.local_path=DIR .* or use vocoder=griffinlim"):
        load_vocoder(VocoderConfig(name="vocos", repo_id="charactr/vocos-mel-24khz"), MelConfig())


@pytest.mark.parametrize(
    ("vocoder", "mel_type"), [("vocos", "bigvgan"), ("griffinlim", "bigvgan"), ("bigvgan", "vocos")]
)
def test_vocoder_and_model_mel_mismatch_is_one_clear_error(vocoder, mel_type):
    with pytest.raises(VocoderError, match=f"vocoder={vocoder} needs .* mel_spec_type={mel_type}; use vocoder="):
        check_vocoder_matches_mel(vocoder, MelConfig(mel_spec_type=mel_type))


def test_mismatch_is_refused_before_any_weights_load(tmp_path):
    with pytest.raises(VocoderError, match="mel_spec_type=bigvgan"):
        load_vocoder(VocoderConfig(name="vocos", local_path=str(tmp_path / "absent")), MelConfig(mel_spec_type="bigvgan"))


@pytest.mark.skipif(importlib.util.find_spec("bigvgan") is not None, reason="bigvgan is installed")
def test_bigvgan_without_its_package_says_how_to_install():
    with pytest.raises(VocoderError, match=r"pip install 'f5app\[bigvgan\]'"):
        load_vocoder(VocoderConfig(name="bigvgan"), MelConfig(mel_spec_type="bigvgan"))


def test_griffinlim_is_deterministic_under_a_seed(speech_mel):
    vocoder = GriffinLimVocoder.build(MelConfig(), n_iter=4)
    torch.manual_seed(3)
    first = vocoder.decode(speech_mel)
    torch.manual_seed(3)
    assert torch.equal(first, vocoder.decode(speech_mel))


def test_vocos_offline_and_not_cached_is_one_line_naming_the_way_out(monkeypatch, tmp_path):
    from f5app.audio.vocoder import VocoderError, load_vocoder
    from f5app.config import MelConfig, VocoderConfig

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(VocoderError) as refused:
        load_vocoder(VocoderConfig(name="vocos", repo_id="charactr/vocos-mel-24khz"), MelConfig())
    message = str(refused.value)
    assert "\n" not in message and "vocoder.local_path=DIR" in message and "charactr/vocos-mel-24khz/config.yaml" in message
