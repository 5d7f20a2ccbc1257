"""data=recordings, tried as a new user would: a folder of long recordings nobody transcribed, cut
into clips, transcribed with the bundled tiny.en, reviewed, edited and trained on.

The folder is made of the human speech f5-tts ships (f5app.data.recordings.example), joined with
silences and noise, at 44.1 kHz in stereo, next to an mp3 and a recording cut into two clips that
have transcripts beside them, and the bad input a real folder holds. It is prepared once for the
module, the first time stopped by a Ctrl-C in the middle of transcription, which the tests below
read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from eval_fixtures import HUMAN_CLIPS, example_path
from f5app.config import RecordingsDataConfig, to_settings
from f5app.data.prepare import DataError
from f5app.data.sources import prepare_data as prepare
from f5app.data.recordings import example, normalise, read, segment, transcribe
from f5app.errors import UserError
from f5app.speech.text import score

REPO = Path(__file__).resolve().parent.parent
KNOWN = {"nature": HUMAN_CLIPS["basic/basic_ref_en.wav"], "stella": HUMAN_CLIPS["multi/main.flac"], "rainbow": HUMAN_CLIPS["multi/town.flac"]}
STEP_FUNCTIONS = [(read, "decode"), (segment, "speech_probabilities"), (normalise, "normalise_clip"),
                  (transcribe, "transcribe_clip"), (transcribe, "word_times")]


def recordings_config(compose_cfg, folder: Path, *overrides: str) -> RecordingsDataConfig:
    from omegaconf import OmegaConf

    # data.speaker=all: these folders are made of several of f5-tts's voices, and what is tested
    # here is not whose clips are kept (tests/test_recordings_speakers.py is)
    cfg = compose_cfg("prepare", ["data=recordings", f"data.path={folder}", "asr=tiny_en", "data.speaker=all", *overrides])
    return to_settings(OmegaConf.to_container(cfg.data, resolve=True), RecordingsDataConfig)


def tree_digest(folder: Path, skip: str) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and skip not in p.parts}


class Counting:
    """Counts the calls of every step's work function (one per item not found in the cache)."""

    def __init__(self, monkeypatch, fail_on: tuple[str, int] | None = None):
        self.calls: dict[str, int] = {}
        for module, name in STEP_FUNCTIONS:
            original = getattr(module, name)

            def counted(*args, _original=original, _name=name, **kwargs):
                self.calls[_name] = self.calls.get(_name, 0) + 1
                if fail_on == (_name, self.calls[_name]):
                    raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a step
                return _original(*args, **kwargs)

            monkeypatch.setattr(module, name, counted)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("recordings") / "my_recordings"
    utterances = example.write(root / "interview.flac", example.STANDARD, sample_rate=44100, channels=2)
    # one recording whose transcript sits beside it and spans two clips
    passages = example.write(root / "passages.wav", [("silence", 1.0), ("speech", "stella"), ("silence", 1.5),
                                                     ("speech", "rainbow"), ("silence", 1.0)], sample_rate=22050, channels=1)
    (root / "passages.txt").write_text(f"{KNOWN['stella']}\n{KNOWN['rainbow']}\n", encoding="utf-8")
    nature, rate = sf.read(str(example_path("basic/basic_ref_en.wav")), dtype="float32")
    sf.write(str(root / "nature.mp3"), nature, rate, format="MP3")
    (root / "nature.txt").write_text(KNOWN["nature"], encoding="utf-8")
    # bad input
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt not really" * 20)
    sf.write(str(root / "silent.wav"), np.zeros(3 * 48000, dtype=np.float32), 48000)
    (root / "day2").mkdir()
    noise = (0.1 * np.random.default_rng(0).standard_normal(6 * 16000)).astype(np.float32)
    sf.write(str(root / "day2" / "noise.ogg"), noise, 16000, format="OGG")
    (root / "phone_call.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A ")
    (root / "notes.txt").write_text("not audio", encoding="utf-8")
    return {"root": root, "utterances": utterances, "passages": passages, "before": tree_digest(root, "f5app_clips")}


@pytest.fixture(scope="module")
def prepared(folder, compose_cfg_module, one_torch_thread) -> dict:
    """Prepared twice: stopped by Ctrl-C at the third transcription, then run again to the end."""
    data = recordings_config(compose_cfg_module, folder["root"])
    with pytest.MonkeyPatch.context() as patch:
        first = Counting(patch, fail_on=("transcribe_clip", 3))
        with pytest.raises(KeyboardInterrupt):
            prepare(data, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        second = Counting(patch)
        result = prepare(data, progress=False)
    work = result.review_path.parent
    return {
        "data": data, "result": result, "work": work, "first": first.calls, "second": second.calls,
        "review": json.loads((work / "review.json").read_text(encoding="utf-8")),
        "metadata": (work / "metadata.csv").read_text(encoding="utf-8"),
    }


@pytest.fixture(scope="module")
def compose_cfg_module():
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR

    def _compose(config_name: str, overrides: list[str] | None = None):
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides or [])

    return _compose


