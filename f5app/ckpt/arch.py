"""An architecture signature computed from config alone, and the same read from tensor shapes.

Comparing the two tells whether a file's weights fit ``model=…`` without importing f5_tts or
building a model. The formulas mirror upstream ``f5_tts.model.backbones.dit.DiT`` (checked
against a real model in tests/test_ckpt_validate.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

from f5app.ckpt.keys import normalize_key
from f5app.config import ModelConfig

#: upstream DiT's attention head width (``dim_head=64``, not configurable in ArchConfig)
DIM_HEAD = 64

TEXT_EMBED = "transformer.text_embed.text_embed.weight"
PROJ_OUT = "transformer.proj_out.weight"
INPUT_PROJ = "transformer.input_embed.proj.weight"
ATTN_Q = "transformer.transformer_blocks.0.attn.to_q.weight"
FF_IN = "transformer.transformer_blocks.0.ff.ff.0.0.weight"
Q_NORM = "transformer.transformer_blocks.0.attn.q_norm.weight"
_BLOCK = re.compile(r"^transformer\.transformer_blocks\.(\d+)\.")
_TEXT_BLOCK = re.compile(r"^transformer\.text_embed\.text_blocks\.(\d+)\.")

#: keys that must be present in any DiT state dict we accept
REQUIRED_KEYS = (TEXT_EMBED, PROJ_OUT, INPUT_PROJ, ATTN_Q, FF_IN)

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ArchSignature:
    """Shapes that identify a DiT. ``text_embed`` rows are vocab + 1 (upstream's filler token)."""

    text_embed: Optional[Shape]  # (vocab + 1, text_dim)
    proj_out: Optional[Shape]  # (n_mels, dim)
    input_proj: Optional[Shape]  # (dim, 2 * n_mels + text_dim)
    attn_q: Optional[Shape]  # (heads * 64, dim)
    ff_inner: Optional[int]  # dim * ff_mult
    depth: int  # transformer blocks
    conv_layers: int  # ConvNeXt blocks in the text embedding
    qk_norm: bool

    @property
    def vocab_size(self) -> Optional[int]:
        return None if self.text_embed is None else self.text_embed[0] - 1


def expected_signature(model: ModelConfig, vocab_size: int) -> ArchSignature:
    arch, n_mels = model.arch, model.mel.n_mel_channels
    return ArchSignature(
        text_embed=(vocab_size + 1, arch.text_dim),
        proj_out=(n_mels, arch.dim),
        input_proj=(arch.dim, 2 * n_mels + arch.text_dim),
        attn_q=(arch.heads * DIM_HEAD, arch.dim),
        ff_inner=arch.dim * arch.ff_mult,
        depth=arch.depth,
        conv_layers=arch.conv_layers,
        qk_norm=arch.qk_norm is not None,
    )


def canonical_shapes(raw_shapes: Mapping[str, Shape]) -> dict[str, Shape]:
    """Key -> shape with keys normalised (``ema_model.``/``module.``… stripped, non-weights dropped).

    When a mapping holds both a plain and an EMA copy, the first spelling seen wins; the shapes
    are the same either way.
    """
    shapes: dict[str, Shape] = {}
    for key, shape in raw_shapes.items():
        canonical = normalize_key(key)
        if canonical is not None and canonical not in shapes:
            shapes[canonical] = tuple(shape)
    return shapes


def signature_from_shapes(shapes: Mapping[str, Shape]) -> ArchSignature:
    """The signature of a canonical key -> shape map (see :func:`canonical_shapes`)."""
    blocks = {int(m.group(1)) for key in shapes if (m := _BLOCK.match(key))}
    text_blocks = {int(m.group(1)) for key in shapes if (m := _TEXT_BLOCK.match(key))}
    ff_in = shapes.get(FF_IN)
    return ArchSignature(
        text_embed=shapes.get(TEXT_EMBED),
        proj_out=shapes.get(PROJ_OUT),
        input_proj=shapes.get(INPUT_PROJ),
        attn_q=shapes.get(ATTN_Q),
        ff_inner=None if ff_in is None else ff_in[0],
        depth=len(blocks),
        conv_layers=len(text_blocks),
        qk_norm=Q_NORM in shapes,
    )


def missing_required(shapes: Mapping[str, Shape]) -> list[str]:
    return [key for key in REQUIRED_KEYS if key not in shapes]


def architecture_differences(expected: ArchSignature, found: ArchSignature) -> list[str]:
    """Readable differences except the vocabulary (checked separately: it may legitimately grow)."""
    lines = []
    for item in fields(ArchSignature):
        want, got = getattr(expected, item.name), getattr(found, item.name)
        if item.name == "text_embed":
            want, got = _columns(want), _columns(got)
            label = "text_dim (text embedding columns)"
        else:
            label = _LABELS[item.name]
        if want != got:
            lines.append(f"{label}: file {_fmt(got)}, config {_fmt(want)}")
    return lines


_LABELS = {
    "proj_out": "proj_out (n_mels, dim)",
    "input_proj": "input projection (dim, 2*n_mels+text_dim)",
    "attn_q": "attention q (heads*64, dim)",
    "ff_inner": "feed-forward inner width (dim*ff_mult)",
    "depth": "transformer blocks (depth)",
    "conv_layers": "text conv blocks (conv_layers)",
    "qk_norm": "qk_norm present",
}


def _columns(shape: Optional[Shape]) -> Optional[int]:
    return None if shape is None or len(shape) < 2 else shape[1]


def _fmt(value: object) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(str(v) for v in value) + ")"
    return "absent" if value is None else str(value)


#: Model-config keys that decide tensor shapes or the meaning of the weights. Everything else in
#: ModelConfig (name, attention backend, activation checkpointing) may change freely.
ARCHITECTURE_KEYS = (
    "backbone",
    "arch.dim",
    "arch.depth",
    "arch.heads",
    "arch.ff_mult",
    "arch.text_dim",
    "arch.text_mask_padding",
    "arch.qk_norm",
    "arch.conv_layers",
    "arch.pe_attn_head",
    "mel.target_sample_rate",
    "mel.n_mel_channels",
    "mel.hop_length",
    "mel.win_length",
    "mel.n_fft",
    "mel.mel_spec_type",
)


def model_config_diff(recorded: dict, current: dict) -> list[str]:
    """Architecture differences as readable lines, e.g. ``arch.dim: checkpoint 64, config 1024``.

    Only :data:`ARCHITECTURE_KEYS` are compared; a key the checkpoint did not record is skipped.
    """
    lines = []
    for dotted in ARCHITECTURE_KEYS:
        missing = object()
        old, new = _lookup(recorded, dotted, missing), _lookup(current, dotted, missing)
        if old is missing or new is missing:
            continue
        if old != new:
            lines.append(f"{dotted}: checkpoint {old!r}, config {new!r}")
    return lines


def _lookup(tree: Any, dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree
