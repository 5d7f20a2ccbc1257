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
    vocoder = GriffinLimVocoder.build(VocoderConfig(name="griffinlim", n_iter=4), MelConfig())
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


# ---------------------------------------------------------------------------- the registry


def test_every_vocoder_option_names_a_registered_vocoder_and_back():
    from f5app.audio.vocoder import VOCODERS
    from f5app.config import CONF_DIR

    options = {path.stem for path in (CONF_DIR / "vocoder").glob("*.yaml")}
    assert options == set(VOCODERS)
    for name, cls in VOCODERS.items():
        assert cls.name == name and cls.mel_type in {"vocos", "bigvgan"}
    assert VOCODERS["vocos"].default_repo == "charactr/vocos-mel-24khz" and VOCODERS["griffinlim"].default_repo is None


def test_a_new_vocoder_is_a_class_and_a_yaml_file(tmp_path, monkeypatch, speech_mel):
    """Registered in the test, selected from a YAML in an extra config folder: no f5app file changes."""
    from dataclasses import dataclass
    from typing import ClassVar

    from hydra import compose, initialize_config_dir

    from f5app.audio import vocoder as vocoder_module
    from f5app.config import CONF_DIR, InferConfig, to_settings

    monkeypatch.setattr(vocoder_module, "VOCODERS", dict(vocoder_module.VOCODERS))

    @vocoder_module.register_vocoder
    @dataclass
    class Silence:
        gain: float
        sample_rate: int
        name: ClassVar[str] = "silence"
        mel_type: ClassVar[str] = "vocos"
        default_repo: ClassVar[None] = None

        @classmethod
        def build(cls, cfg, mel, device="cpu"):
            return cls(float(cfg.options["gain"]), mel.target_sample_rate)

        def decode(self, mel):
            return torch.zeros(mel.shape[0], mel.shape[-1] * 256) + self.gain

    (tmp_path / "vocoder").mkdir()
    (tmp_path / "vocoder" / "silence.yaml").write_text(
        "defaults:\n  - vocoder_schema\n  - _self_\nname: silence\noptions:\n  gain: 0.25\n", encoding="utf-8"
    )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("infer", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "vocoder=silence", "text=hi"])
    settings = to_settings(cfg, InferConfig)

    built = vocoder_module.load_vocoder(settings.vocoder, MelConfig())
    assert isinstance(built, Silence) and torch.all(built.decode(speech_mel) == 0.25)
    with pytest.raises(VocoderError, match="needs a model trained on vocos mels"):
        vocoder_module.load_vocoder(settings.vocoder, MelConfig(mel_spec_type="bigvgan"))


def test_an_unknown_vocoder_lists_the_registered_ones():
    with pytest.raises(VocoderError, match=r"vocoder='wavenet' is unknown; choose one of \['bigvgan', 'griffinlim', 'vocos'\]"):
        load_vocoder(VocoderConfig(name="wavenet"), MelConfig())


# ---------------------------------------------------------------------------- a Vocos snapshot builds nothing else


def _reference_vocos(folder):
    """What upstream's own loader makes of a trusted folder: Vocos.from_hparams + its weights."""
    from vocos import Vocos

    model = Vocos.from_hparams(str(folder / "config.yaml"))
    model.load_state_dict(torch.load(folder / "pytorch_model.bin", weights_only=True))
    return model.eval()


def test_the_allow_listed_vocos_is_upstreams_model_exactly(tmp_path, speech_mel):
    folder = random_vocos_folder(tmp_path / "vocos-mel-24khz", seed=3)
    vocoder = load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())

    assert torch.equal(vocoder.decode(speech_mel), _reference_vocos(folder).decode(speech_mel))


HOSTILE = {
    "a command in the first section": (
        "feature_extractor:\n  class_path: subprocess.Popen\n  init_args:\n    args: [touch, {marker}]\n"
    ),
    "a module of the attacker's in a later section": (
        "feature_extractor:\n  class_path: vocos.feature_extractors.MelSpectrogramFeatures\n"
        "backbone:\n  class_path: planted_module.Backbone\n  init_args:\n    input_channels: 100\n"
        "head:\n  class_path: vocos.heads.ISTFTHead\n  init_args:\n    dim: 32\n    n_fft: 1024\n    hop_length: 256\n"
    ),
    "os.system": "feature_extractor:\n  class_path: os.system\n  init_args:\n    command: touch {marker}\n",
    "a python tag": "feature_extractor: !!python/object/apply:os.system [touch {marker}]\n",
}