def clips_of(review: dict, source: str) -> list[dict]:
    return [clip for clip in review["clips"] if clip["source"] == source]


# ----------------------------------------------------------------------------- cutting


def test_each_utterance_becomes_one_clip_cut_inside_the_pauses(folder, prepared):
    clips = clips_of(prepared["review"], "interview.flac")
    utterances = folder["utterances"]
    data = prepared["data"]

    assert len(clips) == len(utterances) == 4  # the 15.5 s rainbow+country passage is split in two
    for clip, utterance in zip(clips, utterances):
        assert clip["start"] <= utterance.start + 0.15 and utterance.end - 0.15 <= clip["end"], (clip, utterance)
        assert data.min_seconds <= clip["seconds"] <= data.max_seconds
    for before, after, clip in zip(utterances, utterances[1:], clips):
        assert clip["end"] <= after.start + 0.05  # no clip reaches into the next utterance
    rainbow, country = utterances[2], utterances[3]
    assert rainbow.end - 0.05 <= clips[2]["end"] and clips[3]["start"] <= country.start + 0.05  # cut in the 0.5 s pause
    assert all(clip["cut"] == "pause" for clip in clips)


def test_clips_are_mono_at_the_models_rate_and_loudness_normalised(prepared):
    import pyloudnorm

    target = prepared["data"].loudness_lufs
    for clip in prepared["review"]["clips"]:
        wav, rate = sf.read(str(prepared["work"] / clip["audio_file"]), dtype="float32")
        assert rate == 24000 and wav.ndim == 1
        loudness = pyloudnorm.Meter(rate).integrated_loudness(wav.astype(np.float64))
        peak_db = 20 * np.log10(np.abs(wav).max())
        assert peak_db <= normalise.PEAK_CEILING_DB + 0.01
        # at the target, unless reaching it would have pushed a peak over the ceiling
        assert loudness == pytest.approx(target, abs=0.2) or (loudness < target and peak_db == pytest.approx(normalise.PEAK_CEILING_DB, abs=0.05))


def test_a_pause_at_least_max_pause_seconds_always_ends_a_clip_and_the_longest_pause_splits():
    settings = segment.Settings(min_seconds=2.0, max_seconds=15.0, max_pause_seconds=1.0, pad_seconds=0.25, threshold=0.5)
    regions = [segment.Region(0.0, 4.0), segment.Region(5.2, 9.0),  # 1.2 s pause: always a cut
               segment.Region(9.3, 14.0), segment.Region(14.8, 20.0), segment.Region(20.2, 24.0)]  # 14.7 s > 14.5 s limit

    pieces = segment.plan(regions, settings)

    assert [(p.start, p.end) for p in pieces] == [(0.0, 4.0), (5.2, 14.0), (14.8, 24.0)]  # split at the 0.8 s pause
    spans = segment.spans(pieces + [segment.Piece(30.0, 30.8)], 40.0, settings)
    assert spans[0].start == 0.0 and spans[1].start == pytest.approx(4.95) and spans[1].end == pytest.approx(14.25)
    assert spans[2].start == pytest.approx(14.55)  # padding stops halfway into the pause
    assert spans[3].dropped == "too_short" and all(span.dropped is None for span in spans[:3])


@pytest.mark.slow
def test_speech_with_no_pause_is_split_at_word_boundaries(tmp_path, compose_cfg_module, one_torch_thread):
    root = tmp_path / "one"
    root.mkdir()
    shutil.copy(example_path("multi/town.flac"), root / "town.flac")  # 8.2 s of speech with no pause of 100 ms
    data = recordings_config(compose_cfg_module, root, "data.max_seconds=4", "data.min_seconds=1")

    result = prepare(data, progress=False)

    review = json.loads((result.review_path.parent / "review.json").read_text(encoding="utf-8"))
    (words_record,) = (result.review_path.parent / "cache" / "words").glob("*.json")
    words = json.loads(words_record.read_text())["words"]
    clips = review["clips"]
    assert len(clips) >= 3 and all(clip["seconds"] <= 4.0 and clip["cut"] == "words" for clip in clips)
    assert all("cut_between_words" in clip["flags"] for clip in clips)
    for left, right in zip(clips, clips[1:]):
        cut = left["end"]
        assert cut == pytest.approx(right["start"])
        assert not any(start + 0.02 < cut < end - 0.02 for start, end in words), cut  # never inside a word
    text = " ".join(clip["text"] for clip in clips)
    assert score(KNOWN["rainbow"], text, "en").wer < 0.25


