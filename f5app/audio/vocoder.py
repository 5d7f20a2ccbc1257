"""Vocoders: turn the model's log-mel spectrogram ``(batch, n_mels, frames)`` into waveforms.

Each vocoder is a class in :data:`VOCODERS`, registered under its config name with
:func:`register_vocoder`. The class declares the model mel it understands (``mel_type``) and
its default weights (``default_repo``; None when it needs none) and builds itself from
:class:`VocoderConfig`; ``conf/vocoder/<name>.yaml`` selects it. A new vocoder is a class and
a YAML file. The registered ones:

- ``griffinlim``: no weights, works offline. Inverts upstream's vocos-style mel (torchaudio
  ``MelSpectrogram(power=1, norm=None, htk)`` followed by ``log(clamp(x, 1e-5))``) with
  ``InverseMelScale`` + ``GriffinLim``. Sounds rough, but always available.
- ``vocos``: ``charactr/vocos-mel-24khz`` from the Hub (cache first) or ``vocoder.local_path``,
  a folder with ``config.yaml`` and ``pytorch_model.bin`` laid out as on the Hub. Built from an
  allow-list (:func:`build_vocos`), never through ``Vocos.from_hparams``, which imports and
  calls any ``class_path`` a config.yaml names.
- ``bigvgan``: NVIDIA's BigVGAN through its PyPI package (optional extra).

A vocoder only understands the mel it was trained on, so :func:`check_vocoder_matches_mel`
refuses a pairing such as a ``bigvgan``-mel model with the Vocos vocoder.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional, Protocol

import yaml

from f5app.config import MelConfig, VocoderConfig
from f5app.errors import UserError, first_line
from f5app.hub import PretrainedUnavailable, fetch_hub_file
from f5app.safe_load import Refused, load_torch

if TYPE_CHECKING:
    import torch


class VocoderError(UserError, ValueError):
    """A vocoder that cannot be built or does not fit the model; the message says what to change."""


class Vocoder(Protocol):
    name: str
    sample_rate: int

    def decode(self, mel: "torch.Tensor") -> "torch.Tensor":
        """``(batch, n_mels, frames)`` log-mel -> ``(batch, samples)`` waveform, float32."""
        ...


#: config name -> vocoder class (with ``name``, ``mel_type``, ``default_repo`` and ``build``).
VOCODERS: dict[str, Any] = {}


def register_vocoder(cls):
    """Class decorator: make ``cls`` the vocoder that ``vocoder=<cls.name>`` builds."""
    VOCODERS[cls.name] = cls
    return cls


def vocoder_class(name: str):
    try:
        return VOCODERS[name]
    except KeyError:
        raise VocoderError(f"vocoder={name!r} is unknown; choose one of {sorted(VOCODERS)}") from None


def check_vocoder_matches_mel(vocoder_name: str, mel: MelConfig) -> None:
    expected = vocoder_class(vocoder_name).mel_type
    if expected != mel.mel_spec_type:
        fitting = sorted(name for name, cls in VOCODERS.items() if cls.mel_type == mel.mel_spec_type)
        raise VocoderError(
            f"vocoder={vocoder_name} needs a model trained on {expected} mels, but this model uses "
            f"mel_spec_type={mel.mel_spec_type}; "
            + (f"use vocoder={' or vocoder='.join(fitting)}" if fitting else "no registered vocoder reads those mels")
        )


def load_vocoder(cfg: VocoderConfig, mel: MelConfig, device: str = "cpu") -> Vocoder:
    """Build the configured vocoder on ``device`` after checking it fits ``mel``."""
    check_vocoder_matches_mel(cfg.name, mel)
    return vocoder_class(cfg.name).build(cfg, mel, device=device)


@register_vocoder
@dataclass
class GriffinLimVocoder:
    inverse_mel: Any
    griffin_lim: Any
    sample_rate: int
    name: ClassVar[str] = "griffinlim"
    mel_type: ClassVar[str] = "vocos"
    default_repo: ClassVar[Optional[str]] = None

    @classmethod
    def build(cls, cfg: VocoderConfig, mel: MelConfig, device: str = "cpu") -> "GriffinLimVocoder":
        import torchaudio.transforms as T  # deferred: torchaudio loads torch (1.9 s, NOTES.md)

        n_stft = mel.n_fft // 2 + 1
        # Must mirror upstream get_vocos_mel_spectrogram: htk scale, no filter norm, magnitude.
        inverse_mel = T.InverseMelScale(n_stft=n_stft, n_mels=mel.n_mel_channels, sample_rate=mel.target_sample_rate)
        griffin_lim = T.GriffinLim(
            n_fft=mel.n_fft, win_length=mel.win_length, hop_length=mel.hop_length, power=1.0, n_iter=cfg.n_iter
        )
        return cls(inverse_mel.to(device), griffin_lim.to(device), mel.target_sample_rate)

    def decode(self, mel: "torch.Tensor") -> "torch.Tensor":
        magnitude = self.inverse_mel(mel.float().exp()).clamp(min=0.0)
        return self.griffin_lim(magnitude)


@register_vocoder
@dataclass
class VocosVocoder:
    model: Any
    sample_rate: int
    name: ClassVar[str] = "vocos"
    mel_type: ClassVar[str] = "vocos"
    default_repo: ClassVar[Optional[str]] = "charactr/vocos-mel-24khz"

    @classmethod
    def build(cls, cfg: VocoderConfig, mel: MelConfig, device: str = "cpu") -> "VocosVocoder":
        config_path, weights_path = _vocos_files(cfg)
        return cls(build_vocos(config_path, weights_path, mel).eval().to(device), mel.target_sample_rate)

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
                f"{VocosVocoder.default_repo}: config.yaml and pytorch_model.bin)"
            )
        return files
    repo_id = cfg.repo_id or VocosVocoder.default_repo
    return _hub_file(repo_id, "config.yaml"), _hub_file(repo_id, "pytorch_model.bin")


def _hub_file(repo_id: str, filename: str) -> Path:
    try:
        return fetch_hub_file(
            repo_id, filename, what="vocoder file", setting="vocoder.repo_id", repo_setting="vocoder.repo_id",
            alternative="pass vocoder.local_path=DIR holding config.yaml and pytorch_model.bin, or use vocoder=griffinlim",
        )
    except PretrainedUnavailable as error:
        raise VocoderError(str(error)) from None


# --- Vocos from a snapshot folder, building only known classes -----------------------------------

#: config.yaml section -> the one class f5app builds for it (what charactr/vocos-mel-24khz names).
VOCOS_CLASSES = {
    "feature_extractor": "vocos.feature_extractors.MelSpectrogramFeatures",
    "backbone": "vocos.models.VocosBackbone",
    "head": "vocos.heads.ISTFTHead",
}
#: The Hub's config.yaml is 0.5 KB; anything near this is not one.
MAX_VOCOS_CONFIG_BYTES = 64 * 1024
_PLAIN = (bool, int, float, str, type(None))


def build_vocos(config_path: Path, weights_path: Path, mel: MelConfig):
    """A ``vocos.Vocos`` with the weights of ``weights_path``, built as ``config_path`` describes.

    Nothing the files name is imported or called: each section of config.yaml must name the class
    in :data:`VOCOS_CLASSES`, whose constructor gets the section's plain ``init_args``; the weights
    load with ``weights_only=True``. The layers are compared with the weights on the meta device
    first, so a config that does not fit them is one line, not an allocation of its size.
    """
    import torch  # deferred: torch costs 1.9 s (NOTES.md)
    from vocos import Vocos  # deferred: a vocoder package loads torch (1.9 s, NOTES.md); only that vocoder needs it

    parts = _vocos_parts(config_path)
    _check_vocos_mel(parts["feature_extractor"], mel, config_path)
    state = _vocos_weights(weights_path)
    where = f"Vocos weights {weights_path} do not fit {config_path}"
    layers = parts["backbone"].get("num_layers")
    held = len({key.split(".")[2] for key in state if key.startswith("backbone.convnext.")})
    if isinstance(layers, int) and not isinstance(layers, bool) and layers > held:
        raise VocoderError(f"{where}: config asks for {layers} backbone layers, the weights hold {held}")
    with torch.device("meta"):
        planned = {
            f"{section}.{key}": tuple(value.shape)
            for section in ("backbone", "head")
            for key, value in _vocos_part(section, parts[section], config_path).state_dict().items()
        }
    for key, shape in planned.items():
        if key in state and tuple(state[key].shape) != shape:
            raise VocoderError(f"{where}: {key} is {tuple(state[key].shape)} in the weights, {shape} in the config")
    model = Vocos(**{section: _vocos_part(section, args, config_path) for section, args in parts.items()})
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise VocoderError(f"{where}: {first_line(exc)}") from None
    return model


def _vocos_parts(path: Path) -> dict[str, dict[str, Any]]:
    try:
        if path.stat().st_size > MAX_VOCOS_CONFIG_BYTES:
            raise VocoderError(f"{path} is {path.stat().st_size} bytes: not a Vocos config.yaml")
        config = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        reason = first_line(exc)
        raise VocoderError(f"{path} is not a readable Vocos config.yaml ({reason}); fetch it again") from None
    if not isinstance(config, Mapping):
        raise VocoderError(f"{path} is not a Vocos config.yaml: it needs the sections {', '.join(VOCOS_CLASSES)}")
    parts = {}
    for section, class_path in VOCOS_CLASSES.items():
        entry = config.get(section)
        named = entry.get("class_path") if isinstance(entry, Mapping) else None
        if named != class_path:
            raise VocoderError(
                f"{path}: {section}.class_path is {named!r}; f5app builds only {class_path} there "
                f"(a Vocos mel vocoder such as {VocosVocoder.default_repo})"
            )
        args = entry.get("init_args") or {}
        if not isinstance(args, Mapping) or not all(isinstance(k, str) and isinstance(v, _PLAIN) for k, v in args.items()):
            raise VocoderError(f"{path}: {section}.init_args must map names to plain values (numbers, text, true/false)")
        parts[section] = dict(args)
    return parts


def _vocos_part(section: str, args: dict[str, Any], path: Path):
    from vocos.feature_extractors import MelSpectrogramFeatures  # deferred: a vocoder package loads torch (1.9 s, NOTES.md); only that vocoder needs it
    from vocos.heads import ISTFTHead  # deferred: a vocoder package loads torch (1.9 s, NOTES.md); only that vocoder needs it
    from vocos.models import VocosBackbone  # deferred: a vocoder package loads torch (1.9 s, NOTES.md); only that vocoder needs it

    cls = {"feature_extractor": MelSpectrogramFeatures, "backbone": VocosBackbone, "head": ISTFTHead}[section]
    try:
        return cls(**args)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise VocoderError(f"{path}: {section}.init_args do not build {VOCOS_CLASSES[section]}: {first_line(exc)}") from None


def _check_vocos_mel(args: dict[str, Any], mel: MelConfig, path: Path) -> None:
    """The feature extractor must make the model's mel (and so stays as small as the model's)."""
    from vocos.feature_extractors import MelSpectrogramFeatures  # deferred: a vocoder package loads torch (1.9 s, NOTES.md); only that vocoder needs it

    defaults = {name: p.default for name, p in inspect.signature(MelSpectrogramFeatures).parameters.items()}
    wanted = {"sample_rate": mel.target_sample_rate, "n_fft": mel.n_fft, "hop_length": mel.hop_length, "n_mels": mel.n_mel_channels}
    for name, value in wanted.items():
        found = args.get(name, defaults.get(name))
        if found != value:
            raise VocoderError(
                f"{path}: this Vocos reads mels with {name}={found}, the model makes {name}={value}; "
                "use a Vocos trained on the model's mel settings"
            )


def _vocos_weights(path: Path) -> dict[str, "torch.Tensor"]:
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    try:
        state = load_torch(Path(path))  # the gate first: a hostile pickle never reaches an unpickler
    except Refused as refused:
        raise VocoderError(f"Vocos weights {path} cannot be read ({refused}); the file is damaged or hostile: fetch it again") from None
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise VocoderError(f"Vocos weights {path} are not a state dict of tensors; the file is damaged: fetch it again")
    return dict(state)


@register_vocoder
@dataclass
class BigVGANVocoder:
    model: Any
    sample_rate: int
    name: ClassVar[str] = "bigvgan"
    mel_type: ClassVar[str] = "bigvgan"
    default_repo: ClassVar[Optional[str]] = "nvidia/bigvgan_v2_24khz_100band_256x"

    @classmethod
    def build(cls, cfg: VocoderConfig, mel: MelConfig, device: str = "cpu") -> "BigVGANVocoder":
        try:
            import bigvgan  # deferred: a vocoder package loads torch (1.9 s, NOTES.md); only that vocoder needs it
        except ImportError:
            raise VocoderError(
                "vocoder=bigvgan needs the bigvgan package: pip install 'f5app[bigvgan]' (or use vocoder=vocos "
                "with a vocos-mel model)"
            ) from None
        source = str(Path(cfg.local_path).expanduser()) if cfg.local_path else (cfg.repo_id or cls.default_repo)
        try:
            model = bigvgan.BigVGAN.from_pretrained(source, use_cuda_kernel=False)
        except Exception as exc:
            raise VocoderError(f"cannot load BigVGAN from {source}: {exc}") from None
        model.remove_weight_norm()
        return cls(model.eval().to(device), mel.target_sample_rate)

    def decode(self, mel: "torch.Tensor") -> "torch.Tensor":
        return self.model(mel.float()).squeeze(1)
