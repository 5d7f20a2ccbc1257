"""Step 2, segment: where the speech is (silero-vad), and where to cut it into clips.

Speech probabilities come from silero-vad's model (shipped in its pip package) run on 16 kHz
audio, 32 ms frames. The decoded recording is streamed in blocks through a resampler and the
model's recurrent state is carried from block to block, so memory does not grow with the length
(the probabilities themselves take 4 bytes per 32 ms: 450 KB for an hour).

Cutting (:func:`plan`) is a pure function of those probabilities and the settings:

1. speech regions: silero's own rule (``get_speech_timestamps_from_probs``), pauses >= 100 ms;
2. a pause of at least ``max_pause_seconds`` always ends a clip;
3. a stretch still longer than ``max_seconds`` is split at its longest pause, again and again
   (preferring pauses that leave both sides at least ``min_seconds``);
4. a single region still too long (speech with no pause) is split at word boundaries from the
   ASR's word timestamps (:func:`word_cuts`), or, without words, at the least speech-like frame;
5. each clip keeps ``pad_seconds`` of the silence around it, at most half the pause to the next;
6. speech shorter than ``min_seconds`` (with its padding) is dropped and listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile

VAD_RATE = 16000
FRAME = 512  # samples of 16 kHz audio per probability
CONTEXT = 64  # samples of the previous frame the model sees with each frame
FRAMES_PER_CALL = 512  # ~16 s of audio per ONNX call
FRAME_SECONDS = FRAME / VAD_RATE
MIN_SPEECH_MS = 250
MIN_PAUSE_MS = 100
VAD_VERSION = 1  # bump when the probabilities would change (model, framing)
#: How a clip's ends were found, from the safest: in a pause, between words, anywhere.
CUT_KINDS = ("pause", "words", "forced")
WORDS_WINDOW_SECONDS = 120.0


@dataclass(frozen=True)
class Region:
    start: float  # seconds
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Piece:
    """Speech that becomes one clip: ``start``/``end`` bound the speech, ``cut`` says how its ends were found."""

    start: float
    end: float
    cut: str = "pause"  # pause | words | forced
    too_long: bool = False  # one region longer than the limit: needs word boundaries

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Span:
    """A clip's bounds in the recording (speech plus padding)."""

    start: float
    end: float
    speech_start: float
    speech_end: float
    cut: str
    dropped: str | None = None  # too_short: planned but not made

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Settings:
    min_seconds: float
    max_seconds: float
    max_pause_seconds: float
    pad_seconds: float
    threshold: float

    @property
    def limit(self) -> float:
        """The longest speech a clip may hold once padded on both sides."""
        return max(self.min_seconds, self.max_seconds - 2 * self.pad_seconds)


class Vad:
    """silero-vad's sequence model (ONNX, torch-free at run time), fed block by block."""

    def __init__(self) -> None:
        import torch  # deferred: torch costs 1.9 s (NOTES.md)

        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad  # its import sets torch to one thread for everyone

        torch.set_num_threads(threads)
        self._session = load_silero_vad(sequence=True).session


def speech_probabilities(vad: Vad, wav: Path, sample_rate: int, on_seconds: Callable[[float], None] = lambda s: None) -> np.ndarray:
    """One speech probability per 32 ms of ``wav`` (mono, ``sample_rate``), read in blocks."""
    import soxr  # deferred: soxr is an optional package (the [recordings] extra); data=csv_wavs imports this module without it

    resampler = None if sample_rate == VAD_RATE else soxr.ResampleStream(sample_rate, VAD_RATE, 1, dtype="float32")
    state = _State()
    pending = np.zeros(0, dtype=np.float32)
    probabilities: list[np.ndarray] = []
    block = int(FRAMES_PER_CALL * FRAME * sample_rate / VAD_RATE)
    with soundfile.SoundFile(str(wav)) as source:
        while True:
            data = source.read(block, dtype="float32")
            last = len(data) < block
            on_seconds(len(data) / sample_rate)
            chunk = resampler.resample_chunk(data, last=last) if resampler is not None else data
            pending = np.concatenate([pending, chunk.astype(np.float32, copy=False)])
            whole = len(pending) // FRAME * FRAME
            if last and len(pending) > whole:  # the final partial frame, zero-padded as silero does
                pending = np.concatenate([pending, np.zeros(FRAME - (len(pending) - whole), dtype=np.float32)])
                whole = len(pending)
            if whole:
                probabilities.append(state.run(vad._session, pending[:whole].reshape(-1, FRAME)))
                pending = pending[whole:]
            if last:
                break
    return np.concatenate(probabilities) if probabilities else np.zeros(0, dtype=np.float32)


