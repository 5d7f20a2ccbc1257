"""Vocabulary files: upstream F5-TTS's ``vocab.txt``, read, written and counted here only.

One token per line, UTF-8, each line ended by ``\\n``; line 1 is a single space (upstream's slot
for unknown tokens). A file that is not valid UTF-8 is damage (a flipped bit), reported as one
:class:`VocabError` line, never a UnicodeDecodeError. Standard library only: the checkpoint CLI
counts vocabularies without importing torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from f5app.errors import UserError
from f5app.files import atomic_write

VOCAB_FILE = "vocab.txt"


class VocabError(UserError, ValueError):
    """A vocabulary file that is not one (undecodable, empty, no space slot); one line says why."""


def upstream_vocab_path() -> Path:
    """Upstream's pretrained vocabulary (2,545 tokens) inside the f5-tts package, found without importing it."""
    spec = importlib.util.find_spec("f5_tts")
    if spec is None or not spec.submodule_search_locations:
        raise VocabError("the f5-tts package is not installed; it provides the pretrained (pinyin) vocabulary")
    return Path(next(iter(spec.submodule_search_locations))) / "infer" / "examples" / VOCAB_FILE


def _lines(path: str | Path) -> list[str]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise VocabError(
            f"vocabulary file {path} is damaged: byte {error.start} is not UTF-8; restore it from a good copy"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_vocab(path: str | Path) -> list[str]:
    """The tokens of ``path`` in order (token i is embedding row i + 1)."""
    tokens = _lines(path)
    if not tokens:
        raise VocabError(f"vocabulary file {path} is empty")
    if tokens[0] != " ":
        raise VocabError(f"vocabulary file {path}: line 1 must be a single space (upstream's unknown-token slot)")
    return tokens


def count_vocab(path: str | Path) -> int:
    """How many tokens ``path`` holds (its lines), without the checks of :func:`read_vocab`."""
    return len(_lines(path))


def vocab_text(tokens: list[str]) -> str:
    """The file's exact content for ``tokens``: what :func:`write_vocab` writes."""
    return "".join(f"{token}\n" for token in tokens)


def write_vocab(tokens: list[str], path: str | Path) -> Path:
    """Write ``path`` atomically (readers see the old vocabulary or the whole new one)."""
    return atomic_write(Path(path), vocab_text(tokens), durable=False)


def vocab_map(tokens: list[str]) -> dict[str, int]:
    """Token -> index, as upstream's ``vocab_char_map``."""
    return {token: index for index, token in enumerate(tokens)}
