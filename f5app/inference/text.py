"""Text handling before synthesis: voice tags, vocabulary checks, sentence chunking.

Reimplements the few helpers needed from upstream ``f5_tts.infer.utils_infer`` (``chunk_text``,
the ref-text punctuation fix, ``infer_cli``'s ``[voice]`` tags) because importing that module
costs seconds and loads transformers/pydub we do not need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from f5app.inference.errors import InferenceInputError
from f5app.inference.upstream_import import register_lazy_f5_model_package

MAIN_VOICE = "main"
_VOICE_TAG = re.compile(r"\[(\w+)\]")
_CJK = re.compile(r"[\u3100-\u9fff]")


@dataclass(frozen=True)
class VoiceSegment:
    voice: str
    text: str


def split_voices(text: str, known_voices: set[str]) -> list[VoiceSegment]:
    """Split ``"[main] Hi. [town] Hello."`` into per-voice segments; untagged text is the main voice.

    An unknown tag is an error (upstream silently falls back to main, which hides typos).
    """
    segments: list[VoiceSegment] = []
    voice = MAIN_VOICE
    position = 0
    for match in _VOICE_TAG.finditer(text):
        _append_segment(segments, voice, text[position : match.start()])
        voice = match.group(1)
        if voice not in known_voices:
            raise InferenceInputError(
                f"text uses voice [{voice}] but only {', '.join(sorted(known_voices))} are configured; "
                f"add voices.{voice}.ref_audio=... and voices.{voice}.ref_text=..."
            )
        position = match.end()
    _append_segment(segments, voice, text[position:])
    return segments


def _append_segment(segments: list[VoiceSegment], voice: str, text: str) -> None:
    text = " ".join(text.split())
    if text:
        segments.append(VoiceSegment(voice, text))


def chunk_text(text: str, max_bytes: int) -> list[str]:
    """Upstream's ``chunk_text``: split after sentence punctuation, pack sentences up to ``max_bytes`` UTF-8 bytes.

    A single sentence longer than ``max_bytes`` stays whole (it is never cut mid-word).
    """
    chunks: list[str] = []
    current = ""
    for sentence in re.split(r"(?<=[;:,.!?])\s+|(?<=[；：，。！？])", text):
        if not sentence:
            continue
        piece = sentence + " " if len(sentence[-1].encode("utf-8")) == 1 else sentence
        if len(current.encode("utf-8")) + len(sentence.encode("utf-8")) <= max_bytes:
            current += piece
        else:
            if current:
                chunks.append(current.strip())
            current = piece
    if current.strip():
        chunks.append(current.strip())
    return chunks


def first_sentence(text: str, max_bytes: int) -> tuple[str, str]:
    """``(first sentence, the rest)``; a first sentence over ``max_bytes`` is cut after the clauses that fit (at least one)."""
    clauses = chunk_text(text, 1)  # every clause alone: chunk_text never cuts inside one
    first: list[str] = []
    for clause in clauses:
        if first and len(" ".join(first + [clause]).encode("utf-8")) > max_bytes:
            break
        first.append(clause)
        if clause.endswith((".", "!", "?", "。", "！", "？")):
            break
    return " ".join(first), " ".join(clauses[len(first):])


def max_chunk_bytes(ref_text: str, ref_seconds: float, speed: float, window_seconds: float = 22.0) -> int:
    """Upstream's chunk size: as many bytes as fit in the time left in a ~22 s window at the reference's pace."""
    pace = len(ref_text.encode("utf-8")) / max(ref_seconds, 1e-3)
    return max(1, int(pace * max(window_seconds - ref_seconds, 1.0) * speed))


def normalize_ref_text(ref_text: str) -> str:
    """End the reference transcript with sentence punctuation and a space, as upstream does."""
    text = ref_text.strip()
    if not text.endswith((".", "。")):
        text += "."
    return text + " " if text.endswith(".") else text


def to_tokens(text: str, vocab: dict[str, int]) -> list[str]:
    """Characters as tokens; Chinese characters become pinyin when the vocabulary is pinyin-based (upstream's)."""
    if _CJK.search(text) and is_pinyin_vocab(vocab) and any(ch not in vocab for ch in _CJK.findall(text)):
        register_lazy_f5_model_package()
        from f5_tts.model.utils import convert_char_to_pinyin  # deferred: f5_tts.model costs 6.7 s (NOTES.md): only code that builds or reads the model pays it

        return list(convert_char_to_pinyin([text])[0])
    return list(text)


def is_pinyin_vocab(vocab: dict[str, int]) -> bool:
    """Upstream's pretrained vocabulary holds toned pinyin syllables such as ``ni3``."""
    return any(len(t) > 1 and t[-1] in "12345" and t[:-1].isascii() and t[:-1].isalpha() for t in vocab)


def unknown_tokens(tokens: list[str], vocab: dict[str, int]) -> list[str]:
    """Distinct tokens missing from the vocabulary, in order of first appearance."""
    return list(dict.fromkeys(t for t in tokens if t not in vocab))


def apply_unknown_policy(tokens: list[str], vocab: dict[str, int], policy: str, what: str) -> tuple[list[str], list[str]]:
    """Return ``(tokens, missing)``: ``drop`` removes missing tokens, ``error`` refuses with the list."""
    missing = unknown_tokens(tokens, vocab)
    if not missing:
        return tokens, []
    listed = " ".join(repr(t) for t in missing)
    if policy == "error":
        raise InferenceInputError(
            f"{what} has characters missing from the model's vocabulary: {listed} "
            f"(remove them, or pass unknown_chars=drop)"
        )
    if policy != "drop":
        raise InferenceInputError(f"unknown_chars={policy!r} is not an option; use drop or error")
    return [t for t in tokens if t in vocab], missing
