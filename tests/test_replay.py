"""data.replay, as a user fine-tuning into a new language uses it: further sets (here the bundled
English demo set, and f5-tts's own English recordings) take their share of every training batch,
drawn the same way on every run with one seed, resumed exactly, their words in the vocabulary."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from f5app.config import ASSETS_DIR, ReplayConfig, TextNormConfig, TrainConfig, to_settings
from f5app.data.dataset import load_splits
from f5app.data.mixing import MixedBatches, with_replay
from f5app.data.replay import check_replay, prepare_replay
from f5app.data.sources import prepare_data
from f5app.data.tokenizer import extend_vocab
from f5app.data.vocab import read_vocab
from f5app.errors import UserError
from tests.train_fixtures import make_english_folder, make_voice_folder, tiny_overrides, train_in_process


@pytest.fixture(scope="module")
def voice(tmp_path_factory):
    return make_voice_folder(tmp_path_factory.mktemp("new_language"), count=8)


@pytest.fixture(scope="module")
def english(tmp_path_factory):
    return make_english_folder(tmp_path_factory.mktemp("base_language"))


def replay_override(*entries: str) -> dict[str, str]:
    return {"data.replay": "[" + ", ".join(entries) + "]"}


def demo_replay(tmp_path: Path, share: float) -> str:
    """The bundled demo set (40 English utterances) as a replay entry, prepared outside the package."""
    return f"{{path: {ASSETS_DIR / 'demo'}, share: {share}, prepared_dir: {tmp_path / 'demo_prepared'}}}"


def training_batches(compose_cfg, overrides: list[str]):
    """The training set and batches exactly as the trainer builds them from these overrides."""
    settings = to_settings(compose_cfg("train", overrides), TrainConfig)
    d = settings.data
    main = prepare_data(d, progress=False)
    train, _ = load_splits(main, settings.model.mel, d.val_fraction, d.val_min_items, d.seed)
    return with_replay(train, prepare_replay(d, settings.text_norm, progress=False), d.replay, settings.model.mel, d)


# ------------------------------------------------------------------------------ refused settings


@pytest.mark.parametrize("entries, key", [
    ([ReplayConfig(path=None)], "data.replay[0].path is missing"),
    ([ReplayConfig(path="/en", share=0.0)], "data.replay[0].share=0.0 must be in (0, 0.9]"),
    ([ReplayConfig(path="/en", share=0.2), ReplayConfig(path="/fr", share=0.95)], "data.replay[1].share=0.95 must be in (0, 0.9]"),
    ([ReplayConfig(path="/en", share=0.6), ReplayConfig(path="/fr", share=0.4)], "data.replay shares add up to 1 (0.6 + 0.4)"),
])
def test_a_replay_list_that_cannot_work_is_refused_in_one_line_naming_the_key(entries, key):
    with pytest.raises(UserError) as refused:
        check_replay(entries)
    assert str(refused.value).startswith(key) and "\n" not in str(refused.value)


def test_training_refuses_a_bad_share_before_it_prepares_anything(compose_cfg, voice, tmp_path):
    overrides = tiny_overrides(voice, **replay_override(f"{{path: {tmp_path}, share: 1.5}}"))
    with pytest.raises(UserError, match=r"^data\.replay\[0\]\.share=1\.5 must be in \(0, 0\.9\]"):
        train_in_process(compose_cfg, tmp_path / "run", overrides)
    assert not (voice.parent / "prepared").exists()


def test_a_replay_folder_without_metadata_is_named_by_its_key(compose_cfg, voice, tmp_path):
    settings = to_settings(compose_cfg("train", tiny_overrides(voice, **replay_override(f"{{path: {tmp_path / 'nowhere'}}}"))), TrainConfig)
    with pytest.raises(UserError, match=r"^data\.replay\[0\]\.path=.*nowhere: .*not a folder"):
        prepare_replay(settings.data, TextNormConfig(), progress=False)


# ------------------------------------------------------------------------------ what the batches hold


def test_every_batch_gives_the_replay_set_its_share_of_frames(compose_cfg, tmp_path):
    many = make_voice_folder(tmp_path, count=60)
    overrides = tiny_overrides(many, **{"data.frames_per_gpu": 3000, "data.max_samples": 64, **replay_override(demo_replay(tmp_path, 0.25))})
    train, batches = training_batches(compose_cfg, overrides)
    assert isinstance(batches, MixedBatches)

    longest_replay_clip = max(train.frame_len(i) for i in range(batches.starts[1], batches.starts[2]))
    shares, replay_clips = [], set()
    for epoch in range(12):
        for batch in batches.for_epoch(epoch):
            replayed = [i for i in batch if batches.source_of(i) == 1]
            assert replayed and len(replayed) < len(batch), "every batch holds both sets"
            replay_frames = sum(train.frame_len(i) for i in replayed)
            main_frames = sum(train.frame_len(i) for i in batch) - replay_frames
            assert abs(replay_frames - main_frames * 0.25 / 0.75) <= longest_replay_clip, "each batch is within a clip of its share"
            shares.append(replay_frames / (replay_frames + main_frames))
            replay_clips.update(replayed)
    assert statistics.mean(shares) == pytest.approx(0.25, abs=0.02)
    assert max(sum(train.frame_len(i) for i in b) for b in batches.for_epoch(0)) <= 3000 + 200, "the frame budget still bounds a batch"
    assert len(replay_clips) == 40, "a few epochs walk through all 40 demo clips"


def test_one_seed_draws_the_same_batches_on_every_run_and_another_seed_does_not(compose_cfg, tmp_path):
    many = make_voice_folder(tmp_path, count=30)
    base = {"data.frames_per_gpu": 2000, **replay_override(demo_replay(tmp_path, 0.3))}
    first = training_batches(compose_cfg, tiny_overrides(many, **base))[1]
    again = training_batches(compose_cfg, tiny_overrides(many, **base))[1]
    other = training_batches(compose_cfg, tiny_overrides(many, **{**base, "data.seed": 1}))[1]
    epochs = range(4)
    assert [first.for_epoch(e) for e in epochs] == [again.for_epoch(e) for e in epochs]
    replayed = lambda batches: [[i for i in b if batches.source_of(i)] for e in epochs for b in batches.for_epoch(e)]  # noqa: E731
    assert replayed(first) != replayed(other)


def test_a_replay_pass_walks_through_the_whole_set_before_repeating_a_clip():
    replay_lens = [50 + 7 * i for i in range(20)]
    batches = MixedBatches([80] * 10, [(replay_lens, 0.5)], frames_per_batch=200, max_samples=0, seed=3)
    stream = [i for e in range(6) for b in batches.for_epoch(e) for i in b if batches.source_of(i)]
    assert sorted(stream[:20]) == list(range(10, 30)), "the first pass draws every replay clip once"
    assert sorted(stream[20:40]) == list(range(10, 30)) and stream[20:40] != stream[:20], "the next pass too, in another order"
    drawn = sum(replay_lens[i - 10] for i in stream)
    assert drawn / (drawn + 6 * 10 * 80) == pytest.approx(0.5, abs=0.01), "over a run the share is exact to a fraction of a clip"


# ------------------------------------------------------------------------------ training with replay


@pytest.mark.slow
def test_the_vocabulary_is_the_union_and_replay_runs_with_one_seed_learn_the_same(compose_cfg, voice, english, tmp_path):
    overrides = tiny_overrides(voice, **{"trainer.max_updates": 2, "trainer.save_every": 2, "data.frames_per_gpu": 2400,
                                         **replay_override(f"{{path: {english}, share: 0.4}}")})
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        train_in_process(compose_cfg, run, overrides)

    main_vocab = read_vocab(voice.parent / "prepared" / "vocab.txt")
    english_vocab = read_vocab(english / ".f5app_prepared" / "vocab.txt")
    vocab = read_vocab(runs[0] / "checkpoints" / "update_00000002" / "vocab.txt")
    assert vocab == extend_vocab(main_vocab, english_vocab)[0]
    assert {"S", "6", ","} <= set(vocab) - set(main_vocab), "the English set's capitals, digits and commas are learned tokens"

    a, b = (torch.load(run / "checkpoints" / "update_00000002" / "model.pt", weights_only=True)["model_state_dict"] for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_with_a_replay_set_matches_an_uninterrupted_run(compose_cfg, voice, english, tmp_path):
    # The 6 training clips make one main batch per epoch; the three English recordings (5-10 s) join
    # most batches: six updates cross five epochs and a replay pass, interrupted at 2 and 4.
    common = {"trainer.save_every": 2, "trainer.val_every": 2, "ckpt.keep_last": 10, "data.frames_per_gpu": 2400, "data.max_samples": 16,
              **replay_override(f"{{path: {english}, share: 0.5}}")}
    straight = tmp_path / "straight"
    train_in_process(compose_cfg, straight, tiny_overrides(voice, **{"trainer.max_updates": 6, **common}))
    interrupted = tmp_path / "interrupted"
    for bound in (2, 4, 6):
        train_in_process(compose_cfg, interrupted, tiny_overrides(voice, **{"trainer.max_updates": bound, **common}))

    a, b = (torch.load(run / "checkpoints" / "update_00000006" / "model.pt", weights_only=True) for run in (straight, interrupted))
    for key in ("model_state_dict", "ema_model_state_dict"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs after resume"
    states = [torch.load(run / "checkpoints" / "update_00000006" / "training_state.pt", weights_only=True) for run in (straight, interrupted)]
    assert states[0]["samples_seen"] == states[1]["samples_seen"]
    assert states[0]["samples_seen"] > 6 * 6 + 3, "six epochs of the main set and more than a pass of the English set"
