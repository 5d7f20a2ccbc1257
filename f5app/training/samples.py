"""An audio sample and a mel picture of what the model says now, for the tracker.

The reference is a validation clip: its first half conditions the model, which then speaks the
clip's own text; hearing the second half change over training is the point.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from f5app.audio.vocoder import load_vocoder
from f5app.config import ModelConfig, VocoderConfig


@torch.no_grad()
def render_sample(cfm: Any, item: dict[str, Any], model: ModelConfig, vocoder_cfg: VocoderConfig, vocab_index: dict[str, int]) -> tuple[np.ndarray, int, Any]:
    import matplotlib  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it

    device = next(cfm.parameters()).device
    mel = item["mel"].to(device)  # (n_mels, frames)
    frames = mel.shape[-1]
    cond = mel[:, : max(1, frames // 2)].T.unsqueeze(0)  # (1, frames/2, n_mels)
    tokens = list(item["text"])
    text = torch.tensor([[vocab_index.get(token, 0) for token in tokens]], dtype=torch.long, device=device)
    generated, _ = cfm.sample(cond=cond, text=text, duration=frames, steps=16, cfg_strength=2.0, sway_sampling_coef=-1.0, seed=0)
    generated = generated.float()  # (1, frames, n_mels)
    vocoder = load_vocoder(vocoder_cfg, model.mel, device=str(device))
    wav = vocoder.decode(generated.permute(0, 2, 1)).squeeze(0).cpu().numpy().astype(np.float32)
    peak = float(np.abs(wav).max()) if wav.size else 0.0
    if peak > 0.99:  # an early model's mel can decode louder than full scale; keep the sample listenable
        wav = wav * (0.99 / peak)

    figure, axes = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
    axes[0].imshow(mel.cpu().numpy(), origin="lower", aspect="auto")
    axes[0].set_title("reference")
    axes[1].imshow(generated[0].T.cpu().numpy(), origin="lower", aspect="auto")
    axes[1].set_title("generated (left half is the prompt)")
    figure.tight_layout()
    plt.close(figure)
    return wav, vocoder.sample_rate, figure
