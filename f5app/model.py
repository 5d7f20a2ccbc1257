"""Build upstream F5-TTS's ``CFM(DiT)`` (or ``CFM(UNetT)``, E2-TTS) from our typed model config and a vocabulary
(vocabulary files themselves: :mod:`f5app.data.vocab`).

The f5-tts import is deferred to :func:`build_cfm` because it costs seconds (see NOTES.md);
callers that only need vocabularies or config never pay it.
"""

from __future__ import annotations

import importlib

from dataclasses import asdict
from typing import TYPE_CHECKING

from f5app.config import ModelConfig
from f5app.data.vocab import vocab_map
from f5app.errors import UserError

if TYPE_CHECKING:
    from f5_tts.model import CFM


def text_embedding_rows(vocab_size: int) -> int:
    """Rows of ``transformer.text_embed.text_embed.weight``: upstream adds one filler token."""
    return vocab_size + 1


#: backbone name (``model.backbone``) -> upstream module holding the class of that name
BACKBONE_MODULES = {"DiT": "f5_tts.model.backbones.dit", "UNetT": "f5_tts.model.backbones.unett"}


def build_cfm(model: ModelConfig, vocab: list[str]) -> "CFM":
    """A freshly initialised CFM with upstream's exact architecture for ``model``."""
    from f5_tts.model.cfm import CFM  # deferred: f5_tts.model costs 6.7 s (NOTES.md): only code that builds or reads the model pays it

    if model.backbone not in BACKBONE_MODULES:
        raise UserError(f"model.backbone={model.backbone!r} is not supported; use one of {', '.join(BACKBONE_MODULES)}")
    arch = asdict(model.arch)
    if model.backbone == "UNetT":
        if arch.pop("checkpoint_activations"):
            raise UserError("model.arch.checkpoint_activations=true needs backbone DiT; upstream's UNetT has no such option")
    backbone = getattr(importlib.import_module(BACKBONE_MODULES[model.backbone]), model.backbone)
    transformer = backbone(**arch, text_num_embeds=len(vocab), mel_dim=model.mel.n_mel_channels)
    return CFM(transformer=transformer, mel_spec_kwargs=asdict(model.mel), vocab_char_map=vocab_map(vocab))
