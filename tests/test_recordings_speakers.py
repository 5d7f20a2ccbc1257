"""Recordings with several speakers, tried as a new user would: a two-speaker and a three-speaker
recording nobody transcribed, made of f5-tts's shipped voices in new orders, at other levels,
with noise and a stretch where two voices speak at once (f5app.data.recordings.example
.write_conversation), prepared with data=recordings and the bundled tiny.en.

data=recordings finds who speaks when (resemblyzer windows clustered across the folder), cuts
clips inside one speaker's turns, keeps the main speaker by default, leaves overlapping speech
out, and shows every clip's speaker and a page of one sample per speaker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from f5app.data.metadata import read_metadata
from f5app.data.recordings import example, segment, speakers
from f5app.data.recordings.pipeline import prepare_recordings
from f5app.errors import UserError
from test_recordings import compose_cfg_module  # noqa: F401 (a fixture)

RATE = 24000


def config(compose_cfg, folder: Path, *overrides: str):
    from omegaconf import OmegaConf

    from f5app.config import RecordingsDataConfig, to_settings

    cfg = compose_cfg("prepare", ["data=recordings", f"data.path={folder}", "asr=tiny_en", *overrides])
    return to_settings(OmegaConf.to_container(cfg.data, resolve=True), RecordingsDataConfig)


def review_of(result) -> dict:
    return json.loads((result.review_path.parent / "review.json").read_text(encoding="utf-8"))


def labelled(review: dict, source: str) -> list[tuple[float, float, str]]:
    """Every clip made from ``source`` (kept or left out) as (start, end, speaker)."""
    return [(c["start"], c["end"], c["speaker"]) for c in review["clips"] + review["dropped"] if c["source"] == source and c["speaker"]]


class CountEmbeddings:
    def __init__(self, monkeypatch):
        self.calls = 0
        original = speakers.embed_regions

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(speakers, "embed_regions", counted)


# ----------------------------------------------------------------------------- data.speaker


def test_data_speaker_names_all_main_the_n_who_speak_most_or_one_id():
    ids = ["S1", "S2", "S3"]

    assert speakers.select("all", ids) == {"S1", "S2", "S3"}
    assert speakers.select("main", ids) == {"S1"}
    assert speakers.select("2", ids) == {"S1", "S2"} and speakers.select("9", ids) == set(ids)
    assert speakers.select("S3", ids) == {"S3"} and speakers.select("s2", ids) == {"S2"}
    with pytest.raises(UserError, match=r"^data\.speaker=S4 .*found: S1, S2, S3\)$"):
        speakers.select("S4", ids)
    assert speakers.check_setting("S12") is None and speakers.check_setting("3") is None
    for bad in ("0", "everyone", "S0", "-1"):
        assert speakers.check_setting(bad).startswith(f"data.speaker={bad} must be")


def test_a_bad_data_speaker_is_one_line_before_any_work(tmp_path, compose_cfg_module):
    example.write_conversation(tmp_path / "talk" / "talk.wav", ["stella", "rainbow"], turns=3, seed=1)

    with pytest.raises(UserError, match=r"^data\.speaker=loudest must be all, main, a number N"):
        prepare_recordings(config(compose_cfg_module, tmp_path / "talk", "data.speaker=loudest"), progress=False)
    assert not (tmp_path / "talk" / "f5app_clips" / "cache" / "read").exists()


# ----------------------------------------------------------------------------- the speaker step alone


def test_speech_too_short_to_embed_is_one_speaker_not_overlap():
    no_windows = speakers.Windows(np.zeros(0), np.zeros(0), np.zeros((0, 256), dtype=np.float32))
    regions = [segment.Region(1.0, 1.5), segment.Region(2.0, 2.6)]  # each under MIN_WINDOW_SECONDS

    voices, (turns,), _ = speakers.diarise([speakers.Heard(no_windows, regions, np.zeros(100, dtype=np.float32))])

    assert voices.ids == ["S1"] and [turn.speaker for turn in turns] == ["S1", "S1"]


@pytest.mark.slow
def test_speaker_turns_follow_the_voices_and_a_speaker_change_is_always_a_cut(tmp_path, one_torch_thread, monkeypatch):
    """Two voices with pauses shorter than max_pause_seconds (which would join them into one
    clip): the windows are clustered into two speakers, and every clip holds one voice."""
    path = tmp_path / "talk.wav"
    conversation = example.write_conversation(path, ["country", "nature"], turns=5, seed=3, snr_db=20)
    settings = segment.Settings(min_seconds=2.0, max_seconds=15.0, max_pause_seconds=1.5, pad_seconds=0.25, threshold=0.5)
    probabilities = segment.speech_probabilities(segment.Vad(), path, RATE)
    regions = segment.speech_regions(probabilities, conversation.seconds, settings.threshold)
    windows = speakers.embed_regions(speakers.load_embedder(), path, RATE, regions)

    voices, (turns,), (labels,) = speakers.diarise([speakers.Heard(windows, regions, probabilities)])
    planned = speakers.plan_turns(turns, settings)

    assert voices.ids == ["S1", "S2"] and voices.seconds[0] > voices.seconds[1]
    clips = [(piece.start, piece.end, speaker) for piece, speaker in planned]
    score = example.score_clips(conversation, clips)
    assert score["accuracy"] >= 0.95 and score["main_pure"] == 1.0
    assert example.voices_of(conversation, clips) == {"S1": "country", "S2": "nature"}
    for piece, _ in planned:  # 0.4-1.2 s pauses would have joined the turns of two voices into one clip
        heard = {u.name for u in conversation.utterances if min(piece.end, u.end) - max(piece.start, u.start) > 0.1}
        assert len(heard) == 1, (piece, heard)
    # a long folder: only an evenly spaced part of the windows is clustered, the rest take the nearest voice
    monkeypatch.setattr(speakers, "MAX_CLUSTERED", len(windows) // 4)
    bounded, _, (bounded_labels,) = speakers.diarise([speakers.Heard(windows, regions, probabilities)])
    both = (bounded_labels != speakers.NO_SPEAKER) & (labels != speakers.NO_SPEAKER)
    assert bounded.ids == ["S1", "S2"] and np.array_equal(bounded_labels[both], labels[both]) and both.mean() >= 0.75


def test_batched_windows_are_each_windows_own_embedding_in_its_place_in_time():
    embedder = speakers.load_embedder()
    town, rate = sf.read(str(example.examples_dir() / "multi/town.flac"), dtype="float32")
    stella, _ = sf.read(str(example.examples_dir() / "multi/main.flac"), dtype="float32")
    town, stella = town[int(0.8 * rate):int(9.2 * rate)], stella[int(0.7 * rate):int(6.1 * rate)]  # both 44.1 kHz
    wav = np.concatenate([town, stella])

    ((batched, starts),) = embedder.embed_windows([wav], rate, 1.5, 0.5)

    assert len(batched) == len(starts) == 1 + int((len(wav) / rate - 1.5) / 0.5 + 1e-6)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-4)
    voices = {"town": embedder.embed(town, rate), "stella": embedder.embed(stella, rate)}
    for window, start in zip(batched, starts):
        alone = embedder.embed_windows([wav[int(start * rate):int((start + 1.5) * rate)]], rate, 1.5, 0.5)[0][0]
        assert len(alone) == 1 and float(window @ alone[0]) > 0.97  # the same window, embedded on its own
        if start + 1.5 <= len(town) / rate:
            assert float(window @ voices["town"]) > float(window @ voices["stella"]) + 0.1
        elif start >= len(town) / rate:
            assert float(window @ voices["stella"]) > float(window @ voices["town"]) + 0.1


# ----------------------------------------------------------------------------- the whole pipeline


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory, compose_cfg_module, one_torch_thread) -> dict:
    root = tmp_path_factory.mktemp("speakers") / "interview"
    conversation = example.write_conversation(root / "interview.wav", ["stella", "chinese"], turns=7, seed=5, snr_db=20,
                                              overlap_seconds=3.0)
    result = prepare_recordings(config(compose_cfg_module, root), progress=False)
    return {"root": root, "conversation": conversation, "result": result, "review": review_of(result)}


@pytest.mark.slow
def test_main_keeps_only_the_main_speaker_and_every_clip_shows_its_speaker(two_speakers):
    review, conversation = two_speakers["review"], two_speakers["conversation"]
    clips = labelled(review, "interview.wav")

    score = example.score_clips(conversation, clips)
    assert score["accuracy"] >= 0.95 and score["main_pure"] == 1.0
    assert example.voices_of(conversation, clips) == {"S1": "stella", "S2": "chinese"}
    assert {c["speaker"] for c in review["clips"]} == {"S1"} and review["settings"]["speaker"] == "main"
    assert {c["dropped"] for c in review["dropped"] if c["speaker"] == "S2"} == {"other_speaker"}
    work = two_speakers["result"].review_path.parent
    listed = {row.audio_path for row in read_metadata(work).rows}
    assert listed == {work / c["audio_file"] for c in review["clips"]}
    html = two_speakers["result"].review_path.read_text(encoding="utf-8")
    assert "<th>speaker</th>" in html and "speakers.html" in html


@pytest.mark.slow
def test_overlapping_speech_is_flagged_and_left_out(two_speakers):
    review, conversation = two_speakers["review"], two_speakers["conversation"]
    (overlap,) = conversation.overlaps

    flagged = [c for c in review["dropped"] if c["dropped"] == "overlapping_speech"]
    assert flagged and all(c["speaker"] == "overlap" for c in flagged)
    assert any(c["start"] <= overlap.start + 0.3 and overlap.end - 0.3 <= c["end"] for c in flagged)
    assert example.score_clips(conversation, labelled(review, "interview.wav"))["overlap_left_out"] >= 0.9
    assert (two_speakers["result"].review_path.parent / flagged[0]["audio_file"]).is_file()  # made, to listen to


@pytest.mark.slow
def test_the_speakers_page_has_one_short_sample_per_speaker(two_speakers):
    work = two_speakers["result"].review_path.parent
    rows = two_speakers["review"]["speakers"]
    embedder = speakers.load_embedder()
    voices = {name: embedder.embed(*sf.read(str(example.examples_dir() / example.SPEECH[name][0]), dtype="float32"))
              for name in ("stella", "chinese")}

    assert [row["speaker"] for row in rows] == ["S1", "S2"] and [row["kept"] for row in rows] == [True, False]
    assert rows[0]["seconds"] > rows[1]["seconds"] > 10 and rows[0]["kept_clips"] == len(two_speakers["review"]["clips"])
    page = (work / "speakers.html").read_text(encoding="utf-8")
    for row, voice in zip(rows, ("stella", "chinese")):
        audio, rate = sf.read(str(work / row["sample"]), dtype="float32")
        assert row["sample"] in page and 1.5 <= len(audio) / rate <= 4.0
        sample = embedder.embed(audio, rate)
        assert max(voices, key=lambda name: float(sample @ voices[name])) == voice  # the sample is that speaker's voice


@pytest.mark.slow
def test_all_n_and_an_id_choose_again_without_embedding_again(two_speakers, compose_cfg_module, monkeypatch):
    root, first = two_speakers["root"], two_speakers["review"]
    counting = CountEmbeddings(monkeypatch)

    everyone = review_of(prepare_recordings(config(compose_cfg_module, root, "data.speaker=all"), progress=False))
    second = review_of(prepare_recordings(config(compose_cfg_module, root, "data.speaker=S2"), progress=False))
    top_one = review_of(prepare_recordings(config(compose_cfg_module, root, "data.speaker=1"), progress=False))

    assert counting.calls == 0
    assert {c["speaker"] for c in everyone["clips"]} == {"S1", "S2"}
    assert len(everyone["clips"]) == len(first["clips"]) + sum(1 for c in first["dropped"] if c["dropped"] == "other_speaker")
    assert {c["speaker"] for c in second["clips"]} == {"S2"}
    assert [c["audio_file"] for c in top_one["clips"]] == [c["audio_file"] for c in first["clips"]]
    assert all(c["speaker"] != "overlap" for review in (everyone, second, top_one) for c in review["clips"])
    with pytest.raises(UserError, match=r"^data\.speaker=S3 is not .*\(found: S1, S2\)$"):
        prepare_recordings(config(compose_cfg_module, root, "data.speaker=S3"), progress=False)


@pytest.mark.slow
def test_three_speakers_across_two_files_keep_one_id_each(tmp_path, compose_cfg_module, one_torch_thread):
    root = tmp_path / "podcast"
    voices = ["rainbow", "nature", "country"]
    parts = {name: example.write_conversation(root / name, voices, turns=7, seed=seed, snr_db=snr)
             for name, seed, snr in (("part1.wav", 11, 25.0), ("part2.wav", 12, 15.0))}

    result = prepare_recordings(config(compose_cfg_module, root, "data.speaker=2"), progress=False)

    review = review_of(result)
    assert [row["speaker"] for row in review["speakers"]] == ["S1", "S2", "S3"]
    for name, conversation in parts.items():
        clips = labelled(review, name)
        assert example.score_clips(conversation, clips)["accuracy"] >= 0.95
        assert example.voices_of(conversation, clips)["S1"] == "rainbow"  # the same id in both files
    assert example.voices_of(parts["part1.wav"], labelled(review, "part1.wav")) == example.voices_of(parts["part2.wav"], labelled(review, "part2.wav"))
    assert {c["speaker"] for c in review["clips"]} == {"S1", "S2"}
    assert all(re.fullmatch(r"S[12]", row["speaker"]) for row in review["speakers"] if row["kept"])
