"""Text normalisation for WER/CER, and the two scores (computed with jiwer).

Both the input text and the ASR transcript go through :func:`normalize` before they are compared:

1. Unicode NFKC, then case folding (``Mother`` = ``mother``).
2. Numbers are written out as English words when the language is English or unknown
   (``6 spoons`` = ``six spoons``; ``1,200`` → ``one thousand two hundred``; ``3.5`` → ``three
   point five``; ``2nd`` → ``second``). Years are read as plain numbers (``1990`` → ``one
   thousand nine hundred ninety``), so a transcript that spells a year as ``nineteen ninety``
   still differs. Other languages keep their digits.
3. Apostrophes inside words are dropped (``don't`` = ``dont``, as upstream's evaluation does).
4. Every other punctuation mark or symbol becomes a space (``mother-nature`` = ``mother
   nature``; upstream deletes them, joining the words: the one place where the two differ).
5. Runs of spaces become one.

WER is word edits over reference words. For languages written without spaces between words
(Chinese, Japanese, Thai, Lao, Burmese, Khmer) each character is a word, as upstream does for
Chinese. CER is character edits over reference characters, spaces not counted. An empty
reference scores 0 against an empty transcript and 1 against anything else.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

#: Languages written without spaces between words: WER counts characters.
SCRIPTIO_CONTINUA = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})
APOSTROPHES = "'\u2019\u02bc\u2018`"

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ["", "thousand", "million", "billion", "trillion", "quadrillion"]
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(?![\w])")


@dataclass(frozen=True)
class TextScore:
    reference: str  # normalised
    hypothesis: str  # normalised
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    reference_words: int


def normalize(text: str, language: str | None = None) -> str:
    """``text`` as WER/CER compare it (the rules are in the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if _is_english(language):
        text = _NUMBER.sub(_number_to_words, text)
    text = "".join("" if ch in APOSTROPHES else " " if _is_punctuation_or_symbol(ch) else ch for ch in text)
    return " ".join(text.split())


def score(reference: str, hypothesis: str, language: str | None = None) -> TextScore:
    """WER and CER of ``hypothesis`` (a transcript) against ``reference`` (what should be said)."""
    import jiwer  # deferred: jiwer is optional (the [eval] extra)

    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    ref_tokens, hyp_tokens = _tokens(ref, language), _tokens(hyp, language)
    ref_chars, hyp_chars = ref.replace(" ", ""), hyp.replace(" ", "")
    if not ref_tokens:
        empty = 0.0 if not hyp_tokens else 1.0
        return TextScore(ref, hyp, empty, empty, 0, 0, len(hyp_tokens), 0)
    words = jiwer.process_words(" ".join(ref_tokens), " ".join(hyp_tokens) if hyp_tokens else "")
    chars = jiwer.process_characters(ref_chars, hyp_chars)
    return TextScore(
        reference=ref,
        hypothesis=hyp,
        wer=float(words.wer),
        cer=float(chars.cer),
        substitutions=int(words.substitutions),
        deletions=int(words.deletions),
        insertions=int(words.insertions),
        reference_words=len(ref_tokens),
    )


def _tokens(normalized: str, language: str | None) -> list[str]:
    if language and language.split("-")[0].lower() in SCRIPTIO_CONTINUA:
        return [ch for ch in normalized if not ch.isspace()]
    return normalized.split()


def _is_english(language: str | None) -> bool:
    return language is None or language.split("-")[0].lower() == "en"


def _is_punctuation_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _number_to_words(match: re.Match[str]) -> str:
    whole, fraction, suffix = match.group(1), match.group(2), match.group(3)
    words = integer_words(int(whole.replace(",", "")))
    if fraction is not None:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    elif suffix:
        words = _ordinal(words)
    return f" {words} "


def integer_words(number: int) -> str:
    """``1234`` → ``one thousand two hundred thirty four`` (no hyphens, no "and")."""
    if number < 0:
        return "minus " + integer_words(-number)
    if number >= 1000 ** len(_SCALES):  # beyond the named scales: read the digits
        return " ".join(_ONES[int(d)] for d in str(number))
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {integer_words(rest)}" if rest else "")
    groups: list[str] = []
    scale = 0
    while number:
        number, group = divmod(number, 1000)
        if group:
            groups.append(integer_words(group) + (f" {_SCALES[scale]}" if _SCALES[scale] else ""))
        scale += 1
    return " ".join(reversed(groups))


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()
