#!/usr/bin/env python3
"""Rebuild the bundled demo data set (f5app/assets/demo/) with espeak-ng.

    apt-get install -y espeak-ng          # Debian/Ubuntu; the only external tool needed
    python scripts/make_demo_data.py      # rewrites f5app/assets/demo/{metadata.csv,wavs/}

The transcripts are the first four Harvard sentence lists (IEEE 1969 "Recommended Practice for
Speech Quality Measurements"), which are in the public domain. Each is spoken by espeak-ng's
en-us voice, trimmed of leading/trailing silence and stored as 16 kHz mono 16-bit FLAC, so the
whole set stays well under 3 MB. The output is deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

DEMO_DIR = Path(__file__).resolve().parent.parent / "f5app" / "assets" / "demo"
SAMPLE_RATE = 16000
VOICE = "en-us"
WORDS_PER_MINUTE = 155

HARVARD_SENTENCES = [
    # list 1
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    # list 2
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    # list 3
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    # list 4
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
]


def synthesise(text: str, workdir: Path) -> tuple[np.ndarray, int]:
    wav_path = workdir / "utterance.wav"
    subprocess.run(
        ["espeak-ng", "-v", VOICE, "-s", str(WORDS_PER_MINUTE), "-w", str(wav_path), text],
        check=True,
        capture_output=True,
    )
    audio, rate = sf.read(str(wav_path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


def trim_silence(audio: np.ndarray, rate: int, threshold: float = 0.01, pad_seconds: float = 0.08) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    pad = int(pad_seconds * rate)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return audio
    import torch
    import torchaudio.functional

    return torchaudio.functional.resample(torch.from_numpy(audio).unsqueeze(0), rate, target).squeeze(0).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help=f"output folder (default {DEMO_DIR})")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        print("espeak-ng not found; install it with: apt-get install -y espeak-ng", file=sys.stderr)
        return 1

    wavs = args.out / "wavs"
    if wavs.exists():
        shutil.rmtree(wavs)
    wavs.mkdir(parents=True)
    lines = ["audio_file|text"]
    total_seconds = 0.0
    with tempfile.TemporaryDirectory() as workdir:
        for number, text in enumerate(HARVARD_SENTENCES, start=1):
            audio, rate = synthesise(text, Path(workdir))
            audio = resample(trim_silence(audio, rate), rate, SAMPLE_RATE)
            audio = 0.9 * audio / max(float(np.abs(audio).max()), 1e-6)
            name = f"harvard_{number:03d}.flac"
            sf.write(str(wavs / name), audio, SAMPLE_RATE, subtype="PCM_16")
            lines.append(f"wavs/{name}|{text}")
            total_seconds += len(audio) / SAMPLE_RATE
    (args.out / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    size = sum(path.stat().st_size for path in args.out.rglob("*") if path.is_file())
    print(f"wrote {len(HARVARD_SENTENCES)} clips, {total_seconds:.1f} s, {size / 1e6:.2f} MB to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
