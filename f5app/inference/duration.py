"""How long the generated speech should be: the voice's speaking rate times what the text says.

Upstream (``f5_tts.infer.utils_infer.infer_batch_process``) sizes a chunk as
``ref_audio_len + int(ref_audio_len / ref_text_len * gen_text_len / speed)`` with UTF-8 *byte*
lengths, and slows texts under 10 bytes to ``speed=0.3``. Bytes make accented and non-Latin text
"longer" (``ç`` is 2 bytes, a kanji 3), and the reference's pauses and punctuation are spread over
every character, so "Hi." gets a third of a second of pace times 3.3.

Here:

- the text is counted in *speakable characters* (letters and digits in any script: no spaces,
  no punctuation, no bytes);
- the voice's rate is learnt from the reference: with word timestamps (an ASR), characters per
  second of *speech* (pauses between words left out), and the mean pause the speaker makes at a
  comma or full stop; without, characters per second over the whole trimmed reference;
- a text's time is its characters at that rate, plus one pause per inner punctuation mark, and
  never under a floor for a word (``MIN_WORD_SECONDS``), so "Hi." and a single name come out as a
  word.

``scripts/bench_duration.py`` measures both rules on held-out human recordings (docs/inference.md).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

#: The shortest time one word is given (seconds). Single words cut from f5-tts's example
#: recordings last 0.25-0.75 s (scripts/bench_duration.py); 0.45 s holds the short ones without
#: leaving the long ones noise-length, and keeps every one-word text over the issue's 0.4 s.
MIN_WORD_SECONDS = 0.45
#: Each further word adds at least this much (a floor for short texts of several tiny words).
MIN_EXTRA_WORD_SECONDS = 0.2
#: Used when a reference has no pause to learn from (a clip of one phrase), seconds.
DEFAULT_PAUSE_SECONDS = 0.2
#: Marks after which a speaker pauses, inside a text (the text's final mark adds nothing).
_PAUSE_MARKS = re.compile(r"[,;:.!?…，。！？；：]+(?=\s*\S)")


def speakable_chars(text: str) -> int:
    """Letters and digits in any script (Unicode categories L and N); spaces, marks and symbols count 0."""
    return sum(1 for ch in text if unicodedata.category(ch)[0] in "LN")


def pause_count(text: str) -> int:
    """Punctuation inside ``text`` where a speaker pauses (a run of marks counts once)."""
    return len(_PAUSE_MARKS.findall(text.strip()))


def word_count(text: str) -> int:
    return sum(1 for word in text.split() if speakable_chars(word))


@dataclass(frozen=True)
class SpeakingRate:
    chars_per_second: float  # while speaking (pauses excluded when learnt from words)
    pause_seconds: float  # added for each inner punctuation mark
    source: str  # "word timestamps" | "reference duration": logged

    def seconds_for(self, text: str, speed: float = 1.0) -> float:
        """Seconds to say ``text`` at this rate (``speed`` > 1 is faster), never under the word floor."""
        chars = speakable_chars(text)
        words = word_count(text)
        spoken = chars / self.chars_per_second + pause_count(text) * self.pause_seconds
        floor = MIN_WORD_SECONDS + MIN_EXTRA_WORD_SECONDS * max(words - 1, 0) if words else 0.0
        return max(spoken, floor) / speed

    def describe(self) -> str:
        return f"{self.chars_per_second:.1f} characters/s, {self.pause_seconds:.2f} s a pause ({self.source})"


def rate_from_duration(text: str, seconds: float) -> SpeakingRate:
    """The rate over the whole reference: its speakable characters over its length (edges trimmed).

    Without word timestamps the pauses cannot be told apart from speech, so they are part of
    the rate and add nothing on their own.
    """
    chars = max(speakable_chars(text), 1)
    return SpeakingRate(chars / max(seconds, 1e-3), 0.0, "reference duration")


@dataclass(frozen=True)
class TimedWord:
    text: str
    start: float
    end: float


def rate_from_words(words: Sequence[TimedWord], fallback: SpeakingRate) -> SpeakingRate:
    """The rate while speaking, from word timestamps; the pause after punctuated words, measured.

    ``fallback`` (from the duration) is returned when there are too few words to measure
    (fewer than 3 speakable words).
    """
    spoken = [w for w in words if speakable_chars(w.text) and w.end > w.start]
    if len(spoken) < 3:
        return fallback
    chars = sum(speakable_chars(w.text) for w in spoken)
    gaps = [(after.start - before.end, before.text) for before, after in zip(spoken, spoken[1:])]
    pauses = [max(gap, 0.0) for gap, text in gaps if re.search(r"[,;:.!?…，。！？；：]$", text)]
    # Time between words not at punctuation is part of speaking (Whisper's word ends are rough).
    speaking = sum(w.end - w.start for w in spoken) + sum(max(gap, 0.0) for gap, text in gaps
                                                          if not re.search(r"[,;:.!?…，。！？；：]$", text))
    pause = sum(pauses) / len(pauses) if pauses else DEFAULT_PAUSE_SECONDS
    return SpeakingRate(chars / max(speaking, 1e-3), pause, "word timestamps")


def upstream_generated_seconds(ref_seconds: float, ref_text: str, gen_text: str, speed: float = 1.0) -> float:
    """Upstream's rule, for comparison: the reference's seconds per UTF-8 byte times the text's bytes.

    ``ref_text`` as upstream passes it (ending ``". "``); texts under 10 bytes at ``speed=0.3``.
    """
    ref_bytes = max(1, len(ref_text.encode("utf-8")))
    gen_bytes = len(gen_text.encode("utf-8"))
    if gen_bytes < 10:
        speed = 0.3
    return ref_seconds / ref_bytes * gen_bytes / speed