class _State:
    """The model's recurrent state and the tail of the last frame, carried across blocks."""

    def __init__(self) -> None:
        self.hidden = np.zeros((1, 1, 128), dtype=np.float32)
        self.cell = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)

    def run(self, session, frames: np.ndarray) -> np.ndarray:  # noqa: ANN001 (onnxruntime.InferenceSession)
        out = []
        for first in range(0, len(frames), FRAMES_PER_CALL):
            part = frames[first:first + FRAMES_PER_CALL]
            contexts = np.empty((len(part), CONTEXT), dtype=np.float32)
            contexts[0] = self.context
            contexts[1:] = part[:-1, -CONTEXT:]
            self.context = part[-1, -CONTEXT:].copy()
            values, self.hidden, self.cell = session.run(
                ["speech_probs", "hn", "cn"], {"input": np.concatenate([contexts, part], axis=1), "h": self.hidden, "c": self.cell}
            )
            out.append(np.asarray(values, dtype=np.float32).reshape(-1))
        return np.concatenate(out)


def speech_regions(probabilities: np.ndarray, seconds: float, threshold: float) -> list[Region]:
    """silero's speech timestamps (no padding: :func:`plan` pads), in seconds."""
    from silero_vad.utils_vad import get_speech_timestamps_from_probs  # deferred: silero-vad is optional (the [recordings] extra) and loads torch (1.9 s, NOTES.md); a fully cached run never needs it

    stamps = get_speech_timestamps_from_probs(
        probabilities.tolist(), sampling_rate=VAD_RATE, threshold=threshold, min_speech_duration_ms=MIN_SPEECH_MS,
        min_silence_duration_ms=MIN_PAUSE_MS, speech_pad_ms=0, audio_length_samples=int(round(seconds * VAD_RATE)),
    )
    return [Region(item["start"] / VAD_RATE, min(seconds, item["end"] / VAD_RATE)) for item in stamps]


def plan(regions: Sequence[Region], settings: Settings) -> list[Piece]:
    """Pieces of speech, each one clip (steps 2-3 of the module docstring); ``too_long`` ones need words."""
    pieces: list[Piece] = []
    for passage in _passages(regions, settings.max_pause_seconds):
        pieces.extend(_split(passage, settings))
    return pieces


def _passages(regions: Sequence[Region], max_pause: float) -> list[list[Region]]:
    passages: list[list[Region]] = []
    for region in regions:
        if passages and region.start - passages[-1][-1].end < max_pause:
            passages[-1].append(region)
        else:
            passages.append([region])
    return passages


def _split(regions: list[Region], settings: Settings) -> list[Piece]:
    start, end = regions[0].start, regions[-1].end
    if end - start <= settings.limit:
        return [Piece(start, end)]
    if len(regions) == 1:
        return [Piece(start, end, too_long=True)]
    gaps = range(1, len(regions))  # gap i lies between regions i-1 and i

    def balanced(i: int) -> bool:
        return regions[i - 1].end - start >= settings.min_seconds and end - regions[i].start >= settings.min_seconds

    candidates = [i for i in gaps if balanced(i)] or list(gaps)
    middle = (start + end) / 2
    best = max(candidates, key=lambda i: (round(regions[i].start - regions[i - 1].end, 3), -abs(regions[i].start - middle)))
    return _split(regions[:best], settings) + _split(regions[best:], settings)


