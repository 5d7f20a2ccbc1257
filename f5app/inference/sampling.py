"""The flow-matching sampler: upstream ``CFM.sample``'s maths with the ODE kept in fp32.

Upstream builds its time grid and noise in the model's dtype. In bf16 (8-bit mantissa)
neighbouring steps near t = 1 collide and torchdiffeq stops with "t must be strictly increasing
or decreasing" at 16 and 32 steps. Here the time grid, the noise and the Euler state stay fp32;
only the network runs in the chosen dtype (its inputs cast at its boundary, its output cast
back). In fp32 the result equals upstream's ``CFM.sample`` at the same seed (tested).

The Euler loop is written out (upstream calls torchdiffeq's fixed-grid ``euler``: the same
update ``y += (t1 - t0) * f(t0, y)``), so no step pays torchdiffeq's bookkeeping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch.nn.utils.rnn import pad_sequence

#: Upstream's Empirically Pruned Step Sampling grids (``f5_tts.model.utils.get_epss_timesteps``),
#: in 32nds of the unit interval: dense near t = 0, where the flow changes most. Step counts not
#: listed use a uniform grid, as upstream does.
EPSS_GRIDS: dict[int, tuple[int, ...]] = {
    5: (0, 2, 4, 8, 16, 32),
    6: (0, 2, 4, 6, 8, 16, 32),
    7: (0, 2, 4, 6, 8, 16, 24, 32),
    10: (0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32),
    12: (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32),
}


def time_grid(steps: int, sway_sampling_coef: Optional[float], device: Any) -> torch.Tensor:
    """``steps + 1`` fp32 times from 0 to 1: the EPSS grid where upstream has one, sway-warped."""
    if steps in EPSS_GRIDS:
        t = torch.tensor(EPSS_GRIDS[steps], dtype=torch.float32, device=device) / 32
    else:
        t = torch.linspace(0, 1, steps + 1, dtype=torch.float32, device=device)
    if sway_sampling_coef is not None:
        t = t + sway_sampling_coef * (torch.cos(torch.pi / 2 * t) - 1 + t)
    return t


@dataclass
class Network:
    """How the DiT runs: its dtype and whether autocast wraps it (weights cast once, see precision.py)."""

    dtype: torch.dtype = torch.float32
    autocast: bool = False

    def context(self, device_type: str) -> Any:
        if not self.autocast or self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.dtype)


def sample(
    cfm: Any,
    cond: torch.Tensor,
    text: list[list[str]],
    duration: int | torch.Tensor,
    *,
    lens: Optional[torch.Tensor] = None,
    steps: int = 32,
    cfg_strength: float = 2.0,
    sway_sampling_coef: Optional[float] = -1.0,
    seeds: Optional[Sequence[int]] = None,
    network: Network = Network(),
) -> torch.Tensor:
    """Generated mel ``(batch, frames, n_mels)`` in fp32, the reference frames copied in as upstream does.

    ``cond`` is a raw wave ``(batch, samples)`` or a mel ``(batch, frames, n_mels)``; ``seeds``
    gives item k its own noise (``torch.manual_seed(seeds[k])``, what it gets alone).
    """
    from f5_tts.model.utils import lens_to_mask, list_str_to_idx  # deferred: f5_tts costs ~8 s to import (NOTES.md)

    transformer = cfm.transformer
    device = cond.device
    if cond.ndim == 2:
        cond = cfm.mel_spec(cond.float()).permute(0, 2, 1)
    cond = cond.float()
    batch, cond_frames = cond.shape[:2]
    if lens is None:
        lens = torch.full((batch,), cond_frames, device=device, dtype=torch.long)
    tokens = list_str_to_idx(text, cfm.vocab_char_map).to(device)
    if isinstance(duration, int):
        duration = torch.full((batch,), duration, device=device, dtype=torch.long)
    # at least the text or the prompt plus one frame, so something is generated (as upstream)
    duration = torch.maximum(torch.maximum((tokens != -1).sum(dim=-1), lens) + 1, duration).clamp(max=65536)
    frames = int(duration.amax())

    cond = torch.nn.functional.pad(cond, (0, 0, 0, frames - cond_frames), value=0.0)
    cond_mask = torch.nn.functional.pad(lens_to_mask(lens), (0, frames - lens_to_mask(lens).shape[-1]), value=False)
    cond_mask = cond_mask.unsqueeze(-1)
    step_cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
    mask = lens_to_mask(duration) if batch > 1 else None  # one item needs no mask (upstream)

    noise = []
    for k, frames_k in enumerate(duration.tolist()):
        if seeds is not None:
            torch.manual_seed(int(seeds[k]))
        noise.append(torch.randn(frames_k, cfm.num_channels, device=device, dtype=torch.float32))
    y = pad_sequence(noise, padding_value=0, batch_first=True)

    net_cond = step_cond.to(network.dtype)
    t = time_grid(steps, sway_sampling_coef, device)
    try:
        with network.context(device.type):
            for t0, t1 in zip(t[:-1], t[1:]):
                y = y + (t1 - t0) * _flow(transformer, y, net_cond, tokens, t0, mask, cfg_strength, network.dtype)
    finally:
        transformer.clear_cache()
    return torch.where(cond_mask, cond, y)


def _flow(transformer: Any, y: torch.Tensor, cond: torch.Tensor, tokens: torch.Tensor, t: torch.Tensor,
          mask: Optional[torch.Tensor], cfg_strength: float, dtype: torch.dtype) -> torch.Tensor:
    """The guided flow at time ``t`` in fp32; conditional and unconditional run as one batch of 2b."""
    x = y.to(dtype)
    if cfg_strength < 1e-5:
        pred = transformer(x=x, cond=cond, text=tokens, time=t, mask=mask, drop_audio_cond=False, drop_text=False, cache=True)
        return pred.float()
    both = transformer(x=x, cond=cond, text=tokens, time=t, mask=mask, cfg_infer=True, cache=True).float()
    pred, null_pred = torch.chunk(both, 2, dim=0)
    return pred + (pred - null_pred) * cfg_strength
