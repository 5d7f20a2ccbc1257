"""Tiny checkpoints and a tiny Vocos for the inference tests (generated in tmp_path, never committed).

``tiny_run_checkpoint`` writes an f5app checkpoint (through tests/ckpt_factory.py, the real store);
``upstream_trainer_pt`` / ``upstream_release_safetensors`` write upstream's own file formats.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from f5app.config import ArchConfig, MelConfig, ModelConfig
from f5app.inference.upstream_import import register_lazy_f5_model_package
from f5app.data.vocab import write_vocab
from f5app.model import build_cfm

TINY_VOCAB = [" "] + list(string.ascii_lowercase) + list(string.ascii_uppercase) + list(".,!?'-")
UPSTREAM_REF_TEXT = "Some call me nature, others call me mother nature."


def tiny_model_config(mel_spec_type: str = "vocos") -> ModelConfig:
    return ModelConfig(
        name="tiny",
        arch=ArchConfig(dim=64, depth=2, heads=2, ff_mult=2, text_dim=32, conv_layers=1),
        mel=MelConfig(mel_spec_type=mel_spec_type),
    )


def upstream_ref_wav() -> Path:
    import f5_tts

    return Path(f5_tts.__path__[0]) / "infer/examples/basic/basic_ref_en.wav"


def tiny_cfm_and_ema(seed: int = 0, train_steps: int = 2, model_config: ModelConfig | None = None):
    """A tiny CFM nudged by a few optimiser steps on the upstream reference clip, and its EMA."""
    from ema_pytorch import EMA

    from f5app.audio.io import read_audio

    register_lazy_f5_model_package()
    torch.manual_seed(seed)
    cfm = build_cfm(model_config or tiny_model_config(), TINY_VOCAB)
    ema = EMA(cfm, include_online_model=False, beta=0.5, update_after_step=0, update_every=1)
    wav, _ = read_audio(upstream_ref_wav(), target_sr=24000)
    audio = torch.from_numpy(wav[: 24000 * 2])[None]
    optimizer = torch.optim.AdamW(cfm.parameters(), lr=1e-3)
    for _ in range(train_steps):
        loss, _, _ = cfm(audio, text=[list(UPSTREAM_REF_TEXT[:20])])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update()
    return cfm, ema


def tiny_run_checkpoint(run_dir: Path, update: int = 2, val_loss: float | None = 1.0, seed: int = 0) -> Path:
    """A complete f5app checkpoint of a tiny trained CFM in ``run_dir/checkpoints`` (pointers updated)."""
    from ckpt_factory import make_f5app_checkpoint

    cfm, _ = tiny_cfm_and_ema(seed)
    state = {k: v.detach().clone() for k, v in cfm.state_dict().items()}
    return make_f5app_checkpoint(
        run_dir / "checkpoints", update, tiny_model_config(), TINY_VOCAB, val_loss=val_loss, state=state, run_name=run_dir.name
    )


def upstream_trainer_pt(path: Path, seed: int = 0, model_config: ModelConfig | None = None) -> Path:
    """Upstream trainer's checkpoint file: model/EMA/optimizer state, no vocab, no config."""
    cfm, ema = tiny_cfm_and_ema(seed, model_config=model_config)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": cfm.state_dict(), "ema_model_state_dict": ema.state_dict(), "update": 2}, path)
    write_vocab(TINY_VOCAB, path.parent / "vocab.txt")
    return path


def upstream_release_safetensors(path: Path, seed: int = 0) -> Path:
    """Upstream's released format: EMA only (``ema_model.transformer.*``, ``initted``, ``step``)."""
    from safetensors.torch import save_file

    _, ema = tiny_cfm_and_ema(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(path))
    write_vocab(TINY_VOCAB, path.parent / "vocab.txt")
    return path


#: Like charactr/vocos-mel-24khz's config.yaml, shrunk (dim/layers) so it builds in milliseconds.
TINY_VOCOS_CONFIG = """\
feature_extractor:
  class_path: vocos.feature_extractors.MelSpectrogramFeatures
  init_args:
    sample_rate: 24000
    n_fft: 1024
    hop_length: 256
    n_mels: 100
    padding: center

backbone:
  class_path: vocos.models.VocosBackbone
  init_args:
    input_channels: 100
    dim: {dim}
    intermediate_dim: {intermediate_dim}
    num_layers: {num_layers}

head:
  class_path: vocos.heads.ISTFTHead
  init_args:
    dim: {dim}
    n_fft: 1024
    hop_length: 256
    padding: center
"""


def random_vocos_folder(folder: Path, dim: int = 32, intermediate_dim: int = 64, num_layers: int = 1, seed: int = 0) -> Path:
    """A randomly initialised Vocos saved in the Hub's layout (config.yaml + pytorch_model.bin)."""
    from vocos import Vocos

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.yaml"
    config.write_text(TINY_VOCOS_CONFIG.format(dim=dim, intermediate_dim=intermediate_dim, num_layers=num_layers))
    torch.manual_seed(seed)
    torch.save(Vocos.from_hparams(str(config)).state_dict(), folder / "pytorch_model.bin")
    return folder
