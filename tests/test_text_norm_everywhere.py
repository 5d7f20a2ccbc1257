"""The same normalisation in serving (a response header), evaluation (both sides of WER) and,
opt-in, data preparation (the training transcripts)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import httpx
import numpy as np
import pytest
import soundfile as sf

from f5app.config import DataConfig, TextNormConfig
from f5app.data.prepare import prepare
from f5app.evaluation.evaluator import Evaluator
from f5app.serving.text_headers import normalized_text_headers
from f5app.text.normalise import build_normaliser, training_normaliser
from eval_fixtures import example_path, human_audio, tiny_en_transcriber
from infer_fixtures import tiny_run_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_normalised_text_too_long_for_a_header_is_cut_whole_characters_and_flagged():
    text = "três reais e cinquenta centavos " * 400
    headers = normalized_text_headers(text)
    assert headers["X-Normalized-Text-Truncated"] == "true"
    assert len(headers["X-Normalized-Text"]) <= 8192
    assert text.startswith(unquote(headers["X-Normalized-Text"], errors="strict"))
    assert normalized_text_headers("doze reais") == {"X-Normalized-Text": "doze%20reais"}


@pytest.mark.slow  # starts a server
def test_the_server_returns_the_text_as_spoken_in_a_header(tmp_path):
    from f5app.inference.synthesizer import Synthesizer
    from serve_fixtures import running_server, tiny_serve_settings

    run_dir = tmp_path / "runs" / "voice"
    tiny_run_checkpoint(run_dir, update=2)
    settings = tiny_serve_settings(run_dir, voices_dir=str(tmp_path / "voices"))
    settings.text_norm = TextNormConfig(language="en")
    synth = Synthesizer.from_config(settings, run_dir)
    with running_server(settings, synth) as server:
        response = httpx.post(f"{server.url}/v1/audio/speech", timeout=120,
                              json={"model": "tts-1", "voice": "default", "input": "I paid $3.50 on 3/14/2024."})
    assert response.status_code == 200
    assert unquote(response.headers["X-Normalized-Text"]) == "I paid three dollars and fifty cents on March fourteenth twenty twenty-four."


def test_evaluation_scores_the_text_as_it_was_spoken_and_records_it():
    wav, sr = human_audio("multi/main.flac")
    written = "6 spoons of fresh snow peas, 5 thick slabs of blue cheese, and maybe a snack for her brother Bob."
    evaluator = Evaluator(tiny_en_transcriber(), None, "en", build_normaliser(TextNormConfig(language="en")))
    item = evaluator.score(wav.astype(np.float32), sr, written, example_path("multi/main.flac"))
    assert item.text == written
    assert item.spoken_text == "six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob."
    assert item.wer < 0.15


def write_clip(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tone = 0.2 * np.sin(2 * np.pi * 220 * np.arange(24000) / 24000)
    sf.write(folder / name, tone.astype(np.float32), 24000)


def test_training_transcripts_are_normalised_only_when_asked_and_the_cache_knows(tmp_path):
    from datasets import Dataset

    data_dir = tmp_path / "data"
    for name in ("a.wav", "b.wav"):
        write_clip(data_dir / "wavs", name)
    (data_dir / "metadata.csv").write_text("audio_file|text\nwavs/a.wav|Custa R$ 3,50.\nwavs/b.wav|São 2 gatos.\n", encoding="utf-8")
    data = DataConfig(path=str(data_dir), val_min_items=0)

    assert training_normaliser(TextNormConfig(language="pt-BR")) is None  # off unless apply_to_training
    as_written = prepare(data, progress=False)
    texts = ["".join(row["text"]) for row in Dataset.from_file(str(as_written.dir / "raw.arrow"))]
    assert texts == ["Custa R$ 3,50.", "São 2 gatos."]

    spoken = prepare(data, progress=False, normaliser=training_normaliser(TextNormConfig(language="pt-BR", apply_to_training=True)))
    texts = ["".join(row["text"]) for row in Dataset.from_file(str(spoken.dir / "raw.arrow"))]
    assert texts == ["Custa três reais e cinquenta centavos.", "São dois gatos."]
