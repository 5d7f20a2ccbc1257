"""WER/CER normalisation as documented in f5app/speech/text.py, checked against a hand-written edit distance."""

from __future__ import annotations

import pytest

from eval_fixtures import edit_distance
from f5app.speech.text import integer_words, normalize, score


@pytest.mark.parametrize(
    ("reference", "hypothesis"),
    [
        ("the quick brown fox jumps over the lazy dog", "the quick brown box jumps over lazy dog dog"),
        ("some call me nature others call me mother nature", "some call me nature mother nature"),
        ("a b c d", "e f"),
    ],
)
def test_wer_and_cer_agree_with_an_independent_edit_distance(reference, hypothesis):
    result = score(reference, hypothesis)
    ref_words, hyp_words = reference.split(), hypothesis.split()
    assert result.wer == pytest.approx(edit_distance(ref_words, hyp_words) / len(ref_words))
    ref_chars, hyp_chars = list(reference.replace(" ", "")), list(hypothesis.replace(" ", ""))
    assert result.cer == pytest.approx(edit_distance(ref_chars, hyp_chars) / len(ref_chars))
    assert result.substitutions + result.deletions + result.insertions == edit_distance(ref_words, hyp_words)


def test_case_and_punctuation_do_not_count():
    assert score("Some call me nature, others call me mother nature.", "some call me Nature. Others call me MOTHER NATURE!").wer == 0.0


def test_numbers_are_written_out_in_english():
    assert normalize("6 spoons, 1,200 peas, 3.5 slabs, the 2nd and 21st") == (
        "six spoons one thousand two hundred peas three point five slabs the second and twenty first"
    )
    assert score("Six spoons of fresh snow peas", "6 spoons of fresh snow peas.", "en").wer == 0.0
    assert integer_words(1_002_030) == "one million two thousand thirty"


def test_other_languages_keep_their_digits():
    assert normalize("6 cuillères", "fr") == "6 cuillères"


def test_apostrophes_join_and_hyphens_split():
    assert normalize("Don't stop, mother-nature") == "dont stop mother nature"


def test_languages_without_spaces_count_characters():
    result = score("你好世界", "你好，世", "zh")
    assert result.wer == pytest.approx(0.25) and result.reference_words == 4


def test_empty_transcript_is_all_deletions_and_empty_reference_is_zero_or_one():
    assert score("two words", "").wer == 1.0
    assert score("", "").wer == 0.0
    assert score("...", "something").wer == 1.0
