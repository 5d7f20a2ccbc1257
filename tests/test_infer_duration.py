"""Duration that fits the text, and upstream's inference options users look for.

The speaking rate is learnt from f5-tts's human recordings (with the bundled tiny.en for word
timestamps); synthesis runs the tiny trained checkpoint.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from f5app.audio.io import read_audio
from f5app.audio.silence import remove_long_silences
from f5app.config import TextNormConfig
from f5app.inference.duration import (
    MIN_WORD_SECONDS,
    TimedWord,
    rate_from_duration,
    rate_from_words,
    speakable_chars,
    upstream_generated_seconds,
)
from f5app.inference.errors import InferenceInputError
from f5app.inference.reference import trim_silence_edges
from f5app.inference.synthesizer import Synthesizer
from f5app.text.normalise import build_normaliser
from eval_fixtures import tiny_en_transcriber
from infer_fixtures import UPSTREAM_REF_TEXT, upstream_ref_wav
from test_infer_synthesizer import infer_config, run_dir  # noqa: F401 (run_dir is a fixture)

SR = 24000
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_speech() -> np.ndarray:
    wav, _ = read_audio(upstream_ref_wav(), target_sr=SR)
    return trim_silence_edges(wav, SR)


# ---------------------------------------------------------------------- counting and the rate


def test_speakable_characters_are_letters_and_digits_in_any_script_not_bytes():
    assert speakable_chars("Olá, tudo bem?") == 10
    assert speakable_chars("ação") == 4 and len("ação".encode()) == 6
    assert speakable_chars("日本語です。") == 5
    assert speakable_chars(" ... !? ") == 0


def test_accented_text_gets_the_time_of_its_letters_where_upstream_counts_bytes():
    rate = rate_from_duration(UPSTREAM_REF_TEXT, len(reference_speech()) / SR)
    plain, accented = "a nacao inteira celebrou", "a nação inteira celebrou"
    assert rate.seconds_for(accented) == rate.seconds_for(plain)
    upstream = [upstream_generated_seconds(5.0, UPSTREAM_REF_TEXT + " ", text) for text in (plain, accented)]
    assert upstream[1] > upstream[0]


@pytest.mark.parametrize("word", ["Hi.", "Bob.", "Yes", "Ana", "Nguyen"])
def test_a_one_word_text_is_given_the_time_of_a_word(word):
    rate = rate_from_duration(UPSTREAM_REF_TEXT, len(reference_speech()) / SR)
    assert 0.4 <= rate.seconds_for(word) <= 1.0
    assert rate.seconds_for(word) >= MIN_WORD_SECONDS


def test_the_rate_from_word_timestamps_leaves_pauses_out_and_measures_them():
    speech = reference_speech()
    words = [TimedWord(w.text, w.start, w.end)
             for w in tiny_en_transcriber().transcribe(speech, SR, word_timestamps=True).words]
    by_duration = rate_from_duration(UPSTREAM_REF_TEXT, len(speech) / SR)
    by_words = rate_from_words(words, by_duration)
    assert by_words.source == "word timestamps"
    assert by_words.chars_per_second > by_duration.chars_per_second  # the pauses no longer count as speaking
    assert 0.05 < by_words.pause_seconds < 1.0
    # the reference's own transcript, at its learnt rate, lasts about as long as the reference
    assert by_words.seconds_for(UPSTREAM_REF_TEXT) == pytest.approx(len(speech) / SR, rel=0.2)


def test_too_few_timed_words_fall_back_to_the_duration_rate():
    fallback = rate_from_duration("Hello there", 1.0)
    assert rate_from_words([TimedWord("Hello", 0.0, 0.4)], fallback) is fallback


# ---------------------------------------------------------------------- synthesis


@pytest.fixture(scope="module")
def synth(run_dir) -> Synthesizer:
    return Synthesizer.from_config(infer_config(run_dir, text_norm=TextNormConfig(language="en")), run_dir)


def test_hi_comes_out_as_a_word_not_a_blip(synth):
    wav, sr = synth.synthesize("Hi.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0)
    assert len(wav) / sr >= 0.4


def test_the_model_is_given_the_normalised_text_and_the_result_says_it(synth):
    result = synth.generate("I have 3 cats and $5.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0)
    assert result.normalized_text == "I have three cats and five dollars."
    assert [text for _, text in result.chunks] == ["I have three cats and five dollars."]


def test_portuguese_text_is_said_in_portuguese_when_the_voice_is(synth):
    portuguese = replace(synth, normaliser=build_normaliser(TextNormConfig(language="pt-BR")), _voice_cache=OrderedDict())
    plan = portuguese.plan("Custa R$ 12,50 às 17:30.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0)
    assert plan.normalized_text == "Custa doze reais e cinquenta centavos às dezessete e trinta."


def test_fix_duration_is_the_total_with_the_reference_as_upstream(synth):
    plan = synth.plan("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT)
    reference_seconds = plan.chunks[0].voice.reference.seconds
    wav, sr = synth.synthesize("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=0, fix_duration=reference_seconds + 2.0)
    assert len(wav) / sr == pytest.approx(2.0, abs=2 * 256 / sr)
    with pytest.raises(InferenceInputError, match="not longer than the reference"):
        synth.plan("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT, fix_duration=reference_seconds - 1.0)


def test_save_chunks_writes_each_chunk_beside_the_output(run_dir, tmp_path):
    from f5app.infer import run

    text = " ".join(f"Sentence number {n} is here, and it goes on for a while." for n in range(1, 9))
    out = tmp_path / "story.wav"
    run(infer_config(run_dir, text=text, ref_audio=str(upstream_ref_wav()), ref_text=UPSTREAM_REF_TEXT, seed=0,
                     out=str(out), save_chunks=True, cross_fade=0.1))
    listing = json.loads((tmp_path / "story_chunks" / "chunks.json").read_text(encoding="utf-8"))
    assert len(listing) >= 2
    lengths = [sf.info(tmp_path / "story_chunks" / item["file"]).frames for item in listing]
    assert sf.info(out).frames == sum(lengths) - int(0.1 * SR) * (len(lengths) - 1)
    assert " ".join(item["text"] for item in listing).startswith("Sentence number one is here")
    (tmp_path / "other_chunks").mkdir()
    with pytest.raises(InferenceInputError, match="other_chunks.*already exists"):  # refused before the model loads
        run(infer_config(run_dir, text="Hi.", out=str(tmp_path / "other.wav"), save_chunks=True))


# ---------------------------------------------------------------------- remove_silence


def speech_with_gaps() -> np.ndarray:
    speech = reference_speech()[: 2 * SR]
    long_gap, short_gap = np.zeros(3 * SR, np.float32), np.zeros(SR // 2, np.float32)
    return np.concatenate([speech, long_gap, speech, short_gap, speech])


def test_remove_silence_shortens_silences_over_a_second_to_one_second():
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(SR) / SR)).astype(np.float32)
    wav = np.concatenate([tone, np.zeros(3 * SR, np.float32), tone, np.zeros(SR // 2, np.float32), tone])
    kept = remove_long_silences(wav, SR)
    # the 3 s gap becomes 1 s (half a second kept each side); the half-second gap stays
    assert len(kept) == len(wav) - 2 * SR
    assert np.abs(kept[: SR]).max() > 0.2 and np.abs(kept[SR + 100 : 2 * SR - 100]).max() < 1e-3


@pytest.mark.slow  # imports upstream's utils_infer (~8 s)
def test_remove_silence_gives_what_upstreams_remove_silence_for_generated_wav_gives(tmp_path):
    from f5_tts.infer.utils_infer import remove_silence_for_generated_wav

    wav = speech_with_gaps()
    path = tmp_path / "generated.wav"
    sf.write(path, wav, SR, subtype="PCM_16")
    remove_silence_for_generated_wav(str(path))
    upstream, _ = sf.read(path, dtype="float32")
    ours = remove_long_silences(wav, SR)
    assert len(ours) == len(upstream)
    assert np.abs(ours - upstream).max() < 2 / 32767
