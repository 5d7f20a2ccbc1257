"""Build upstream F5-TTS's ``CFM(DiT)`` from our typed model config and a vocabulary
(vocabulary files themselves: :mod:`f5app.data.vocab`).

The f5-tts import is deferred to :func:`build_cfm` because it costs seconds (see NOTES.md);
callers that only need vocabularies or config never pay it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from f5app.config import ModelConfig
from f5app.data.vocab import vocab_map

if TYPE_CHECKING:
    from f5_tts.model import CFM


def text_embedding_rows(vocab_size: int) -> int:
    """Rows of ``transformer.text_embed.text_embed.weight``: upstream adds one filler token."""
    return vocab_size + 1


def build_cfm(model: ModelConfig, vocab: list[str]) -> "CFM":
    """A freshly initialised CFM(DiT) with upstream's exact architecture for ``model``."""
    from f5_tts.model.backbones.dit import DiT  # deferred: f5_tts.model.backbones.dit alone costs 4.7 s (NOTES.md)
    from f5_tts.model.cfm import CFM  # deferred: f5_tts.model costs 6.7 s (NOTES.md): only code that builds or reads the model pays it

    if model.backbone != "DiT":
        raise ValueError(f"model.backbone={model.backbone!r} is not supported; use DiT")
    mel = asdict(model.mel)
    transformer = DiT(**asdict(model.arch), text_num_embeds=len(vocab), mel_dim=model.mel.n_mel_channels)
    return CFM(transformer=transformer, mel_spec_kwargs=mel, vocab_char_map=vocab_map(vocab))
