"""verify=asr: every chunk transcribed and compared with its text and voice; a miss is drawn again.

The "model" here is a generator of human recordings: for some seeds it returns the recording of
the chunk's words in the reference's voice, for others damaged audio (silence, the words cut
short, the words in another voice, another speaker saying something else). The ASR (tiny.en)
and the speaker model (resemblyzer) are the real ones, so the scores are measured, not made up.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from eval_fixtures import HUMAN_CLIPS, example_path, resemblyzer_embedder, tiny_en_transcriber
from f5app.audio.io import read_audio, resample
from f5app.config import VerifyConfig
from f5app.evaluation.evaluator import Evaluator
from f5app.inference.duration import rate_from_duration
from f5app.inference.reference import default_preparer
from f5app.inference.synthesizer import ChunkJob, RenderedChunk, SamplingSettings, _Voice
from f5app.inference.verify import ChunkVerifier

pytestmark = pytest.mark.slow  # real ASR and speaker embeddings over several clips

RATE = 24000
BASIC = "basic/basic_ref_en.wav"
WORDS = HUMAN_CLIPS[BASIC]
SEED = 100


@functools.cache
def recording(name: str) -> np.ndarray:
    return read_audio(example_path(name), target_sr=RATE, mono=True)[0]


def made_by_seed(seed: int) -> np.ndarray:
    """What the pretend model says for ``seed``: only SEED + 4 is the chunk, whole, in the reference's voice."""
    basic = recording(BASIC)
    return {
        SEED: recording("multi/town.flac"),  # another speaker, other words
        SEED + 1: np.zeros(RATE * 2, dtype=np.float32),  # silence
        SEED + 2: basic[: int(len(basic) * 0.45)],  # the words cut short
        SEED + 3: resample(basic, int(RATE * 1.3), RATE),  # the right words in a higher, faster voice
        SEED + 4: basic,
    }[seed]


def rendered(seed: int) -> RenderedChunk:
    return RenderedChunk(made_by_seed(seed), np.zeros((100, 1), dtype=np.float32))


def chunk(seed: int = SEED) -> ChunkJob:
    prepared = default_preparer().prepare(example_path(BASIC), WORDS, RATE)
    rate = rate_from_duration(prepared.reference.text, prepared.reference.seconds)
    voice = _Voice(prepared=prepared, tokens=list(WORDS), rms=0.1, rate=rate)
    return ChunkJob("main", voice, WORDS, SamplingSettings(), seed)


def verifier(**settings) -> ChunkVerifier:
    return ChunkVerifier(VerifyConfig(name="asr", **settings), Evaluator(tiny_en_transcriber(), resemblyzer_embedder(), "en"))


def check(v: ChunkVerifier):
    drawn: list[int] = []

    def render_one(job: ChunkJob) -> RenderedChunk:
        drawn.append(job.seed)
        return rendered(job.seed)

    kept = v.check(chunk(), rendered(SEED), render_one, RATE)
    return kept, drawn


def test_a_chunk_is_drawn_again_until_a_try_says_its_words_in_the_reference_voice():
    kept, drawn = check(verifier(max_wer=0.2, min_sim=0.8, max_tries=6))
    draws = kept.verification
    assert drawn == [SEED + 1, SEED + 2, SEED + 3, SEED + 4]  # stops at the first try that passes
    assert [t.seed for t in draws.tries] == [SEED, SEED + 1, SEED + 2, SEED + 3, SEED + 4]
    assert draws.kept_try.seed == SEED + 4 and draws.passed is True
    assert np.array_equal(kept.wave, made_by_seed(SEED + 4))
    town, silent, cut, other_voice, right = draws.tries
    assert town.wer > 0.8 and silent.wer == 1.0 and silent.sim == 0.0
    assert 0.3 < cut.wer < 1.0  # part of the words
    assert other_voice.wer <= 0.1 and other_voice.sim < 0.8  # the words, but not the voice
    assert right.wer <= 0.1 and right.sim > 0.95
    assert "mother nature" in right.transcript.lower()


def test_when_no_try_passes_the_best_one_is_kept_and_marked():
    kept, drawn = check(verifier(max_wer=0.2, min_sim=0.8, max_tries=3))
    draws = kept.verification
    assert drawn == [SEED + 1, SEED + 2] and draws.passed is False
    assert draws.kept_try.seed == SEED + 2  # the cut words beat silence and another text
    assert np.array_equal(kept.wave, made_by_seed(SEED + 2))
    record = draws.to_dict()
    assert record["kept_seed"] == SEED + 2 and len(record["tries"]) == 3 and record["passed"] is False


def test_a_first_try_that_passes_is_not_drawn_again():
    v = verifier(max_wer=0.2, min_sim=0.0, max_tries=3)
    kept = v.check(chunk(SEED + 4), rendered(SEED + 4), lambda job: pytest.fail("drew again"), RATE)
    assert [t.seed for t in kept.verification.tries] == [SEED + 4]
