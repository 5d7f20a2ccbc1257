"""A user's lexicon (``text_norm.lexicon=FILE``): how to say names, loanwords and acronyms.

One entry a line, UTF-8; ``#`` starts a comment line, blank lines are skipped:

    Nguyen = Win
    SQL = sequel
    /\\bF5-TTS\\b/ = F five T T S
    /(\\d+)x/ = \\1 times

A plain word matches as a whole word, case as written. ``/REGEX/`` is a Python regular
expression (``(?i)`` makes it ignore case); its replacement may use ``\\1``. Entries apply in
file order, before the language's normaliser, so a replacement's digits are still read aloud.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from f5app.errors import UserError

#: A lexicon is a short hand-written file; anything larger is a mistake (a wrong path).
MAX_LEXICON_BYTES = 1024 * 1024
_REGEX_LINE = re.compile(r"^/(?P<pattern>.+)/\s*=\s*(?P<said>.*)$")


@dataclass(frozen=True)
class Lexicon:
    path: str
    entries: tuple[tuple[re.Pattern[str], str], ...]
    digest: str  # sha256 of the file: a prepared data set records which lexicon shaped it

    def apply(self, text: str) -> str:
        for pattern, said in self.entries:
            text = pattern.sub(said, text)
        return text


def read_lexicon(path: str | Path) -> Lexicon:
    """Parse ``path``; a bad line is a :class:`UserError` naming the file and line."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"text_norm.lexicon={path} does not exist (or is not a regular file)")
    data = file.read_bytes()
    if len(data) > MAX_LEXICON_BYTES:
        raise UserError(f"text_norm.lexicon={path} is {len(data)} bytes; a lexicon is at most {MAX_LEXICON_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"text_norm.lexicon={path} is not UTF-8 (bad byte at offset {exc.start})") from None
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        entries.append(_entry(line, f"{path}:{number}"))
    return Lexicon(str(file), tuple(entries), hashlib.sha256(data).hexdigest())


def _entry(line: str, where: str) -> tuple[re.Pattern[str], str]:
    regex = _REGEX_LINE.match(line)
    if regex:
        try:
            pattern = re.compile(regex.group("pattern"))
            pattern.sub(regex.group("said"), "")  # a bad group reference in the replacement fails here, not mid-synthesis
        except (re.error, IndexError) as exc:
            raise UserError(f"{where}: bad regular expression /{regex.group('pattern')}/: {exc}") from None
        return pattern, regex.group("said").strip()
    word, equals, said = line.partition("=")
    if not equals or not word.strip():
        raise UserError(f"{where}: expected 'WORD = how to say it' or '/REGEX/ = how to say it', got {line!r:.80}")
    # said literally: a plain entry's replacement holds no group references
    return re.compile(rf"(?<!\w){re.escape(word.strip())}(?!\w)"), said.strip().replace("\\", "\\\\")
