"""The training-side data contract: seeded split, mel items, frame batching that drops nothing, collate."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from f5app.config import DataConfig, MelConfig
from f5app.data.dataset import FrameBatches, collate, load_splits
from f5app.data.prepare import PreparedData, prepare
from f5app.data.vocab import vocab_map

MEL = MelConfig()  # upstream's 24 kHz, 100 mels, hop 256


def write_tone(path: Path, seconds: float, sample_rate: int = 24000, channels: int = 1, frequency: float = 220.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = 0.2 * np.sin(2 * np.pi * frequency * np.arange(int(seconds * sample_rate)) / sample_rate)
    if channels == 2:
        samples = np.stack([samples, samples], axis=1)
    sf.write(str(path), samples.astype(np.float32), sample_rate)
    return path


def prepared_set(folder: Path, clips: dict[str, tuple[float, int, int]]) -> PreparedData:
    """clips: file name -> (seconds, sample rate, channels); transcripts are 'clip <name>'."""
    lines = ["audio_file|text"]
    for name, (seconds, rate, channels) in clips.items():
        write_tone(folder / "wavs" / name, seconds, rate, channels)
        lines.append(f"wavs/{name}|clip {name}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return prepare(DataConfig(path=str(folder)), progress=False)


def uniform_set(folder: Path, count: int) -> PreparedData:
    return prepared_set(folder, {f"c{i:02d}.wav": (0.4 + 0.01 * i, 8000, 1) for i in range(count)})


def audio_names(dataset) -> list[str]:
    return [Path(clip.audio_path).name for clip in dataset.clips]


# --- split -----------------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_complete_and_recorded(tmp_path):
    prepared = uniform_set(tmp_path, 20)

    train, val = load_splits(prepared, MEL, val_fraction=0.2, val_min_items=1, seed=3)
    again_train, again_val = load_splits(prepared, MEL, val_fraction=0.2, val_min_items=1, seed=3)
    other_train, other_val = load_splits(prepared, MEL, val_fraction=0.2, val_min_items=1, seed=4)

    assert len(val) == 4 and len(train) == 16
    assert audio_names(again_val) == audio_names(val) and audio_names(again_train) == audio_names(train)
    assert set(audio_names(train)).isdisjoint(audio_names(val))
    assert set(audio_names(train)) | set(audio_names(val)) == {f"c{i:02d}.wav" for i in range(20)}
    assert set(audio_names(other_val)) != set(audio_names(val))
    split = json.loads((prepared.dir / "split.json").read_text(encoding="utf-8"))
    assert split["seed"] == 4
    assert [Path(path).name for path in split["val_audio"]] == audio_names(other_val)
    assert len(split["train"]) == 16 and len(split["val"]) == 4


def test_validation_gets_at_least_val_min_items_and_training_keeps_one(tmp_path):
    prepared = uniform_set(tmp_path, 5)

    train, val = load_splits(prepared, MEL, val_fraction=0.0, val_min_items=2, seed=0)
    assert (len(train), len(val)) == (3, 2)

    with pytest.warns(UserWarning, match="training keeps one"):
        train, val = load_splits(prepared, MEL, val_fraction=0.5, val_min_items=9, seed=0)
    assert (len(train), len(val)) == (1, 4)


def test_a_single_clip_serves_as_both_training_and_validation_with_a_warning(tmp_path):
    prepared = uniform_set(tmp_path, 1)

    with pytest.warns(UserWarning, match="single clip"):
        train, val = load_splits(prepared, MEL, val_fraction=0.1, val_min_items=1, seed=0)

    assert audio_names(train) == audio_names(val) == ["c00.wav"]


def test_split_rejects_a_val_fraction_outside_zero_to_one(tmp_path):
    prepared = uniform_set(tmp_path, 3)
    with pytest.raises(ValueError, match="val_fraction"):
        load_splits(prepared, MEL, val_fraction=1.0, val_min_items=1, seed=0)


# --- items -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_items_are_mels_whose_length_frame_len_predicts_for_any_rate_and_channel_count(tmp_path):
    clips = {
        "a.wav": (0.5, 24000, 1),
        "b.wav": (0.61, 16000, 2),
        "c.flac": (0.73, 44100, 1),
        "d.ogg": (0.5, 22050, 2),
    }
    prepared = prepared_set(tmp_path, clips)
    train, val = load_splits(prepared, MEL, val_fraction=0.0, val_min_items=0, seed=0)
    assert len(val) == 0 and len(train) == 4

    for index in range(len(train)):
        item = train[index]
        assert item["mel"].dtype == torch.float32
        assert item["mel"].shape == (MEL.n_mel_channels, train.frame_len(index))
        assert torch.isfinite(item["mel"]).all()
        assert "".join(item["text"]) == f"clip {audio_names(train)[index]}"


def test_stereo_audio_is_mixed_to_mono_before_the_mel(tmp_path):
    write_tone(tmp_path / "wavs" / "mono.wav", 0.5, 16000, channels=1, frequency=300)
    write_tone(tmp_path / "wavs" / "stereo.wav", 0.5, 16000, channels=2, frequency=300)
    (tmp_path / "metadata.csv").write_text("audio_file|text\nwavs/mono.wav|one\nwavs/stereo.wav|two\n", encoding="utf-8")
    prepared = prepare(DataConfig(path=str(tmp_path)), progress=False)

    train, _ = load_splits(prepared, MEL, val_fraction=0.0, val_min_items=0, seed=0)

    mono, stereo = (train[audio_names(train).index(name)]["mel"] for name in ("mono.wav", "stereo.wav"))
    torch.testing.assert_close(mono, stereo)


# --- frame batching --------------------------------------------------------------------------


def test_frame_batches_hold_every_clip_exactly_once_within_the_budget():
    lengths = [random.Random(i).randint(10, 300) for i in range(200)]

    batches = FrameBatches(lengths, frames_per_batch=1000, max_samples=8, seed=0).for_epoch(0)

    assert sorted(index for batch in batches for index in batch) == list(range(200))
    assert all(sum(lengths[i] for i in batch) <= 1000 for batch in batches)
    assert all(len(batch) <= 8 for batch in batches)


def test_frame_batches_are_deterministic_per_epoch_and_reshuffled_across_epochs():
    lengths = [random.Random(i).randint(10, 300) for i in range(100)]

    first = FrameBatches(lengths, 600, 0, seed=5)
    second = FrameBatches(lengths, 600, 0, seed=5)

    assert first.for_epoch(0) == second.for_epoch(0)
    assert first.for_epoch(3) == second.for_epoch(3)
    assert first.for_epoch(0) != first.for_epoch(1)
    assert sorted(map(tuple, first.for_epoch(0))) == sorted(map(tuple, first.for_epoch(1)))
    assert FrameBatches(lengths, 600, 0, seed=6).for_epoch(0) != first.for_epoch(0)


def test_a_clip_longer_than_the_budget_becomes_its_own_batch_with_one_warning():
    lengths = [100, 5000, 120, 7000, 90]

    with pytest.warns(UserWarning, match="2 clip") as caught:
        batches = FrameBatches(lengths, frames_per_batch=1000, max_samples=0, seed=0)

    assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1
    assert sorted(map(sorted, batches.for_epoch(0))) == [[0, 2, 4], [1], [3]]


def test_a_data_set_smaller_than_one_batch_yields_exactly_one_batch():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = FrameBatches([50, 70], frames_per_batch=38400, max_samples=64, seed=0)

    assert len(batches) == 1
    assert [sorted(batch) for batch in batches.for_epoch(0)] == [[0, 1]]
    assert [sorted(batch) for batch in batches.for_epoch(9)] == [[0, 1]]


def test_frame_batches_reject_an_empty_set_and_a_non_positive_budget():
    with pytest.raises(ValueError, match="empty"):
        FrameBatches([], 100, 0, seed=0)
    with pytest.raises(ValueError, match="frames_per_gpu"):
        FrameBatches([10], 0, 0, seed=0)


# --- collate ---------------------------------------------------------------------------------


def test_collate_pads_mels_with_zeros_and_token_ids_with_minus_one():
    vocab = [" ", "a", "b"]
    short = {"mel": torch.ones(4, 3), "text": ["a", "b"]}
    long = {"mel": torch.full((4, 5), 2.0), "text": ["b", " ", "a", "?"]}  # "?" is not in the vocab

    batch = collate([short, long], vocab_map(vocab))

    assert batch["mel"].shape == (2, 5, 4) and batch["mel"].dtype == torch.float32
    torch.testing.assert_close(batch["mel"][0, :3], torch.ones(3, 4))
    torch.testing.assert_close(batch["mel"][0, 3:], torch.zeros(2, 4))
    torch.testing.assert_close(batch["mel"][1], torch.full((5, 4), 2.0))
    assert batch["mel_lengths"].tolist() == [3, 5] and batch["mel_lengths"].dtype == torch.long
    assert batch["text"].tolist() == [[1, 2, -1, -1], [2, 0, 1, 0]]
    assert batch["text"].dtype == torch.long


def test_collate_of_real_items_matches_their_frame_lengths(tmp_path):
    prepared = prepared_set(tmp_path, {"a.wav": (0.4, 16000, 1), "b.wav": (0.9, 16000, 1)})
    train, _ = load_splits(prepared, MEL, val_fraction=0.0, val_min_items=0, seed=0)

    batch = collate([train[0], train[1]], vocab_map(prepared.vocab))

    assert batch["mel_lengths"].tolist() == [train.frame_len(0), train.frame_len(1)]
    assert batch["mel"].shape == (2, max(batch["mel_lengths"].tolist()), MEL.n_mel_channels)
    assert (batch["text"] >= 0).sum(dim=1).tolist() == [len(train.clips[0].text), len(train.clips[1].text)]


def test_clips_that_share_audio_go_wholly_to_one_side_of_the_split(tmp_path):
    from f5app.data.dataset import record_split
    from f5app.data.split_groups import write_groups

    prepared = uniform_set(tmp_path, 20)
    groups = [["wavs/c00.wav", "wavs/c01.wav"], ["wavs/c02.wav", "wavs/c03.wav", "wavs/c04.wav"], ["wavs/c05.wav", "wavs/c06.wav"]]

    def sides(seed: int) -> list[set[str]]:
        clips, train, val = record_split(prepared, 0.25, 1, seed)
        train_names, val_names = {Path(clips[i].audio_path).name for i in train}, {Path(clips[i].audio_path).name for i in val}
        assert train_names.isdisjoint(val_names) and len(train_names | val_names) == 20 and 1 <= len(val_names) <= 5
        return [{Path(name).name for name in group} for group in groups], val_names

    def split_groups(seed: int) -> int:
        members, val_names = sides(seed)
        return sum(1 for group in members if 0 < len(group & val_names) < len(group))

    without = [split_groups(seed) for seed in range(20)]
    write_groups(tmp_path, groups)
    with_groups = [split_groups(seed) for seed in range(20)]
    held_out_whole = sum(1 for seed in range(20) for group in sides(seed)[0] if group <= sides(seed)[1])

    assert sum(without) > 0  # a plain split does separate copies of the same audio
    assert with_groups == [0] * 20
    assert held_out_whole > 0  # a group can be held out, as a whole
