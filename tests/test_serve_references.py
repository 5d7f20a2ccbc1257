"""Uploaded voices go through the reference preparation: cut at a word with their transcript, judged, refused with the reason.

The issue's case: a 36 s upload with its full transcript used to be cut to under 12 s while the
whole transcript was kept, so a 10-word sentence came out 1.4 s long. Here the clip is f5-tts's
Rainbow Passage recording four times over (40 s, one speaker, words known).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from eval_fixtures import HUMAN_CLIPS, example_path
from f5app.audio.io import read_audio
from f5app.config import ReferenceConfig
from f5app.speech.text import score
from f5app.inference.synthesizer import Synthesizer
from infer_fixtures import tiny_run_checkpoint
from serve_fixtures import running_server, tiny_serve_settings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]  # a server, tiny.en, DNSMOS, resemblyzer

RATE = 24000
TOWN, BASIC, MAIN = "multi/town.flac", "basic/basic_ref_en.wav", "multi/main.flac"


def clip_bytes(*names: str, gap: float = 0.6) -> bytes:
    pause = np.zeros(int(gap * RATE), dtype=np.float32)
    pieces = [part for name in names for part in (read_audio(example_path(name), target_sr=RATE)[0], pause)][:-1]
    buffer = io.BytesIO()
    sf.write(buffer, np.concatenate(pieces), RATE, format="WAV")
    return buffer.getvalue()


def upload(url, name, data, transcript=None):
    fields = {"name": name} | ({"transcript": transcript} if transcript is not None else {})
    return httpx.post(f"{url}/v1/voices", data=fields, files={"file": ("clip.wav", data, "audio/wav")}, timeout=300)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "voice"
    tiny_run_checkpoint(run, update=2)
    settings = replace(tiny_serve_settings(run, voices_dir=str(tmp_path_factory.mktemp("voices"))), reference=ReferenceConfig(check=True))
    synth = Synthesizer.from_config(settings, run)
    with running_server(settings, synth) as server:
        yield server


def test_a_40_s_upload_is_kept_cut_at_a_word_with_the_transcript_of_what_is_kept(running):
    words = " ".join([HUMAN_CLIPS[TOWN]] * 4)
    answer = upload(running.url, "rainbow", clip_bytes(TOWN, TOWN, TOWN, TOWN), words)
    assert answer.status_code == 201, answer.text
    voice = answer.json()
    reference = voice["reference"]
    assert reference["original_seconds"] > 36 and reference["seconds"] <= 12.1 and reference["cut"]["dropped_words"] > 0
    assert voice["transcript"] == reference["transcript"] and score(HUMAN_CLIPS[TOWN], voice["transcript"], "en").wer <= 0.1
    assert reference["problems"] == [] and reference["quality"]["dnsmos"]["ovrl"] > 3.0
    assert "spread" in reference["quality"]["speakers"] and "rms_dbfs" in reference["quality"]["levels"]
    listed = {v["name"]: v for v in httpx.get(f"{running.url}/v1/voices").json()["data"]}
    assert listed["rainbow"]["reference"]["quality"] == reference["quality"]

    # A 10-word sentence now lasts as long as ten words take this speaker (~0.3 s a word), not 1.4 s.
    spoken = httpx.post(f"{running.url}/v1/audio/speech", timeout=300, json={
        "model": "tts-1", "input": "The rainbow is a sign of rain and of sunshine.", "voice": "rainbow",
        "response_format": "wav", "stream": False, "seed": 0})
    assert spoken.status_code == 200, spoken.text
    wav, rate = sf.read(io.BytesIO(spoken.content))
    assert len(wav) / rate > 2.0


def test_an_upload_whose_transcript_the_asr_disagrees_with_is_a_400_naming_both(running):
    wrong = "The quick brown fox jumps over the lazy dog."
    answer = upload(running.url, "fox", clip_bytes(BASIC), wrong)
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "ref_text disagrees" in message and wrong in message and "mother nature" in message.lower()
    assert "fox" not in [v["name"] for v in httpx.get(f"{running.url}/v1/voices").json()["data"]]


def test_an_upload_of_two_speakers_is_refused_with_the_spread(running):
    # 11.3 s once trimmed: no cut, both voices are judged (spread 0.36; one voice scores under 0.22)
    answer = upload(running.url, "pair", clip_bytes(MAIN, BASIC, gap=0.2), f"{HUMAN_CLIPS[MAIN]} {HUMAN_CLIPS[BASIC]}")
    assert answer.status_code == 400 and "more than one speaker" in answer.json()["error"]["message"]


def test_an_upload_without_a_transcript_is_transcribed_and_stored_with_its_checks(running, tmp_path):
    from f5app.serve import upload_transcriber

    settings = replace(tiny_serve_settings(Path(tmp_path)), server=replace(tiny_serve_settings(Path(tmp_path)).server, transcribe_uploads=True))
    transcribe = upload_transcriber(settings)
    assert score(HUMAN_CLIPS[BASIC], transcribe(example_path(BASIC)), "en").wer == 0.0
