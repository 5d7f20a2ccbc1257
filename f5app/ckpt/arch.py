"""An architecture signature computed from config alone, and the same read from tensor shapes.

Comparing the two tells whether a file's weights fit ``model=…`` without importing f5_tts or
building a model. The formulas mirror upstream ``f5_tts.model.backbones.dit.DiT`` and
``f5_tts.model.backbones.unett.UNetT`` (E2-TTS), checked against real models in
tests/test_ckpt_validate.py and tests/test_model_families.py. :func:`matching_presets` names the
``model=`` presets a file's shapes fit, so a file of unknown origin can be recognised.
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
_TEXT_BLOCK = re.compile(r"^transformer\.text_embed\.text_blocks\.(\d+)\.")


@dataclass(frozen=True)
class BackboneKeys:
    """Where a backbone keeps its blocks: DiT's ``transformer_blocks.N.attn``, UNetT's
    ``layers.N.{0 skip_proj, 1 attn_norm, 2 attn, 3 ff_norm, 4 ff}``."""

    block: re.Pattern
    attn_q: str
    ff_in: str
    q_norm: str


BACKBONES: dict[str, BackboneKeys] = {
    "DiT": BackboneKeys(
        re.compile(r"^transformer\.transformer_blocks\.(\d+)\."),
        "transformer.transformer_blocks.0.attn.to_q.weight",
        "transformer.transformer_blocks.0.ff.ff.0.0.weight",
        "transformer.transformer_blocks.0.attn.q_norm.weight",
    ),
    "UNetT": BackboneKeys(
        re.compile(r"^transformer\.layers\.(\d+)\."),
        "transformer.layers.0.2.to_q.weight",
        "transformer.layers.0.4.ff.0.0.weight",
        "transformer.layers.0.2.q_norm.weight",
    ),
}
ATTN_Q, FF_IN, Q_NORM = BACKBONES["DiT"].attn_q, BACKBONES["DiT"].ff_in, BACKBONES["DiT"].q_norm

#: keys that must be present in any state dict we accept, whatever its backbone
COMMON_KEYS = (TEXT_EMBED, PROJ_OUT, INPUT_PROJ)
#: keys that must be present in any DiT state dict we accept
REQUIRED_KEYS = (*COMMON_KEYS, ATTN_Q, FF_IN)


def detect_backbone(shapes: Mapping[str, "Shape"]) -> Optional[str]:
    """The backbone whose first block a canonical key -> shape map holds, or None."""
    return next((name for name, keys in BACKBONES.items() if keys.attn_q in shapes), None)

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ArchSignature:
    """Shapes that identify a backbone. ``text_embed`` rows are vocab + 1 (upstream's filler token)."""

    backbone: Optional[str]  # DiT | UNetT; None when neither's blocks are there
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
        backbone=model.backbone,
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
    backbone = detect_backbone(shapes)
    keys = BACKBONES[backbone or "DiT"]
    blocks = {int(m.group(1)) for key in shapes if (m := keys.block.match(key))}
    text_blocks = {int(m.group(1)) for key in shapes if (m := _TEXT_BLOCK.match(key))}
    ff_in = shapes.get(keys.ff_in)
    return ArchSignature(
        backbone=backbone,
        text_embed=shapes.get(TEXT_EMBED),
        proj_out=shapes.get(PROJ_OUT),
        input_proj=shapes.get(INPUT_PROJ),
        attn_q=shapes.get(keys.attn_q),
        ff_inner=None if ff_in is None else ff_in[0],
        depth=len(blocks),
        conv_layers=len(text_blocks),
        qk_norm=keys.q_norm in shapes,
    )


def missing_required(shapes: Mapping[str, Shape]) -> list[str]:
    keys = BACKBONES[detect_backbone(shapes) or "DiT"]
    return [key for key in (*COMMON_KEYS, keys.attn_q, keys.ff_in) if key not in shapes]


def matching_presets(shapes: Mapping[str, Shape], presets: Mapping[str, ModelConfig]) -> list[str]:
    """The preset names (``model=…``) whose architecture the file's shapes fit, vocabulary aside.

    Several names come back where architectures differ only in settings that leave no trace in
    tensor shapes: F5TTS_Base (v0) and F5TTS_v1_Base differ in ``text_mask_padding`` and
    ``pe_attn_head`` alone, so no file can say which of the two it is.
    """
    found = signature_from_shapes(shapes)
    return sorted(
        name for name, model in presets.items()
        if not architecture_differences(expected_signature(model, found.vocab_size or 0), found)
    )


def describe_fit(shapes: Mapping[str, Shape], presets: Mapping[str, ModelConfig]) -> str:
    """One clause naming the preset(s) a file fits, for messages about a mismatch or a choice."""
    names = matching_presets(shapes, presets)
    if not names:
        return "its shapes fit none of the model presets (" + ", ".join(sorted(presets)) + "): give model.arch.* by hand"
    if len(names) == 1:
        return f"its shapes fit model={names[0]}"
    return (
        "its shapes fit " + " and ".join(f"model={n}" for n in names)
        + " alike (they differ only in settings tensor shapes do not record, e.g. v0 and v1): "
        "name the one it was trained as with model="
    )


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
    "backbone": "backbone (DiT blocks or UNetT layers)",
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
