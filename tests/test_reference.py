"""Reference preparation: a transcript for every reference, a cut at a word for long ones, and checks in numbers.

Built on f5-tts's human recordings, whose words are known (eval_fixtures.HUMAN_CLIPS), and the
bundled tiny.en, resemblyzer and DNSMOS models: every number asserted here is measured.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval_fixtures import HUMAN_CLIPS, example_path, tiny_en_transcriber
from f5app.audio.io import read_audio
from f5app.config import AsrConfig, ReferenceConfig, SpeakerConfig
from f5app.speech.text import score
from f5app.inference.reference import ReferencePreparer, ReferenceRefused, aligned_boundaries

pytestmark = pytest.mark.slow  # each test runs tiny.en, and most DNSMOS and resemblyzer, over seconds of speech

RATE = 24000
BASIC, TOWN, MAIN = "basic/basic_ref_en.wav", "multi/town.flac", "multi/main.flac"
TINY_EN = AsrConfig(name="tiny_en", language="en", beam_size=1, temperature_fallback=False)


@functools.cache
def preparer(check: bool = True) -> ReferencePreparer:
    return ReferencePreparer(ReferenceConfig(check=check), TINY_EN, SpeakerConfig(name="resemblyzer"))


def speech(name: str) -> np.ndarray:
    return read_audio(example_path(name), target_sr=RATE, mono=True)[0]


def joined(tmp_path: Path, *names: str, gap: float = 0.6) -> tuple[Path, str]:
    """Recordings one after another with ``gap`` s of silence between them, and what they say."""
    pause = np.zeros(int(gap * RATE), dtype=np.float32)
    pieces = [part for name in names for part in (speech(name), pause)][:-1]
    path = tmp_path / "joined.flac"
    sf.write(path, np.concatenate(pieces), RATE)
    return path, " ".join(HUMAN_CLIPS[name] for name in names)


def heard(wav: np.ndarray) -> str:
    return tiny_en_transcriber().transcribe(wav, RATE, language="en").text


def test_a_reference_without_a_transcript_is_transcribed_and_says_so():
    prepared = preparer(check=False).prepare(example_path(BASIC), None, RATE, 12.0)
    assert prepared.text_source == "transcribed"
    assert score(HUMAN_CLIPS[BASIC], prepared.reference.text, "en").wer == 0.0
    assert prepared.to_dict()["transcript"] == prepared.reference.text


def test_an_over_long_reference_is_cut_at_a_word_and_its_transcript_at_the_same_word(tmp_path):
    path, words = joined(tmp_path, TOWN, MAIN, BASIC)  # 23 s of three speakers: the cut is what is tested
    prepared = preparer(check=False).prepare(path, words, RATE, 12.0)

    kept = prepared.reference.text
    assert prepared.cut is not None and prepared.original_seconds > 20
    assert prepared.reference.seconds <= 12.1  # 12 s plus the 50 ms of silence appended for synthesis
    assert words.startswith(kept) and len(kept.split()) < len(words.split())
    assert prepared.cut["kept_words"] == len(kept.split())
    assert prepared.cut["kept_words"] + prepared.cut["dropped_words"] == len(words.split())
    # What the kept audio says is the kept transcript: heard again, word for word.
    again = score(kept, heard(prepared.reference.wav), "en")
    assert again.wer <= 0.1, (kept, again.hypothesis)


def test_a_long_reference_without_a_transcript_is_cut_and_keeps_the_words_of_the_kept_part(tmp_path):
    path, _ = joined(tmp_path, TOWN, TOWN, TOWN, TOWN)  # 40 s of one speaker, as in the 36 s upload
    prepared = preparer(check=False).prepare(path, None, RATE, 12.0)
    assert prepared.text_source == "transcribed" and prepared.reference.seconds <= 12.1
    assert score(HUMAN_CLIPS[TOWN], prepared.reference.text, "en").wer <= 0.1
    assert score(prepared.reference.text, heard(prepared.reference.wav), "en").wer <= 0.1


def test_a_long_reference_whose_transcript_matches_no_word_heard_is_refused(tmp_path):
    path, _ = joined(tmp_path, TOWN, MAIN)
    with pytest.raises(ReferenceRefused, match="cannot be matched") as refused:
        preparer(check=False).prepare(path, "Hello there, this sentence is not in the clip at all.", RATE, 12.0)
    assert "Hello there" in str(refused.value) and "rainbow" in str(refused.value)


def test_a_given_transcript_the_asr_disagrees_with_is_a_problem_naming_both_texts():
    wrong = "The quick brown fox jumps over the lazy dog."
    prepared = preparer().prepare(example_path(BASIC), wrong, RATE, 12.0)
    assert prepared.wer is not None and prepared.wer > 0.5
    [problem] = [p for p in prepared.problems if "ref_text" in p]
    assert wrong in problem and "mother nature" in problem.lower()


def test_a_clean_recording_with_its_transcript_passes_with_its_numbers():
    prepared = preparer().prepare(example_path(BASIC), HUMAN_CLIPS[BASIC], RATE, 12.0)
    assert prepared.problems == ()
    quality = prepared.quality
    assert quality["levels"]["clipped_fraction"] == 0.0 and -30 < quality["levels"]["rms_dbfs"] < -10
    assert 3.0 < quality["dnsmos"]["ovrl"] <= 5.0
    assert quality["speakers"]["spread"] < 0.27 and prepared.wer is not None and prepared.wer <= 0.1
    assert prepared.trimmed_seconds >= 0.0


def test_clipping_noise_and_a_second_speaker_are_each_named_with_their_number(tmp_path):
    basic = speech(BASIC)
    clipped = tmp_path / "clipped.wav"
    sf.write(clipped, np.clip(basic * 8.0, -1.0, 1.0), RATE, subtype="FLOAT")
    noisy = tmp_path / "noisy.wav"
    sf.write(noisy, basic + 0.08 * np.random.default_rng(0).standard_normal(len(basic)).astype(np.float32), RATE, subtype="FLOAT")
    two, words = joined(tmp_path, BASIC, TOWN)

    found = {
        "clipped": preparer().prepare(clipped, HUMAN_CLIPS[BASIC], RATE, 12.0).problems,
        "noisy": preparer().prepare(noisy, HUMAN_CLIPS[BASIC], RATE, 12.0).problems,
        "two": preparer().prepare(two, words, RATE, 30.0).problems,
    }
    assert any(p.startswith("clipped:") for p in found["clipped"]), found
    assert any("DNSMOS overall" in p for p in found["noisy"]), found
    assert any(p.startswith("more than one speaker") for p in found["two"]), found


def test_boundaries_align_words_that_normalise_to_several_tokens():
    text = "Six spoons of fresh snow peas, 5 thick slabs".split()
    heard_words = "6 spoons of fresh snow peas five thick slabs".split()
    boundaries = dict(aligned_boundaries(text, heard_words, "en"))
    assert boundaries[0] == 0 and boundaries[6] == 6  # "Six"/"6" and "5"/"five" line up
    assert boundaries[8] == 8
