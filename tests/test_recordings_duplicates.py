"""Duplicates and leaks in data=recordings: clips that hold the same audio are found and flagged,
never split between training and held-out, a file that stops mid-sentence is flagged, and each
clip's DNSMOS is shown with a floor.

The issue's case, as a new user met it: a folder in which one recording is the first half of
another, made from f5-tts's shipped recordings, prepared with data=recordings and asr=tiny_en.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval_fixtures import example_path
from f5app.audio.io import read_audio
from f5app.data.recordings import duplicates, example
from f5app.data.recordings.pipeline import prepare_recordings
from f5app.data.metadata import read_metadata
from test_recordings import compose_cfg_module, recordings_config  # noqa: F401 (a fixture)

RATE = 24000
LAYOUT = [("silence", 1.0), ("speech", "nature"), ("silence", 1.5), ("speech", "stella"), ("silence", 1.5),
          ("speech", "rainbow"), ("silence", 1.0)]


def shipped(name: str) -> np.ndarray:
    return read_audio(example_path(name), target_sr=RATE, mono=True)[0]


# ----------------------------------------------------------------------------- the fingerprint


def test_the_same_audio_matches_at_another_level_with_noise_and_inside_a_longer_clip():
    town = shipped("multi/town.flac")
    noisy = town * 0.25 + np.random.default_rng(0).normal(0, 0.1 * np.sqrt(np.mean(town**2)), len(town)).astype(np.float32)
    whole = duplicates.fingerprint(town, RATE)

    for copy in (noisy, town[: len(town) // 2], town[RATE:]):
        score, shared, _ = duplicates.compare(whole, duplicates.fingerprint(copy, RATE))
        assert score >= duplicates.MATCH_THRESHOLD and shared >= 0.9 * len(copy) / RATE - 0.1


def test_different_speech_of_the_same_speaker_or_of_others_does_not_match():
    town = shipped("multi/town.flac")
    half = len(town) // 2
    prints = {"town_first_half": duplicates.fingerprint(town[:half], RATE), "town_second_half": duplicates.fingerprint(town[half:], RATE)}
    for name in ("multi/main.flac", "multi/country.flac", "basic/basic_ref_en.wav"):
        prints[name] = duplicates.fingerprint(shipped(name), RATE)

    assert duplicates.find_matches(prints) == []


def test_matches_join_into_groups_across_chains():
    nature, stella = shipped("basic/basic_ref_en.wav"), shipped("multi/main.flac")
    prints = {"a": duplicates.fingerprint(nature, RATE), "b": duplicates.fingerprint(nature * 0.5, RATE),
              "c": duplicates.fingerprint(np.concatenate([nature[-RATE * 2:], stella]), RATE),
              "d": duplicates.fingerprint(stella[: RATE * 3], RATE), "e": duplicates.fingerprint(shipped("multi/town.flac"), RATE)}

    matches = duplicates.find_matches(prints)

    assert {(m.first, m.second) for m in matches} >= {("a", "b"), ("c", "d")}
    assert duplicates.groups(list(prints), matches) == [["a", "b", "c", "d"]]


# ----------------------------------------------------------------------------- the folder


@pytest.fixture(scope="module")
def half_folder(tmp_path_factory, compose_cfg_module, one_torch_thread) -> dict:  # noqa: F811
    root = tmp_path_factory.mktemp("overlap") / "recordings"
    utterances = example.write(root / "long.flac", LAYOUT, sample_rate=44100, channels=1)
    wav, rate = sf.read(str(root / "long.flac"), dtype="float32")
    sf.write(str(root / "first_half.wav"), wav[: len(wav) // 2], rate)  # cut inside "Six spoons ... her brother Bob."
    runs = {}
    for seed in range(4):
        data = recordings_config(compose_cfg_module, root, "data.val_fraction=0.5", f"data.seed={seed}")
        result = prepare_recordings(data, progress=False)
        runs[seed] = json.loads((result.review_path.parent / "review.json").read_text(encoding="utf-8"))
    return {"root": root, "utterances": utterances, "runs": runs, "work": result.review_path.parent, "half_seconds": len(wav) / 2 / rate}


@pytest.mark.slow
def test_no_held_out_speech_is_also_in_training(half_folder):
    # Both files share one timeline up to the half: clips overlapping in time hold the same speech.
    def overlaps(a: dict, b: dict) -> bool:
        return min(a["end"], b["end"]) - max(a["start"], b["start"]) > 0.5

    held_out_somewhere = 0
    for review in half_folder["runs"].values():
        val = [clip for clip in review["clips"] if clip["split"] == "val"]
        train = [clip for clip in review["clips"] if clip["split"] == "train"]
        assert val and train
        assert not [(v["audio_file"], t["audio_file"]) for v in val for t in train if overlaps(v, t)]
        held_out_somewhere += sum(1 for clip in val if clip["start"] < half_folder["half_seconds"])
    assert held_out_somewhere > 0  # shared speech was held out too, with every copy of it


@pytest.mark.slow
def test_the_review_flags_each_copy_of_the_same_audio(half_folder):
    review = half_folder["runs"][0]
    early = [clip for clip in review["clips"] if clip["start"] < half_folder["half_seconds"] - 1]
    late = [clip for clip in review["clips"] if clip["start"] >= half_folder["half_seconds"]]

    assert len(early) == 4 and len(late) == 1
    for clip in early:
        twin = next(other for other in early if other["source"] != clip["source"] and abs(other["start"] - clip["start"]) < 0.5)
        assert any(flag.startswith(f"same_audio_as {twin['audio_file']}") for flag in clip["flags"])
    assert not any(flag.startswith("same_audio_as") for flag in late[0]["flags"])
    page = (half_folder["work"] / "review.html").read_text(encoding="utf-8")
    assert "same_audio_as" in page
    groups = json.loads((half_folder["work"] / "split_groups.json").read_text(encoding="utf-8"))["groups"]
    assert sorted(len(group) for group in groups) == [2, 2]


@pytest.mark.slow
def test_a_file_that_stops_mid_sentence_has_its_last_clip_flagged(half_folder):
    review = half_folder["runs"][0]
    last = {source: max((c for c in review["clips"] if c["source"] == source), key=lambda c: c["start"]) for source in ("first_half.wav", "long.flac")}

    assert "cut_at_end_of_file" in last["first_half.wav"]["flags"]
    assert last["first_half.wav"]["trailing_silence"] < 0.1
    assert not [clip for clip in review["clips"] if "cut_at_end_of_file" in clip["flags"] and clip is not last["first_half.wav"]]


@pytest.mark.slow
def test_each_clip_shows_its_dnsmos_and_clips_under_the_floor_are_left_out(half_folder, compose_cfg_module):  # noqa: F811
    scores = {clip["audio_file"]: clip["dnsmos"] for clip in half_folder["runs"][0]["clips"]}
    assert all(3.0 <= score <= 3.6 for score in scores.values())  # clean human speech, 1..5
    floor = min(scores.values()) + 0.001  # the lowest falls under it

    data = recordings_config(compose_cfg_module, half_folder["root"], "data.val_fraction=0.5", f"data.min_dnsmos={floor}")
    result = prepare_recordings(data, progress=False)
    review = json.loads((result.review_path.parent / "review.json").read_text(encoding="utf-8"))
    listed = {Path(row.audio_path).name for row in read_metadata(result.review_path.parent).rows}

    low = {name for name, score in scores.items() if score < floor}
    assert 1 <= len(low) < len(scores)
    assert {clip["audio_file"] for clip in review["dropped"] if clip["dropped"] == "low_dnsmos"} == low
    assert listed == {Path(name).name for name in scores} - {Path(name).name for name in low}
    assert "DNSMOS" in (result.review_path.parent / "review.html").read_text(encoding="utf-8")
