"""Batched synthesis: the chunks of a long text (or of several requests) in one padded CFM.sample
call sound as they do one at a time, and streaming returns the same audio piece by piece."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from f5app.config import CkptConfig, InferConfig, VocoderConfig
from f5app.inference.chunking import CrossFadeStream, cross_fade
from f5app.inference.errors import InferenceInputError
from f5app.inference.synthesizer import Synthesizer, pick_max_batch
from infer_fixtures import UPSTREAM_REF_TEXT, tiny_model_config, tiny_run_checkpoint, upstream_ref_wav

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONG_TEXT = " ".join(f"Sentence number {word} is here, and it goes on for a while." for word in ("one", "two", "three", "four", "five", "six"))
# Batching changes only the order of float sums (padded rows, masked attention): the generated mels
# differ by ~2e-7 (float32 rounding). Without the attention mask, a prompt 175 frames shorter than
# its batch neighbour's moves by 5e-5 even in this tiny model: MEL_TOLERANCE sits between the two.
MEL_TOLERANCE = 1e-5
# Griffin-Lim's iterations grow the rounding to ~1e-4 in the wave (seen up to 1.5e-4, depending on
# the BLAS path); 1e-3 is -50 dB below the audio's ~0.3 peaks.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Synthesizer:
    run = tmp_path_factory.mktemp("runs") / "voice"
    tiny_run_checkpoint(run, update=2)
    cfg = InferConfig(
        run_name="voice", run_dir=str(run), model=tiny_model_config(), ckpt=CkptConfig(name="auto"),
        vocoder=VocoderConfig(name="griffinlim", n_iter=4), device="cpu", nfe_step=4, progress=False,
        dtype="fp32",  # the tolerances below are fp32 rounding (auto is bf16 on CPUs with native bf16)
    )
    return Synthesizer.from_config(cfg, run)


@pytest.fixture
def batch_size(synth):
    def _set(size: int) -> None:
        synth.max_batch = size

    before = synth.max_batch
    yield _set
    synth.max_batch = before


def speak(synth, text=LONG_TEXT, **kw):
    return synth.generate(text, upstream_ref_wav(), UPSTREAM_REF_TEXT, **kw)


def test_a_long_text_batched_sounds_as_one_chunk_at_a_time(synth, batch_size):
    batch_size(1)
    alone = speak(synth, seed=3)
    batch_size(4)
    batched = speak(synth, seed=3)
    assert len(alone.chunks) >= 2 and batched.chunks == alone.chunks
    assert batched.wav.shape == alone.wav.shape and batched.mel.shape == alone.mel.shape
    assert np.abs(batched.mel - alone.mel).max() < MEL_TOLERANCE
    assert np.abs(batched.wav - alone.wav).max() < TOLERANCE
    assert np.abs(alone.wav).max() > 100 * TOLERANCE  # the comparison is not between silences


def test_batched_chunks_keep_their_own_seeds(synth, batch_size):
    """Upstream seeds every row of a batch alike; each chunk must still get seed + its index."""
    batch_size(4)
    plan = synth.plan("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=5)
    same_text = [plan.chunks[0]] * 3
    waves = [r.wave for r in synth.render(same_text)]
    assert all(np.array_equal(waves[0], w) for w in waves[1:])  # same chunk, same seed: same audio
    other = synth.plan("Hello there.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=6).chunks[0]
    first, second = synth.render([plan.chunks[0], other])
    assert np.abs(first.wave - waves[0]).max() < TOLERANCE
    assert np.abs(second.wave - synth.render([other])[0].wave).max() < TOLERANCE
    assert len(first.wave) == len(second.wave) and np.abs(first.wave - second.wave).max() > 100 * TOLERANCE


def test_requests_in_different_voices_and_settings_share_one_render_call(synth, batch_size, tmp_path):
    town = tmp_path / "town.wav"
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    sf.write(town, wav[: sr * 3] * 0.05, sr)  # shorter and quieter: another prompt length and RMS scaling
    requests = [
        synth.plan("Good day to you, my friend.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=1),
        synth.plan("Good day to you, my friend.", town, "Some call me nature.", seed=2),
        synth.plan("Bye for now.", upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=3, nfe_step=2),
    ]
    chunks = [chunk for plan in requests for chunk in plan.chunks]
    batch_size(1)
    alone = synth.render(chunks)
    batch_size(8)
    together = synth.render(chunks)
    for a, b in zip(alone, together):
        assert a.wave.shape == b.wave.shape and np.abs(a.wave - b.wave).max() < TOLERANCE
        assert np.abs(a.mel - b.mel).max() < MEL_TOLERANCE  # the shorter prompt's padding is masked out


def test_stream_pieces_join_into_the_generated_audio_and_start_with_a_short_chunk(synth, batch_size):
    batch_size(4)
    text = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. It is easy to tell the depth of a well."
    pieces = list(synth.stream(text, upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=9))
    plan = synth.plan(text, upstream_ref_wav(), UPSTREAM_REF_TEXT, seed=9, first_chunk_small=True)
    whole = plan.assemble(synth.render(plan.chunks), synth.sample_rate).wav
    assert len(speak(synth, text, seed=9).chunks) == 1  # without streaming, the three sentences are one chunk
    assert [c.text for c in plan.chunks][0] == "The birch canoe slid on the smooth planks."
    assert len(plan.chunks) == 2
    assert np.abs(np.concatenate(pieces) - whole).max() < TOLERANCE
    assert len(pieces[0]) > 0 and len(pieces[0]) < len(whole) / 2


@pytest.mark.parametrize("lengths", [[1000, 800, 1200], [1000, 50, 1200], [30], [30, 20, 2000]])
def test_cross_fade_stream_returns_exactly_what_cross_fade_returns(lengths):
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in lengths]
    stream = CrossFadeStream(sample_rate=1000, seconds=0.1)
    pieces = [stream.push(w) for w in waves] + [stream.finish()]
    assert np.array_equal(np.concatenate(pieces), cross_fade(waves, 1000, 0.1))


def test_auto_batch_size_depends_on_the_device_and_a_negative_one_is_refused():
    assert pick_max_batch(0, "cuda:1") == 8 and pick_max_batch(0, "cpu") == 1 and pick_max_batch(3, "cpu") == 3
    with pytest.raises(InferenceInputError, match="max_batch=-1"):
        pick_max_batch(-1, "cpu")
