"""The optimizer a run trains with (``optim.name``) and the precisions it may train in here.

``adamw`` is torch's AdamW. ``adamw8bit`` is bitsandbytes' AdamW8bit, upstream's ``bnb_optimizer``:
its two moments are kept in 8 bits (blockwise-quantised), 2 bytes per parameter instead of 8, so
F5TTS_v1_Base's optimizer state shrinks from 2.7 GB to ~0.7 GB. bitsandbytes (a dependency of
f5-tts on Linux and Windows) runs it on CPU too since 0.4x: checked with 0.50.2 here.
"""

from __future__ import annotations

from typing import Iterable

import torch

from f5app.config import OptimConfig
from f5app.errors import UserError

OPTIMIZERS = ("adamw", "adamw8bit")
PRECISIONS = ("no", "bf16", "fp16")


def build_optimizer(params: Iterable[torch.nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    params = list(params)
    common = dict(lr=optim.lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay, eps=optim.eps)
    if optim.name == "adamw":
        return torch.optim.AdamW(params, **common)
    if optim.name == "adamw8bit":
        try:
            # imported only here: ~2 s of import (it probes its CPU and CUDA kernels) that adamw runs never need
            import bitsandbytes
        except ImportError as error:
            raise UserError(f"optim=adamw8bit needs bitsandbytes, which does not import here ({error}); pip install bitsandbytes, or use optim=adamw") from error
        return bitsandbytes.optim.AdamW8bit(params, **common)
    raise UserError(f"optim.name={optim.name} is not an optimizer; use one of {', '.join(OPTIMIZERS)}")


def check_precision(mixed_precision: str, on_cpu: bool) -> None:
    """Refuse what accelerate would silently not do: it runs fp16 autocast and its grad scaler only
    on accelerators, so ``fp16`` on CPU would train in fp32 while the checkpoint said fp16."""
    if mixed_precision not in PRECISIONS:
        raise UserError(f"trainer.mixed_precision={mixed_precision} is not a precision; use one of {', '.join(PRECISIONS)}")
    if mixed_precision == "fp16" and on_cpu:
        raise UserError("trainer.mixed_precision=fp16 needs a GPU (accelerate has no fp16 autocast or grad scaler on CPU, "
                        "it would train in fp32); on CPU use trainer.mixed_precision=bf16 or no")
