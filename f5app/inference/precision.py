"""How the DiT runs at inference: its dtype (``dtype=``), int8 linear layers (``quantize=``) and
``torch.compile`` (``compile=``). The ODE around it stays fp32 (sampling.py).

One ``dtype=auto`` rule (measured, docs/benchmarks.md):
- CUDA: bf16 where the GPU has bf16 tensor cores (compute capability 8+), else fp16 (7.x), else fp32;
- CPU: bf16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX: ``torch.backends.cpu``
  reports ``avx512_bf16``/``amx``): here a bf16 DiT forward is faster than fp32; else fp32;
- MPS, and models paired with BigVGAN: fp32 (as before).
fp16 on a CPU works but is slow (no native fp16 matmul: ~100x slower than fp32 here), so auto never picks it there.

Every dtype runs the DiT's attention through fast_attention.py (rotary tables once per forward, in
the network's dtype).

The weights of the transformer are cast to the dtype once (the mel front end stays fp32) and
autocast covers the few fp32 inputs (the time embedding's sinusoids), so no op pays a weight cast
per step.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from f5app.inference import fast_attention
from f5app.inference.errors import InferenceInputError
from f5app.inference.sampling import Network

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
QUANTIZE = ("none", "int8")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX on this CPU (from /proc/cpuinfo's flags; torch's ISA report names only the widest level)."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def pick_dtype(name: str, device: str, mel_spec_type: str) -> torch.dtype:
    """The network's dtype for ``dtype=name`` (see the module's rule for ``auto``)."""
    if name == "auto":
        kind = device.split(":")[0]
        if mel_spec_type == "bigvgan":
            return torch.float32
        if kind == "cuda":
            major = torch.cuda.get_device_properties(device).major
            return torch.bfloat16 if major >= 8 else torch.float16 if major >= 7 else torch.float32
        if kind == "cpu" and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise InferenceInputError(f"dtype={name} is not an option; use auto, fp32, fp16 or bf16")
    return DTYPES[name]


def prepare_network(cfm: Any, dtype: torch.dtype, device: str, quantize: str = "none", compile: bool = False) -> Network:
    """Cast, quantise or compile ``cfm.transformer`` in place, with the inference attention of fast_attention.py;
    the :class:`Network` to sample with. For inference copies only: training keeps upstream's modules."""
    if quantize not in QUANTIZE:
        raise InferenceInputError(f"quantize={quantize} is not an option; use none or int8")
    if quantize == "int8":
        if not device.startswith("cpu"):
            raise InferenceInputError(f"quantize=int8 runs on the CPU only (torch.ao dynamic quantisation); device={device}")
        if dtype != torch.float32:
            raise InferenceInputError("quantize=int8 needs dtype=fp32 (its int8 kernels take fp32 activations)")
        cfm.transformer = quantize_linears(cfm.transformer)
    elif dtype != torch.float32:
        cfm.transformer.to(dtype)
    fast_attention.install(cfm.transformer)
    if compile:
        # dynamic=True: every text has another frame count; one graph serves them all
        cfm.transformer.forward = torch.compile(cfm.transformer.forward, dynamic=True)
    return Network(dtype=dtype, autocast=dtype != torch.float32)


def quantize_linears(transformer: Any) -> Any:
    """The DiT with every ``nn.Linear`` as a dynamically quantised int8 layer (weights int8, activations per call)."""
    from torch.ao.quantization import quantize_dynamic  # deferred: only quantize=int8 needs it, and it is deprecated

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (not installed); it still works in torch 2.14
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return quantize_dynamic(transformer, {torch.nn.Linear}, dtype=torch.qint8)
