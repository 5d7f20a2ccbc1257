"""Text before synthesis: voice tags, sentence chunks sized like upstream's, vocabulary checks, cross-fade."""

from __future__ import annotations

import numpy as np
import pytest

from f5app.inference.chunking import cross_fade
from f5app.inference.errors import InferenceInputError
from f5app.inference.text import (
    VoiceSegment,
    apply_unknown_policy,
    chunk_text,
    max_chunk_bytes,
    normalize_ref_text,
    split_voices,
)

STORY = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background! "
    "It is easy to tell the depth of a well? These days a chicken leg is a rare dish, "
    "rice is often served in round bowls; the juice of lemons makes fine punch."
)


def test_chunks_keep_every_word_in_order_and_respect_the_byte_budget():
    chunks = chunk_text(STORY, max_bytes=60)
    assert len(chunks) > 2
    assert " ".join(chunks).split() == STORY.split()
    assert all(len(c.encode("utf-8")) <= 60 for c in chunks)
    assert all(c[-1] in ".!?;," for c in chunks[:-1])  # cut after punctuation, never mid-sentence


def test_a_sentence_longer_than_the_budget_stays_whole():
    sentence = "A very long sentence without any punctuation that goes on and on"
    assert chunk_text(sentence, max_bytes=10) == [sentence]


def test_cjk_punctuation_splits_without_spaces():
    assert chunk_text("你好。今天天气很好！", max_bytes=10) == ["你好。", "今天天气很好！"]


def test_chunk_budget_follows_the_reference_pace_and_speed():
    # 50 bytes in 5 s of reference = 10 bytes/s; (22 - 5) s left -> 170 bytes at speed 1.
    text = "x" * 50
    assert max_chunk_bytes(text, 5.0, speed=1.0) == 170
    assert max_chunk_bytes(text, 5.0, speed=0.5) == 85


def test_voice_tags_split_text_and_untagged_text_is_the_main_voice():
    segments = split_voices("Hello there. [town] Good day!  [main] Bye. [town]", {"main", "town"})
    assert segments == [
        VoiceSegment("main", "Hello there."),
        VoiceSegment("town", "Good day!"),
        VoiceSegment("main", "Bye."),
    ]


def test_unknown_voice_tag_is_an_error_naming_the_fix():
    with pytest.raises(InferenceInputError, match=r"voice \[country\].*voices.country.ref_audio"):
        split_voices("[country] Howdy.", {"main"})


def test_unknown_characters_are_listed_then_dropped_or_refused():
    vocab = {c: i for i, c in enumerate(" abc.")}
    tokens, missing = apply_unknown_policy(list("ab€c ñ."), vocab, "drop", "text")
    assert tokens == list("abc .") and missing == ["€", "ñ"]
    with pytest.raises(InferenceInputError, match=r"'€' 'ñ'.*unknown_chars=drop"):
        apply_unknown_policy(list("ab€c ñ."), vocab, "error", "text")


@pytest.mark.parametrize(
    ("given", "expected"),
    [("Hello there", "Hello there. "), ("Hello there.", "Hello there. "), ("  Hi!  ", "Hi!. "), ("你好。", "你好。")],
)
def test_reference_text_ends_with_sentence_punctuation_like_upstream(given, expected):
    assert normalize_ref_text(given) == expected


def test_cross_fade_overlaps_neighbours_by_the_requested_time():
    a, b = np.ones(1000, dtype=np.float32), np.full(800, 3.0, dtype=np.float32)
    joined = cross_fade([a, b], sample_rate=1000, seconds=0.1)
    assert len(joined) == 1000 + 800 - 100
    assert joined[0] == 1.0 and joined[-1] == 3.0
    overlap = joined[900:1000]
    assert np.all(np.diff(overlap) > 0) and 1.0 <= overlap.min() and overlap.max() <= 3.0


def test_cross_fade_shrinks_to_short_chunks_and_zero_means_concatenate():
    short = np.ones(30, dtype=np.float32)
    assert len(cross_fade([short, short], 1000, seconds=0.1)) == 30
    assert len(cross_fade([short, short], 1000, seconds=0.0)) == 60
