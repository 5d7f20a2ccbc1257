"""Vocoders: turn the model's log-mel spectrogram ``(batch, n_mels, frames)`` into waveforms.

Three options (the ``vocoder`` config group):

- ``griffinlim``: no weights, works offline. Inverts upstream's vocos-style mel (torchaudio
  ``MelSpectrogram(power=1, norm=None, htk)`` followed by ``log(clamp(x, 1e-5))``) with
  ``InverseMelScale`` + ``GriffinLim``. Sounds rough, but always available.
- ``vocos``: ``charactr/vocos-mel-24khz`` from the Hub (cache first) or ``vocoder.local_path``,
  a folder with ``config.yaml`` and ``pytorch_model.bin`` laid out as on the Hub.
- ``bigvgan``: NVIDIA's BigVGAN through its PyPI package (optional extra).

A vocoder only understands the mel it was trained on, so :func:`check_vocoder_matches_mel`
refuses a pairing such as a ``bigvgan``-mel model with the Vocos vocoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from f5app.errors import UserError
from f5app.config import MelConfig, VocoderConfig

if TYPE_CHECKING:
    import torch

#: Which model mel each vocoder understands.
MEL_TYPE_FOR_VOCODER = {"griffinlim": "vocos", "vocos": "vocos", "bigvgan": "bigvgan"}
DEFAULT_REPOS = {"vocos": "charactr/vocos-mel-24khz", "bigvgan": "nvidia/bigvgan_v2_24khz_100band_256x"}


class VocoderError(UserError, ValueError):
    """A vocoder that cannot be built or does not fit the model; the message says what to change."""


class Vocoder(Protocol):
    name: str
    sample_rate: int

    def decode(self, mel: "torch.Tensor") -> "torch.Tensor":
        """``(batch, n_mels, frames)`` log-mel -> ``(batch, samples)`` waveform, float32."""
        ...


def check_vocoder_matches_mel(vocoder_name: str, mel: MelConfig) -> None:
    expected = MEL_TYPE_FOR_VOCODER.get(vocoder_name)
    if expected is None:
        raise VocoderError(f"vocoder={vocoder_name!r} is unknown; choose one of {sorted(MEL_TYPE_FOR_VOCODER)}")
    if expected != mel.mel_spec_type:
        fitting = sorted(name for name, kind in MEL_TYPE_FOR_VOCODER.items() if kind == mel.mel_spec_type)
        raise VocoderError(
            f"vocoder={vocoder_name} needs a model trained on {expected} mels, but this model uses "
            f"mel_spec_type={mel.mel_spec_type}; use vocoder={' or vocoder='.join(fitting)}"
        )


def load_vocoder(cfg: VocoderConfig, mel: MelConfig, device: str = "cpu") -> Vocoder:
    """Build the configured vocoder on ``device`` after checking it fits ``mel``."""
    check_vocoder_matches_mel(cfg.name, mel)
    if cfg.name == "griffinlim":
        return GriffinLimVocoder.build(mel, n_iter=cfg.n_iter, device=device)
    if cfg.name == "vocos":
        return VocosVocoder.build(cfg, mel, device=device)
    return BigVGANVocoder.build(cfg, mel, device=device)


@dataclass
class GriffinLimVocoder:
    inverse_mel: Any
    griffin_lim: Any
    sample_rate: int
    name: str = "griffinlim"

    @classmethod
    def build(cls, mel: MelConfig, n_iter: int = 32, device: str = "cpu") -> "GriffinLimVocoder":
        import torchaudio.transforms as T

        n_stft = mel.n_fft // 2 + 1
        # Must mirror upstream get_vocos_mel_spectrogram: htk scale, no filter norm, magnitude.
        inverse_mel = T.InverseMelScale(n_stft=n_stft, n_mels=mel.n_mel_channels, sample_rate=mel.target_sample_rate)
        griffin_lim = T.GriffinLim(
            n_fft=mel.n_fft, win_length=mel.win_length, hop_length=mel.hop_length, power=1.0, n_iter=n_iter
        )
        return cls(inverse_mel.to(device), griffin_lim.to(device), mel.target_sample_rate)

    def decode(self, mel: "torch.Tensor") -> "torch.Tensor":
        magnitude = self.inverse_mel(mel.float().exp()).clamp(min=0.0)
        return self.griffin_lim(magnitude)


@dataclass
class VocosVocoder:
    model: Any
    sample_rate: int
    name: str = "vocos"

    @classmethod
    def build(cls, cfg: VocoderConfig, mel: MelConfig, device: str = "cpu") -> "VocosVocoder":
        import torch
        from vocos import Vocos

        config_path, weights_path = _vocos_files(cfg)
        model = Vocos.from_hparams(str(config_path))
        state = torch.load(str(weights_path), map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first_line = str(exc).splitlines()[0]
            raise VocoderError(f"Vocos weights {weights_path} do not fit {config_path}: {first_line}") from None
        return cls(model.eval().to(device), mel.target_sample_rate)

    def decode(self, mel: "torch.Tensor") -> "torch.Tensor":
        return self.model.decode(mel.float())


def _vocos_files(cfg: VocoderConfig) -> tuple[Path, Path]:
    if cfg.local_path:
        folder = Path(cfg.local_path).expanduser()
        files = (folder / "config.yaml", folder / "pytorch_model.bin")
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise VocoderError(
                f"vocoder.local_path={folder} lacks {', '.join(missing)} (expected the Hub layout of "
                f"{DEFAULT_REPOS['vocos']}: config.yaml and pytorch_model.bin)"
            )
        return files
    repo_id = cfg.repo_id or DEFAULT_REPOS["vocos"]
    return _hub_file(repo_id, "config.yaml"), _hub_file(repo_id, "pytorch_model.bin")


def _hub_file(repo_id: str, filename: str) -> Path:
    from f5app.hub import PretrainedUnavailable, fetch_hub_file

    try:
        return fetch_hub_file(
            repo_id, filename, what="vocoder file", setting="vocoder.repo_id", repo_setting="vocoder.repo_id",
            alternative="pass vocoder.local_path=DIR holding config.yaml and pytorch_model.bin, or use vocoder=griffinlim",
        )
    except PretrainedUnavailable as error:
        raise VocoderError(str(error)) from None


@dataclass
class BigVGANVocoder:
    model: Any
    sample_rate: int
    name: str = "bigvgan"

    @classmethod
    def build(cls, cfg: VocoderConfig, mel: MelConfig, device: str = "cpu") -> "BigVGANVocoder":
        try:
            import bigvgan
        except ImportError:
            raise VocoderError(
                "vocoder=bigvgan needs the bigvgan package: pip install 'f5app[bigvgan]' (or use vocoder=vocos "
                "with a vocos-mel model)"
            ) from None
        source = str(Path(cfg.local_path).expanduser()) if cfg.local_path else (cfg.repo_id or DEFAULT_REPOS["bigvgan"])
        try:
            model = bigvgan.BigVGAN.from_pretrained(source, use_cuda_kernel=False)
        except Exception as exc:
            raise VocoderError(f"cannot load BigVGAN from {source}: {exc}") from None
        model.remove_weight_norm()
        return cls(model.eval().to(device), mel.target_sample_rate)

    def decode(self, mel: "torch.Tensor") -> "torch.Tensor":
        return self.model(mel.float()).squeeze(1)
