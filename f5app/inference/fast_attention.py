"""Attention for upstream's DiT at inference: the rotary tables made once per forward, in the network's dtype.

Upstream's ``AttnProcessor`` applies x_transformers' ``apply_rotary_pos_emb`` in every block (22 in
F5TTS_v1_Base): it takes ``cos`` and ``sin`` of the fp32 frequencies again in each block and, in bf16,
promotes q and k to fp32 and back (a ``cat``, a ``neg``, four products and two copies per tensor).
Here :class:`RotaryTables` stands in for the DiT's ``rotary_embed``: once per forward it makes
``cos`` and a sign-folded ``sin`` in the network's dtype, and :class:`InferenceAttnProcessor` rotates
q and k with three elementwise passes, then calls torch's SDPA as upstream does.

It also keeps the rotary frequencies in fp32. Casting the DiT to bf16 (``Module.to``) casts
x_transformers' ``inv_freq`` buffer, and upstream then computes the positions in bf16, exact only up
to 256: at frame 900 the angles are off by up to ~4 rad. In fp32 the output equals upstream's within
rounding (tests/test_fast_attention.py).

Measured (docs/benchmarks.md): 2 % less CPU time per F5TTS_v1_Base forward in fp32 and in bf16; the
forward is bound by the linear layers and torch's CPU flash-attention kernel, not by this.
Only for inference copies (``prepare_network``); training keeps upstream's modules, and its
evaluation speaks through this attention only for the time it speaks (:func:`installed`), so the
scores it records are the scores ``f5app.eval`` gives the saved checkpoint.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


class RopeTables(NamedTuple):
    """``cos`` and ``sin`` with the even lanes negated, both ``(1, frames, 1, head_dim)`` (b n h d layout)."""

    cos: torch.Tensor
    signed_sin: torch.Tensor


def standard_inv_freq(dim: int) -> torch.Tensor:
    """x_transformers ``RotaryEmbedding(dim)``'s fp32 frequencies (base 10000, no rescaling), as it computes them."""
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))


class RotaryTables(nn.Module):
    """In place of the DiT's ``rotary_embed``: ``forward_from_seq_len`` gives the :class:`RopeTables` of one forward.

    It keeps upstream's ``inv_freq`` buffer (the state dict is unchanged); the buffer is cast with the
    network, so its dtype is the tables' dtype, but the angles come from fp32 frequencies made afresh.
    """

    def __init__(self, inv_freq: torch.Tensor):
        super().__init__()
        self.register_buffer("inv_freq", inv_freq)

    def forward_from_seq_len(self, seq_len: int) -> tuple[RopeTables, None]:
        device, dtype = self.inv_freq.device, self.inv_freq.dtype
        positions = torch.arange(seq_len, device=device, dtype=torch.float32)
        angles = torch.outer(positions, standard_inv_freq(2 * self.inv_freq.numel()).to(device))  # (n, head_dim / 2)
        cos, sin = angles.cos(), angles.sin()
        cos = torch.stack((cos, cos), dim=-1).flatten(-2)  # x_transformers' interleaved (d r) lanes
        signed_sin = torch.stack((-sin, sin), dim=-1).flatten(-2)
        return RopeTables(cos.to(dtype)[None, :, None, :], signed_sin.to(dtype)[None, :, None, :]), None


def rotate(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` for ``x`` in (b, n, h, head_dim): pairs swapped, the sign folded into sin."""
    cos, signed_sin = tables.cos.to(x.dtype), tables.signed_sin.to(x.dtype)
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos, swapped, signed_sin)


class InferenceAttnProcessor:
    """Upstream's ``AttnProcessor`` (torch backend) for rotary given as :class:`RopeTables`."""

    def __init__(self, pe_attn_head: Optional[int] = None, attn_mask_enabled: bool = False):
        self.pe_attn_head = pe_attn_head
        self.attn_mask_enabled = attn_mask_enabled

    def __call__(self, attn: Any, x: torch.Tensor, mask: Optional[torch.Tensor] = None,
                 rope: Optional[tuple[RopeTables, None]] = None) -> torch.Tensor:
        batch, frames = x.shape[:2]
        query = attn.to_q(x).unflatten(-1, (attn.heads, -1))  # b n h d: the rotation broadcasts over heads
        key = attn.to_k(x).unflatten(-1, (attn.heads, -1))
        value = attn.to_v(x).unflatten(-1, (attn.heads, -1))
        if attn.q_norm is not None:
            query = attn.q_norm(query)
        if attn.k_norm is not None:
            key = attn.k_norm(key)
        if rope is not None:
            tables = rope[0]
            if self.pe_attn_head is None:
                query, key = rotate(query, tables), rotate(key, tables)
            else:
                pn = self.pe_attn_head
                query = torch.cat((rotate(query[:, :, :pn], tables), query[:, :, pn:]), dim=2)
                key = torch.cat((rotate(key[:, :, :pn], tables), key[:, :, pn:]), dim=2)
        attn_mask = mask[:, None, None, :] if self.attn_mask_enabled and mask is not None else None
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                             attn_mask=attn_mask, dropout_p=0.0, is_causal=False)
        out = attn.to_out[1](attn.to_out[0](out.transpose(1, 2).reshape(batch, frames, -1)))
        if mask is not None:
            out = out.masked_fill(~mask.unsqueeze(-1), 0.0)
        return out


def install(transformer: Any) -> bool:
    """Give an upstream DiT the rotary tables and the processor (before or after its cast; again is a no-op).

    False, and nothing changed, where the model is not one this was written for: another backbone,
    flash_attn, xpos or rescaled rotary frequencies.
    """
    if type(transformer).__name__ != "DiT":
        return False
    rotary = transformer.rotary_embed
    if isinstance(rotary, RotaryTables):
        return True
    blocks = [block.attn for block in transformer.transformer_blocks]
    processors = [a.processor for a in blocks]
    if (getattr(rotary, "scale", None) is not None or getattr(rotary, "interpolation_factor", 1.0) != 1.0
            or any(type(p).__name__ != "AttnProcessor" or p.attn_backend != "torch" for p in processors)
            or not torch.allclose(standard_inv_freq(2 * rotary.inv_freq.numel()).to(rotary.inv_freq), rotary.inv_freq)):
        log.info("fast attention: not installed (this DiT's rotary or attention backend is not upstream's default)")
        return False
    transformer.rotary_embed = RotaryTables(rotary.inv_freq)
    for a, p in zip(blocks, processors):
        a.processor = InferenceAttnProcessor(pe_attn_head=p.pe_attn_head, attn_mask_enabled=p.attn_mask_enabled)
    return True


@contextmanager
def installed(transformer: Any) -> Iterator[bool]:
    """:func:`install` for the ``with`` block only: upstream's rotary module and processors come back after it.

    For a model that goes on training (the EMA weights evaluated during a run): it speaks as the
    inference copies do, and its modules are upstream's again for the next update and save.
    """
    rotary = getattr(transformer, "rotary_embed", None)
    blocks = [block.attn for block in getattr(transformer, "transformer_blocks", [])]
    processors = [a.processor for a in blocks]
    changed = not isinstance(rotary, RotaryTables) and install(transformer)
    try:
        yield changed or isinstance(rotary, RotaryTables)
    finally:
        if changed:
            transformer.rotary_embed = rotary
            for a, p in zip(blocks, processors):
                a.processor = p
