"""Text tokens and vocabularies: ``char``, ``pinyin`` (upstream's pretrained vocab) and ``custom``.

Token 0 is always the space, which upstream also uses for unknown tokens. ``pinyin`` and
``custom`` start from a fixed vocabulary and only *append* what the data adds, so the rows of a
pretrained text embedding keep their meaning when fine-tuning into a new language.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from f5app.data.vocab import read_vocab, upstream_vocab_path

if TYPE_CHECKING:
    from f5app.config import DataConfig

TOKENIZERS = ("char", "pinyin", "custom")


def check_tokenizer(tokenizer: str) -> None:
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"data.tokenizer={tokenizer!r} is not known; use one of {', '.join(TOKENIZERS)}")


def tokens_of_many(texts: list[str], tokenizer: str) -> list[list[str]]:
    """The token sequence upstream would store in raw.arrow's ``text`` column, for each of ``texts``."""
    check_tokenizer(tokenizer)
    if tokenizer == "pinyin":
        # Costs seconds (pulls rjieba and pypinyin through f5_tts.model): only for pinyin, once per list.
        from f5_tts.model.utils import convert_char_to_pinyin

        return [list(tokens) for tokens in convert_char_to_pinyin(texts, polyphone=True)]
    return [list(text) for text in texts]


def extend_vocab(base: list[str], tokens: Iterable[str]) -> tuple[list[str], list[str]]:
    """``base`` kept in order, unseen ``tokens`` appended sorted. Returns (vocab, added)."""
    known = set(base)
    added = sorted({token for token in tokens if token not in known})
    return list(base) + added, added


def base_vocab_for(data: "DataConfig") -> list[str] | None:
    """The fixed vocabulary a tokenizer starts from (None for ``char``, which has none)."""
    check_tokenizer(data.tokenizer)
    if data.tokenizer == "char":
        return None
    if data.tokenizer == "pinyin":
        return read_vocab(upstream_vocab_path())
    if not data.vocab_path:
        raise ValueError("data.tokenizer=custom needs data.vocab_path=PATH/vocab.txt (one token per line)")
    path = Path(data.vocab_path).expanduser()
    if not path.is_file():
        raise ValueError(f"data.vocab_path={data.vocab_path}: no such file")
    return read_vocab(path)

