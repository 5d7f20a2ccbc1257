"""Build upstream F5-TTS's ``CFM(DiT)`` from our typed model config and a vocabulary.

The f5-tts import is deferred to :func:`build_cfm` because it costs seconds (see NOTES.md);
callers that only need vocabularies or config never pay it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from f5app.config import ModelConfig

if TYPE_CHECKING:
    from f5_tts.model import CFM


def read_vocab(path: str | Path) -> list[str]:
    """One token per line, as upstream's ``vocab.txt`` (line 0 is the space, used for unknowns)."""
    text = Path(path).read_text(encoding="utf-8")
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise ValueError(f"vocabulary file {path} is empty")
    if tokens[0] != " ":
        raise ValueError(f"vocabulary file {path}: line 1 must be a single space (upstream's unknown-token slot)")
    return tokens


def write_vocab(tokens: list[str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")


def vocab_map(tokens: list[str]) -> dict[str, int]:
    return {token: index for index, token in enumerate(tokens)}


def text_embedding_rows(vocab_size: int) -> int:
    """Rows of ``transformer.text_embed.text_embed.weight``: upstream adds one filler token."""
    return vocab_size + 1


def build_cfm(model: ModelConfig, vocab: list[str]) -> "CFM":
    """A freshly initialised CFM(DiT) with upstream's exact architecture for ``model``."""
    from f5_tts.model.backbones.dit import DiT
    from f5_tts.model.cfm import CFM

    if model.backbone != "DiT":
        raise ValueError(f"model.backbone={model.backbone!r} is not supported; use DiT")
    mel = asdict(model.mel)
    transformer = DiT(**asdict(model.arch), text_num_embeds=len(vocab), mel_dim=model.mel.n_mel_channels)
    return CFM(transformer=transformer, mel_spec_kwargs=mel, vocab_char_map=vocab_map(vocab))