def word_cuts(piece: Piece, words: Sequence[tuple[float, float]], settings: Settings, probabilities: np.ndarray) -> list[Piece]:
    """Split a too-long ``piece`` at word boundaries (``words``: (start, end) seconds in the recording).

    The widest gap between words that leaves both sides at least ``min_seconds`` wins (the one
    nearest the middle among equals), recursively. With fewer than two words the cut falls on the
    least speech-like frame of the middle third (``cut="forced"``: flagged in the review).
    """
    inside = [(max(s, piece.start), min(e, piece.end)) for s, e in words if e > piece.start and s < piece.end]
    if piece.seconds <= settings.limit:
        return [Piece(piece.start, piece.end, piece.cut)]
    boundaries = [((a_end + b_start) / 2, b_start - a_end) for (_, a_end), (b_start, _) in zip(inside, inside[1:]) if b_start >= a_end - 0.05]
    boundaries = [(at, gap) for at, gap in boundaries if piece.start < at < piece.end]
    middle = (piece.start + piece.end) / 2
    if boundaries:
        fair = [b for b in boundaries if b[0] - piece.start >= settings.min_seconds and piece.end - b[0] >= settings.min_seconds]
        at, _ = max(fair or boundaries, key=lambda b: (round(b[1], 2), -abs(b[0] - middle)))
        kind = "words"
    else:
        at = quietest_moment(probabilities, piece.start + piece.seconds / 3, piece.end - piece.seconds / 3)
        kind = "forced"
    cut = max(piece.cut, kind, key=CUT_KINDS.index)  # a piece is as doubtful as its worst end
    left, right = Piece(piece.start, at, cut), Piece(at, piece.end, cut)
    return word_cuts(left, words, settings, probabilities) + word_cuts(right, words, settings, probabilities)


def windows(piece: Piece, probabilities: np.ndarray, longest: float = WORDS_WINDOW_SECONDS) -> list[Piece]:
    """``piece`` cut at its least speech-like moments into parts of at most ``longest`` seconds.

    Speech that never pauses for minutes (or noise the VAD takes for speech) is cut like this
    before the ASR looks for words in it, so no more than ``longest`` seconds are ever read at once.
    """
    if piece.seconds <= longest:
        return [piece]
    at = quietest_moment(probabilities, piece.start + piece.seconds / 3, piece.end - piece.seconds / 3)
    left, right = Piece(piece.start, at, "forced", True), Piece(at, piece.end, "forced", True)
    return windows(left, probabilities, longest) + windows(right, probabilities, longest)


def quietest_moment(probabilities: np.ndarray, start: float, end: float) -> float:
    first, last = int(start / FRAME_SECONDS), max(int(start / FRAME_SECONDS) + 1, int(end / FRAME_SECONDS))
    window = probabilities[first:last]
    if not len(window):
        return (start + end) / 2
    return (first + int(np.argmin(window)) + 0.5) * FRAME_SECONDS


def spans(pieces: Sequence[Piece], seconds: float, settings: Settings) -> list[Span]:
    """Clip bounds: each piece padded into the silence around it (never past half of it)."""
    out: list[Span] = []
    for index, piece in enumerate(pieces):
        before = piece.start - pieces[index - 1].end if index else piece.start
        after = pieces[index + 1].start - piece.end if index + 1 < len(pieces) else seconds - piece.end
        # a cut inside speech (words/forced) has no silence to share: both sides end at the cut
        pad_before = min(settings.pad_seconds, before / 2) if before > 0 else 0.0
        pad_after = min(settings.pad_seconds, after / 2) if after > 0 else 0.0
        start, end = max(0.0, piece.start - pad_before), min(seconds, piece.end + pad_after)
        dropped = "too_short" if end - start < settings.min_seconds else None
        out.append(Span(round(start, 4), round(end, 4), piece.start, piece.end, piece.cut, dropped))
    return out