@pytest.mark.parametrize("config", list(HOSTILE.values()), ids=list(HOSTILE))
def test_a_hostile_vocos_config_runs_nothing_and_is_one_line(tmp_path, monkeypatch, config):
    import sys

    marker = tmp_path / "marker"
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "planted_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Backbone:\n    def __init__(self, **kwargs):\n        open({str(marker)!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(planted))
    folder = random_vocos_folder(tmp_path / "vocos")
    (folder / "config.yaml").write_text(config.format(marker=marker))

    with pytest.raises(VocoderError) as refused:
        load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())
    assert "\n" not in str(refused.value) and "config.yaml" in str(refused.value)
    assert not marker.exists() and "planted_module" not in sys.modules


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "cannot be read"),
        ("garbage", "cannot be read"),
        ("flip", "cannot be read"),
        ("not a state dict", "not a state dict of tensors"),
    ],
)
def test_damaged_vocos_weights_are_one_line(tmp_path, damage, expected):
    folder = random_vocos_folder(tmp_path / "vocos")
    weights = folder / "pytorch_model.bin"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x80\x02" + bytes(range(256)) * 8)
    elif damage == "flip":
        weights.write_bytes(data[:40] + bytes(b ^ 0xFF for b in data[40:240]) + data[240:])
    else:
        torch.save([1, 2, 3], weights)
    with pytest.raises(VocoderError, match=expected) as refused:
        load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())
    assert "\n" not in str(refused.value) and "pytorch_model.bin" in str(refused.value)


def test_weights_of_another_size_are_refused_before_the_model_is_built(tmp_path):
    folder = random_vocos_folder(tmp_path / "vocos", dim=32)
    config = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(config.replace("dim: 32", "dim: 4096").replace("intermediate_dim: 64", "intermediate_dim: 100000"))
    with pytest.raises(VocoderError, match=r"do not fit .*config.yaml: backbone\..* is \(.*\) in the weights"):
        load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())

    (folder / "config.yaml").write_text(config.replace("num_layers: 1", "num_layers: 100000000"))
    with pytest.raises(VocoderError, match="asks for 100000000 backbone layers, the weights hold 1"):
        load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("feature_extractor: [unclosed\n", "is not a readable Vocos config.yaml"),
        ("just text\n", "needs the sections feature_extractor, backbone, head"),
        (b"\xff\xfe", "is not a readable Vocos config.yaml"),
        ("x: " + "[" * 30_000 + "]" * 30_000, "is not a readable Vocos config.yaml"),
        ("x: " + "y" * 70_000, "bytes: not a Vocos config.yaml"),
    ],
)
def test_an_unreadable_vocos_config_is_one_line(tmp_path, config, expected):
    folder = random_vocos_folder(tmp_path / "vocos")
    if isinstance(config, bytes):
        (folder / "config.yaml").write_bytes(config)
    else:
        (folder / "config.yaml").write_text(config)
    with pytest.raises(VocoderError, match=expected) as refused:
        load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())
    assert "\n" not in str(refused.value)


def test_a_vocos_for_another_mel_is_refused_naming_the_setting(tmp_path):
    folder = random_vocos_folder(tmp_path / "vocos")
    config = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(config.replace("n_mels: 100", "n_mels: 80"))
    with pytest.raises(VocoderError, match="reads mels with n_mels=80, the model makes n_mels=100"):
        load_vocoder(VocoderConfig(name="vocos", local_path=str(folder)), MelConfig())


def test_a_bad_vocoder_repo_id_is_one_line_naming_vocoder_repo_id():
    with pytest.raises(VocoderError, match=r"^vocoder.repo_id='bad\.\.repo' is not a Hub repository id"):
        load_vocoder(VocoderConfig(name="vocos", repo_id="bad..repo"), MelConfig())
