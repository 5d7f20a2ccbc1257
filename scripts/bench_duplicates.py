"""The duplicate-clip threshold, measured: fingerprint scores of the same audio against different audio.

    python scripts/bench_duplicates.py

Same audio: each of f5-tts's five shipped recordings against a copy of itself at -12 dB, with
white noise at 20 and 10 dB SNR, resampled 44.1/24 -> 16 -> 24 kHz, started 37 samples later,
and against its own first half (one recording inside another). Different audio: the two halves of
one recording (the same speaker, other words) and every pair of different recordings (other
speakers). Prints the lowest and highest score of each condition and the threshold's margins
(f5app/data/recordings/duplicates.py, MATCH_THRESHOLD).
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from f5app.audio.io import read_audio, resample  # noqa: E402
from f5app.data.recordings import duplicates  # noqa: E402

RECORDINGS = ["basic/basic_ref_en.wav", "basic/basic_ref_zh.wav", "multi/main.flac", "multi/town.flac", "multi/country.flac"]
RATE = 24000


def example(name: str) -> np.ndarray:
    import f5_tts

    wav, _ = read_audio(Path(f5_tts.__path__[0]) / "infer/examples" / name, target_sr=RATE, mono=True)
    return wav


def with_noise(wav: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    power = float(np.mean(wav**2)) / 10 ** (snr_db / 10)
    return wav + np.random.default_rng(seed).normal(0, np.sqrt(power), len(wav)).astype(np.float32)


def same_audio_variants(wav: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    return {
        "same audio, -12 dB": wav * 10 ** (-12 / 20),
        "same audio, noise 20 dB SNR": with_noise(wav, 20, seed),
        "same audio, noise 10 dB SNR": with_noise(wav, 10, seed),
        "same audio, resampled via 16 kHz": resample(resample(wav, RATE, 16000), 16000, RATE),
        "same audio, shifted 37 samples": wav[37:],
        "same audio, its first half (inside the whole)": wav[: len(wav) // 2],
    }


def main() -> None:
    started = time.perf_counter()
    waves = {name: example(name) for name in RECORDINGS}
    scores: dict[str, list[float]] = {}

    def score(condition: str, a: np.ndarray, b: np.ndarray) -> None:
        value, _, _ = duplicates.compare(duplicates.fingerprint(a, RATE), duplicates.fingerprint(b, RATE))
        scores.setdefault(condition, []).append(value)

    for seed, (name, wav) in enumerate(waves.items()):
        for condition, variant in same_audio_variants(wav, seed).items():
            score(condition, wav, variant)
        half = len(wav) // 2
        score("different audio, same speaker (two halves)", wav[:half], wav[half:] * 0.7)
    for (_, a), (_, b) in itertools.combinations(waves.items(), 2):
        score("different audio, different speakers", a, b)

    same = [v for c, values in scores.items() if c.startswith("same") for v in values]
    different = [v for c, values in scores.items() if c.startswith("different") for v in values]
    print(f"{'condition':50s} {'pairs':>5s} {'lowest':>7s} {'highest':>7s}")
    for condition, values in scores.items():
        print(f"{condition:50s} {len(values):5d} {min(values):7.3f} {max(values):7.3f}")
    threshold = duplicates.MATCH_THRESHOLD
    print(f"\nthreshold {threshold}: lowest same-audio score {min(same):.3f} ({min(same) / threshold:.1f}x the threshold), "
          f"highest different-audio score {max(different):.3f} ({max(different) / threshold:.2f}x)")
    print(f"all same-audio pairs found: {all(v >= threshold for v in same)}; "
          f"no different-audio pair found: {all(v < threshold for v in different)}; {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
