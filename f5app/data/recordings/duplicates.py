"""Clips that hold the same audio: a landmark fingerprint per clip, and the clips that share one.

A fingerprint is a set of spectral landmarks (the Shazam idea, Wang 2003): peaks of the log
spectrogram of the clip at 8 kHz, each paired with a few later peaks nearby; a pair's
(frequency, frequency step, time step) is one hash, stored with the frame it starts at. The
same audio gives the same hashes at a constant frame offset, whatever its level, a moderate
noise, another sample rate, or where the clip was cut; different speech, even by the same
voice, shares only chance hashes at scattered offsets.

Two clips match when, at their best offset (give or take a frame), the hashes that agree are at
least :data:`MATCH_THRESHOLD` of the hashes either clip has in the stretch they share, over at
least :data:`MIN_SHARED_SECONDS`. That catches a clip inside another and two clips that
overlap, within a recording or across recordings (one recording being part of another).

Threshold measured by ``scripts/bench_duplicates.py`` on f5-tts's shipped recordings (see
docs/recordings.md): the same audio at -12 dB, with white noise at 20 dB and 10 dB SNR,
resampled, shifted and cut in half scores 0.21-1.0; different speech by the same speaker (the
two halves of one recording) and by different speakers at most 0.003.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.ndimage import maximum_filter

from f5app.audio.io import resample

FINGERPRINT_VERSION = 1  # bump when the hashes would change
RATE = 8000
N_FFT = 512
HOP = 128  # 16 ms frames
FRAME_SECONDS = HOP / RATE
LOW_BIN, HIGH_BIN = 13, 224  # 200-3500 Hz: where speech has its energy and phones/codecs keep it
PEAK_NEIGHBOURHOOD = (21, 15)  # bins x frames: a peak is the loudest point of ~330 Hz x ~240 ms
PEAK_FLOOR_DB = 45.0  # peaks more than this below the loudest frame are silence or hiss
FAN_OUT = 5  # later peaks each peak is paired with
MAX_DT = 40  # frames (0.64 s) ahead a paired peak may lie
MAX_DF = 64  # bins (1 kHz) above or below
COMMON_HASH = 64  # a hash held more often than this across all clips is too common to tell clips apart
MATCH_THRESHOLD = 0.1  # see the module docstring and docs/recordings.md for the measurement
MIN_SHARED_SECONDS = 1.0
MIN_VOTES = 8


@dataclass(frozen=True)
class Fingerprint:
    hashes: np.ndarray  # int64
    frames: np.ndarray  # int32, the frame each hash starts at
    length: int  # frames in the clip

    def to_arrays(self) -> np.ndarray:
        """One (n + 1, 2) int64 array (the first row holds the length) for a ``.npy`` cache file."""
        head = np.array([[self.length, 0]], dtype=np.int64)
        return np.concatenate([head, np.stack([self.hashes, self.frames.astype(np.int64)], axis=1).reshape(-1, 2)])

    @classmethod
    def from_arrays(cls, array: np.ndarray) -> "Fingerprint":
        return cls(array[1:, 0].astype(np.int64), array[1:, 1].astype(np.int32), int(array[0, 0]))


@dataclass(frozen=True)
class Match:
    first: str  # a clip's name
    second: str
    score: float  # agreeing hashes / the hashes either clip has in the shared stretch
    shared_seconds: float
    offset_seconds: float  # where ``second`` starts in ``first`` (negative: before it)


def fingerprint(wav: np.ndarray, sample_rate: int) -> Fingerprint:
    """The landmark hashes of a mono clip."""
    audio = resample(np.asarray(wav, dtype=np.float32), int(sample_rate), RATE)
    if len(audio) < N_FFT:
        return Fingerprint(np.zeros(0, np.int64), np.zeros(0, np.int32), 0)
    frames = np.lib.stride_tricks.sliding_window_view(audio, N_FFT)[::HOP] * np.hanning(N_FFT).astype(np.float32)
    spectrum = np.abs(np.fft.rfft(frames, axis=1))[:, LOW_BIN:HIGH_BIN].T  # (bins, frames)
    level = 20 * np.log10(spectrum + 1e-9)
    peaks = (level == maximum_filter(level, size=PEAK_NEIGHBOURHOOD, mode="constant", cval=-np.inf)) & (
        level > level.max() - PEAK_FLOOR_DB
    )
    bins, times = np.nonzero(peaks)
    order = np.argsort(times, kind="stable")
    bins, times = bins[order], times[order]
    hashes, starts = [], []
    for index in range(len(times)):
        later = index + 1
        paired = 0
        while later < len(times) and times[later] - times[index] <= MAX_DT and paired < FAN_OUT:
            dt, df = times[later] - times[index], bins[later] - bins[index]
            if dt > 0 and abs(df) <= MAX_DF:
                hashes.append((int(bins[index]) << 16) | ((int(df) + 128) << 8) | int(dt))
                starts.append(int(times[index]))
                paired += 1
            later += 1
    return Fingerprint(np.asarray(hashes, dtype=np.int64), np.asarray(starts, dtype=np.int32), int(len(frames)))


def compare(first: Fingerprint, second: Fingerprint) -> tuple[float, float, float]:
    """``(score, shared seconds, offset seconds)`` of two fingerprints at their best offset."""
    return _score(first, second, _offset_votes(first, second))


def find_matches(prints: dict[str, Fingerprint], threshold: float = MATCH_THRESHOLD) -> list[Match]:
    """Every pair of clips that holds the same audio (one inverted index over all hashes)."""
    names = list(prints)
    index: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for number, name in enumerate(names):
        for value, frame in zip(prints[name].hashes.tolist(), prints[name].frames.tolist()):
            index[value].append((number, frame))
    votes: dict[tuple[int, int], Counter] = defaultdict(Counter)
    for entries in index.values():
        if len(entries) < 2 or len(entries) > COMMON_HASH:
            continue
        for a in range(len(entries)):
            for b in range(a + 1, len(entries)):
                (ca, ta), (cb, tb) = entries[a], entries[b]
                if ca == cb:
                    continue
                if ca > cb:
                    (ca, ta), (cb, tb) = (cb, tb), (ca, ta)
                votes[(ca, cb)][ta - tb] += 1
    matches = []
    for (ca, cb), counter in votes.items():
        if sum(counter.values()) < MIN_VOTES:
            continue
        score, shared, offset = _score(prints[names[ca]], prints[names[cb]], counter)
        if score >= threshold and shared >= MIN_SHARED_SECONDS:
            matches.append(Match(names[ca], names[cb], round(score, 3), round(shared, 2), round(offset, 2)))
    return sorted(matches, key=lambda m: (m.first, m.second))


def groups(names: Sequence[str], matches: Sequence[Match]) -> list[list[str]]:
    """Clips joined by any chain of matches (each group has two or more), in ``names`` order."""
    parent = {name: name for name in names}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for match in matches:
        parent[root(match.second)] = root(match.first)
    members: dict[str, list[str]] = defaultdict(list)
    for name in names:
        members[root(name)].append(name)
    return [group for group in members.values() if len(group) > 1]


def _offset_votes(first: Fingerprint, second: Fingerprint) -> Counter:
    by_hash: dict[int, list[int]] = defaultdict(list)
    for value, frame in zip(second.hashes.tolist(), second.frames.tolist()):
        by_hash[value].append(frame)
    votes: Counter = Counter()
    for value, frame in zip(first.hashes.tolist(), first.frames.tolist()):
        for other in by_hash.get(value, ()):
            votes[frame - other] += 1
    return votes


def _score(first: Fingerprint, second: Fingerprint, votes: Counter) -> tuple[float, float, float]:
    """Agreeing hashes at the best offset (+-1 frame) over the hashes each clip has where they overlap."""
    if not votes:
        return 0.0, 0.0, 0.0
    offset = max(votes, key=lambda d: (votes[d - 1] + votes[d] + votes[d + 1], -abs(d)))
    agreeing = votes[offset - 1] + votes[offset] + votes[offset + 1]
    # frame t of ``second`` lies at frame t + offset of ``first``
    start, end = max(0, offset), min(first.length, second.length + offset)
    if end <= start:
        return 0.0, 0.0, offset * FRAME_SECONDS
    in_first = int(np.count_nonzero((first.frames >= start) & (first.frames < end)))
    in_second = int(np.count_nonzero((second.frames + offset >= start) & (second.frames + offset < end)))
    score = agreeing / max(1, min(in_first, in_second))
    return min(1.0, score), (end - start) * FRAME_SECONDS, offset * FRAME_SECONDS