# ----------------------------------------------------------------------------- transcripts


def test_transcripts_match_the_known_words(prepared):
    clips = clips_of(prepared["review"], "interview.flac")
    scores = {name: score(KNOWN[name], clip["text"], "en") for name, clip in zip(["nature", "stella", "rainbow"], clips)}

    errors = sum(s.substitutions + s.deletions + s.insertions for s in scores.values())
    words = sum(s.reference_words for s in scores.values())
    assert errors / words < 0.1, {name: (s.wer, s.hypothesis) for name, s in scores.items()}
    assert all(s.wer < 0.2 for s in scores.values())
    assert all(0.5 < clip["confidence"] <= 1 and clip["text_source"] == "asr" for clip in clips)


def test_a_transcript_beside_a_recording_is_used_instead_of_the_asr(prepared):
    (nature,) = clips_of(prepared["review"], "nature.mp3")
    assert nature["text"] == KNOWN["nature"] and nature["text_source"] == "nature.txt"
    assert nature["confidence"] is None  # the ASR never ran on it

    two = clips_of(prepared["review"], "passages.wav")
    assert [clip["text"] for clip in two] == [KNOWN["stella"], KNOWN["rainbow"]]  # your words, shared out by the ASR's
    assert all(clip["text_source"] == "passages.txt" and clip["agreement"] > 0.8 for clip in two)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line_each_and_nothing_else_is_lost(folder, prepared):
    problems = {problem["source"]: problem["reason"] for problem in prepared["review"]["problems"]}

    assert problems == {"broken.wav": "unreadable", "silent.wav": "no_speech", "day2/noise.ogg": "no_speech",
                        "phone_call.m4a": "undecodable_format"}
    assert all("\n" not in problem["detail"] for problem in prepared["review"]["problems"])
    assert {clip["source"] for clip in prepared["review"]["clips"]} == {"interview.flac", "passages.wav", "nature.mp3"}
    html = (prepared["work"] / "review.html").read_text(encoding="utf-8")
    assert all(name in html for name in problems)


def test_the_source_folder_is_never_modified(folder, prepared):
    assert tree_digest(folder["root"], "f5app_clips") == folder["before"]


def test_the_work_folder_is_never_taken_for_recordings(prepared, compose_cfg_module):
    with pytest.raises(UserError, match="is \\(or is inside\\) a work folder of data=recordings"):
        prepare(recordings_config(compose_cfg_module, prepared["work"] / "wavs"), progress=False)


def test_a_folder_without_audio_or_without_speech_is_one_user_error(tmp_path, compose_cfg_module):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("hello")
    with pytest.raises(UserError, match=r"^no audio files in .*empty \(looked for \.wav, \.flac"):
        prepare(recordings_config(compose_cfg_module, empty), progress=False)
    assert sorted(p.name for p in empty.iterdir()) == ["readme.txt"]  # nothing written into it

    with pytest.raises(UserError, match="does not exist"):
        prepare(recordings_config(compose_cfg_module, tmp_path / "missing"), progress=False)

    silent = tmp_path / "silent"
    silent.mkdir()
    sf.write(str(silent / "room_tone.wav"), np.zeros(24000 * 2, dtype=np.float32), 24000)
    (silent / "broken.flac").write_bytes(b"fLaC broken")
    with pytest.raises(DataError, match=r"no usable speech in .*2 recording\(s\) gave no clips \(no_speech: 1, unreadable: 1\); see .*review.html"):
        prepare(recordings_config(compose_cfg_module, silent), progress=False)
    assert (silent / "f5app_clips" / "review.html").is_file()


@pytest.mark.slow
def test_the_command_line_says_one_line_and_exits_2_on_bad_input(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "f5app.prepare", "data=recordings", f"data.path={tmp_path}", "asr=tiny_en"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: no audio files in {tmp_path} (looked for {', '.join(read.AUDIO_SUFFIXES)}, in subfolders too); "
        "point data.path at the folder holding your recordings"
    ]


# ----------------------------------------------------------------------------- resume, cache, edits


