"""Tiny voice data and in-process training runs for the training tests."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np

SENTENCES = [
    "the birch canoe slid on the smooth planks",
    "glue the sheet to the dark blue background",
    "it is easy to tell the depth of a well",
    "these days a chicken leg is a rare dish",
    "rice is often served in round bowls",
    "the juice of lemons makes fine punch",
    "the box was thrown beside the parked truck",
    "the hogs were fed chopped corn and garbage",
    "four hours of steady work faced us",
    "a large size in stockings is hard to sell",
]


def make_voice_folder(root: Path, count: int = 8, sample_rate: int = 16000) -> Path:
    """A metadata.csv + wavs/ folder of short tonal 'utterances' (upstream's header layout)."""
    import soundfile

    folder = root / "voice"
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["audio_file|text"]
    for i in range(count):
        seconds = 0.6 + 0.1 * (i % 5)
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        pitch = 110 + 20 * i
        wav = 0.3 * np.sin(2 * np.pi * pitch * t) * np.hanning(t.size) + 0.01 * rng.standard_normal(t.size)
        soundfile.write(folder / "wavs" / f"clip{i:02d}.wav", wav.astype(np.float32), sample_rate)
        lines.append(f"wavs/clip{i:02d}.wav|{SENTENCES[i % len(SENTENCES)]}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def tiny_overrides(data_dir: Path, **extra: object) -> list[str]:
    """The demo experiment on ``data_dir``, quiet and small enough for a test."""
    overrides = {
        "experiment": "demo",
        "data": "csv_wavs",
        "data.path": str(data_dir),
        "data.prepared_dir": str(data_dir.parent / "prepared"),
        "data.frames_per_gpu": 400,
        "data.max_samples": 4,
        "data.val_fraction": 0.25,
        "logger": "none",
        "trainer.progress_bar": False,
        "trainer.sample_every": 0,
        "eval.every": 0,  # evaluation has its own tests (tests/test_train_eval.py)
        "trainer.deterministic": True,
        "trainer.async_save": True,
    }
    overrides.update(extra)
    return [f"{key}={value}" for key, value in overrides.items()]


def train_in_process(compose_cfg, run_dir: Path, overrides: list[str]):
    """Run the trainer exactly as the entry point does, minus Hydra's job runner."""
    from accelerate.state import AcceleratorState, PartialState

    from f5app.train import run

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
    cfg = compose_cfg("train", overrides)
    return run(cfg, run_dir)


#: f5-tts's shipped English recordings and their words (basic.toml's ref_text; tiny.en's transcripts, NOTES.md).
ENGLISH_RECORDINGS = {
    "basic/basic_ref_en.wav": "Some call me nature, others call me mother nature.",
    "multi/main.flac": "6 spoons of fresh snow peas, 5 thick slabs of blue cheese and maybe a snack for her brother Bob.",
    "multi/town.flac": "The difference in the rainbow depends considerably upon the size of the drops, and the width of "
                       "the coloured band increases as the size of the drops increases.",
}


def make_english_folder(root: Path) -> Path:
    """A metadata.csv naming f5-tts's three English example recordings (absolute paths, nothing copied):
    the base language a replay set keeps in training."""
    from tests.infer_fixtures import upstream_ref_wav

    examples = upstream_ref_wav().parent.parent
    folder = root / "english"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["audio_file|text"] + [f"{examples / name}|{text}" for name, text in ENGLISH_RECORDINGS.items()]
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def free_port() -> int:
    """A TCP port free on the loopback now (for a server or a gloo rendezvous: parallel test workers must not share 29500)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