def test_a_run_stopped_by_ctrl_c_resumes_without_redoing_what_it_finished(prepared):
    first, second = prepared["first"], prepared["second"]
    asr_clips = [clip for clip in prepared["review"]["clips"] if clip["confidence"] is not None]
    decoded = 6  # interview, passages, nature.mp3, silent, noise and broken.wav (which fails, and is remembered)

    assert first["decode"] == decoded and first["transcribe_clip"] == 3
    assert "decode" not in second and "speech_probabilities" not in second and "normalise_clip" not in second
    assert second["transcribe_clip"] == len(asr_clips) - 2  # the two finished before Ctrl-C are not redone
    steps = prepared["review"]["steps"]
    assert steps["transcribe"]["cached"] == 2 and steps["read"]["cached"] == decoded


def test_a_fully_cached_run_loads_no_model(prepared, monkeypatch):
    import f5app.speech.asr

    def refuse(*args, **kwargs):
        raise AssertionError("the ASR model was loaded for a cached run")

    monkeypatch.setattr(f5app.speech.asr, "build_transcriber", refuse)
    counting = Counting(monkeypatch)
    prepare(prepared["data"], progress=False)

    assert counting.calls == {}
    assert (prepared["work"] / "metadata.csv").read_text(encoding="utf-8") == prepared["metadata"]


def test_a_held_out_split_is_made_and_recorded(prepared):
    split = json.loads((prepared["result"].dir / "split.json").read_text(encoding="utf-8"))
    review_val = {str(prepared["work"] / clip["audio_file"]) for clip in prepared["review"]["clips"] if clip["split"] == "val"}

    assert set(split["val_audio"]) == review_val and len(review_val) >= 1
    assert prepared["review"]["summary"]["val"] == len(review_val)
    assert (prepared["work"] / "durations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_edits_to_metadata_csv_are_kept_across_runs(prepared, compose_cfg_module):
    work = prepared["work"]
    metadata = work / "metadata.csv"
    lines = metadata.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "audio_file|text" and len(lines) == 1 + prepared["result"].num_items
    edited_file, _ = lines[1].split("|", 1)
    removed_file, _ = lines[2].split("|", 1)
    lines[1] = f"{edited_file}|Some call me Ŋature, others call me mother nature."
    del lines[2]
    metadata.write_text("\n".join(lines) + "\n", encoding="utf-8")

    again = prepare(prepared["data"], progress=False)
    # other settings for flags only: the edit still holds
    again = prepare(recordings_config(compose_cfg_module, prepared["data"].path, "data.min_confidence=0.9"), progress=False)

    rows = dict(line.split("|", 1) for line in metadata.read_text(encoding="utf-8").splitlines()[1:])
    assert rows[edited_file] == "Some call me Ŋature, others call me mother nature."
    assert removed_file not in rows
    review = json.loads((work / "review.json").read_text(encoding="utf-8"))
    edited = next(clip for clip in review["clips"] if clip["audio_file"] == edited_file)
    assert "edited" in edited["flags"] and any(flag.startswith("unknown_characters Ŋ") for flag in edited["flags"])
    assert [clip["dropped"] for clip in review["dropped"] if clip["audio_file"] == removed_file] == ["removed_by_you"]
    assert review["vocabulary"]["missing"] == {"Ŋ": 1}
    assert "data.tokenizer=custom" in review["vocabulary"]["suggestion"] and (work / "vocab_extended.txt").is_file()
    assert again.num_items == prepared["result"].num_items - 1
    from f5app.data.dataset import read_clips

    texts = {clip.audio_path: "".join(clip.text) for clip in read_clips(again.dir)}
    assert texts[str(work / edited_file)] == "Some call me Ŋature, others call me mother nature."  # training reads your text


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_training_runs_on_the_prepared_recordings(prepared, compose_cfg_module, tmp_path):
    from train_fixtures import train_in_process

    overrides = ["experiment=demo", "data=recordings", f"data.path={prepared['data'].path}", "asr=tiny_en", "data.speaker=all", "logger=none",
                 "trainer.max_updates=2", "trainer.val_every=2", "trainer.sample_every=0", "trainer.progress_bar=false"]
    train_in_process(compose_cfg_module, tmp_path / "run", overrides)

    status = json.loads((tmp_path / "run" / "run_status.json").read_text(encoding="utf-8"))
    assert status["state"] == "finished" and status["update"] == 2


# ----------------------------------------------------------------------------- docs


def doc_commands(path: Path) -> list[str]:
    """Every line of the ```sh blocks of ``path`` (the commands a reader would type)."""
    blocks = re.findall(r"```sh\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.slow
def test_the_commands_in_docs_recordings_md_work_as_written(tmp_path):
    commands = doc_commands(REPO / "docs" / "recordings.md")
    assert any("f5app.prepare data=recordings" in command for command in commands)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
