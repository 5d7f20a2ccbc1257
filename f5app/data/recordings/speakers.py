"""Who speaks when: speaker embeddings over short windows of the speech, clustered across the folder.

1. :func:`embed_regions`: resemblyzer embeddings of ``WINDOW_SECONDS`` windows every
   ``HOP_SECONDS`` inside each speech region silero-vad found (a region is read in pieces of at
   most ``CHUNK_SECONDS``, so memory does not grow with the recording).
2. :func:`find_speakers`: the windows of every recording of the folder clustered together
   (average linkage on cosine similarity, joined while clusters are at least ``SAME_SPEAKER``
   alike, or into ``data.num_speakers`` clusters), so an id means the same voice in every file.
   At most ``MAX_CLUSTERED`` windows are clustered (evenly spaced); the others only take the
   nearest speaker, so an hour or a day of audio costs the same clustering.
3. :func:`label_windows`: each window's speaker (its embedding averaged with its neighbours'),
   or none where it matches no speaker well or holds a share of a second voice (:func:`match`:
   two voices summed).
4. :func:`turns`: each region split where the speaker changes (at the least speech-like moment
   between the two windows), the parts labelled; a region with a window of no one is
   ``OVERLAP``. A speaker change is a cut the clips obey (:func:`plan_turns`).

Ids are ``S1``, ``S2``, ... by speech time, most first: ``S1`` is the main speaker.
The thresholds were measured on 40 conversations made of f5-tts's five shipped voices
(scripts/bench_speakers.py, docs/recordings.md): a window of one voice is 0.85 or more alike with
its voice's centroid (1st percentile) and holds a second voice's share of 0.16 at most (99th
percentile); a window of two voices summed is 0.76 alike (median) and holds a share of 0.21-0.50.
Clusters of one voice join at 0.77-0.80 alike (average cosine), of two voices at 0.43-0.65.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile

from f5app.config import SpeakerConfig
from f5app.data.recordings.segment import Piece, Region, Settings, plan, quietest_moment
from f5app.errors import UserError
from f5app.speech.speaker import EMBEDDING_SIZE, ResemblyzerEmbedder, build_embedder

SPEAKERS_VERSION = 1  # bump when the windows' embeddings would change
WINDOW_SECONDS = 1.5
HOP_SECONDS = 0.5
CHUNK_SECONDS = 60.0  # a region longer than this is embedded in pieces
BATCH_SECONDS = 120.0  # speech embedded at once (the STFT: ~16 bytes per 16 kHz sample, 30 MB)
MIN_WINDOW_SECONDS = 0.8  # regions shorter than this carry too little voice: they take their neighbours' speaker
SAME_SPEAKER = 0.70  # clusters at least this alike (average of their windows' cosine) are one voice
MATCH = 0.83  # a window less alike with every speaker's centroid is no one's clearly (two voices, or none)
MIXED = 0.30  # a window holding this share of a second voice is two voices at once (see match())
MIXTURE_FIT = 0.77  # a cluster this well explained by two larger ones ...
MIXTURE_SHARE = 0.30  # ... with this share of the second is their overlapping speech, not a voice (_drop_mixtures)
MIN_SPEAKER_WINDOWS = 2  # a lone window makes no speaker (a cough, a door); f5-tts's country.flac, 6.6 s of speech with many short pauses, gives 3
MAX_CLUSTERED = 3000  # windows clustered at once (pairwise distances: 36 MB); the rest are assigned
OVERLAP = "overlap"
ID_PATTERN = re.compile(r"S[1-9][0-9]*")
NO_SPEAKER = -1


@dataclass
class Windows:
    """One recording's speech windows: where each lies (seconds) and its embedding."""

    starts: np.ndarray
    ends: np.ndarray
    embeddings: np.ndarray  # (n, 256) unit length

    def to_array(self) -> np.ndarray:
        return np.concatenate([self.starts[:, None], self.ends[:, None], self.embeddings], axis=1).astype(np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> "Windows":
        values = np.asarray(values, dtype=np.float32)
        return cls(values[:, 0].astype(np.float64), values[:, 1].astype(np.float64), values[:, 2:])

    def __len__(self) -> int:
        return len(self.starts)


@dataclass
class Speakers:
    """The voices found in the folder, ranked by speech time (index 0 is ``S1``, the main speaker)."""

    centroids: np.ndarray  # (k, 256) unit length
    seconds: np.ndarray | None = None  # speech time of each, once ranked

    @property
    def ids(self) -> list[str]:
        return [speaker_id(index) for index in range(len(self.centroids))]


@dataclass(frozen=True)
class Turn:
    """Speech of one speaker (or ``OVERLAP``) inside one speech region."""

    start: float
    end: float
    speaker: str
    split: bool = False  # starts at a speaker change inside the region (no pause to cut in)


def speaker_id(index: int) -> str:
    return f"S{index + 1}"


def embed_regions(embedder: ResemblyzerEmbedder, wav: Path, sample_rate: int, regions: Sequence[Region]) -> Windows:
    """The windows of every region of ``wav`` (mono, ``sample_rate``) long enough to carry a voice,
    embedded ``BATCH_SECONDS`` of speech at a time (long regions in pieces of ``CHUNK_SECONDS``)."""
    pieces: list[tuple[float, float]] = []
    for region in regions:
        if region.seconds < MIN_WINDOW_SECONDS:
            continue
        start = region.start
        while start < region.end - 1e-6:
            end = min(region.end, start + CHUNK_SECONDS)
            if region.end - end < WINDOW_SECONDS:  # no short tail piece: it would hold one short window
                end = region.end
            pieces.append((start, end))
            start = end
    starts, ends, embeddings = [], [], []
    with soundfile.SoundFile(str(wav)) as source:
        group: list[tuple[float, float]] = []
        for index, piece in enumerate(pieces):
            group.append(piece)
            if index + 1 < len(pieces) and sum(b - a for a, b in group) < BATCH_SECONDS:
                continue
            audio = []
            for a, b in group:
                source.seek(int(a * sample_rate))
                audio.append(source.read(max(1, int((b - a) * sample_rate)), dtype="float32"))
            for (a, b), (found, offsets) in zip(group, embedder.embed_windows(audio, sample_rate, WINDOW_SECONDS, HOP_SECONDS)):
                starts.append(a + offsets)
                ends.append(np.minimum(a + offsets + WINDOW_SECONDS, b))
                embeddings.append(found)
            group = []
    if not starts:
        return Windows(np.zeros(0), np.zeros(0), np.zeros((0, EMBEDDING_SIZE), dtype=np.float32))
    return Windows(np.concatenate(starts), np.concatenate(ends), np.concatenate(embeddings).astype(np.float32))


def find_speakers(embeddings: np.ndarray, num_speakers: int | None = None) -> Speakers:
    """The voices among ``embeddings`` (every window of the folder), unranked (:func:`diarise` ranks them)."""
    from scipy.cluster.hierarchy import fcluster, linkage  # deferred: scipy is an optional package (the [recordings] extra); data=csv_wavs imports this module without it

    if len(embeddings) == 0:
        return Speakers(np.zeros((0, EMBEDDING_SIZE), dtype=np.float32))
    if len(embeddings) == 1:
        return Speakers(_unit(embeddings))
    step = max(1, int(np.ceil(len(embeddings) / MAX_CLUSTERED)))
    sample = embeddings[::step].astype(np.float64)
    tree = linkage(sample, method="average", metric="cosine")
    if num_speakers:
        labels = fcluster(tree, t=num_speakers, criterion="maxclust")
    else:
        labels = fcluster(tree, t=1.0 - SAME_SPEAKER, criterion="distance")
    groups = [sample[labels == label] for label in np.unique(labels)]
    big = [group for group in groups if len(group) * step >= MIN_SPEAKER_WINDOWS] or [max(groups, key=len)]
    centroids = _unit(np.stack([group.mean(axis=0) for group in big]))
    if not num_speakers:
        centroids = _drop_mixtures(centroids, embeddings)
    return Speakers(_refine(centroids, embeddings))


def _refine(centroids: np.ndarray, embeddings: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Centroids again from the windows that clearly belong to one voice (not the overlaps)."""
    for _ in range(rounds):
        index, best, share = match(embeddings, centroids)
        clear = (best >= MATCH) & (share < MIXED)
        fresh = []
        for k in range(len(centroids)):
            members = embeddings[clear & (index == k)]
            fresh.append(members.mean(axis=0) if len(members) else centroids[k])
        centroids = _unit(np.stack(fresh))
    return centroids.astype(np.float32)


def _drop_mixtures(centroids: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Leave out a cluster that is two others at once (a stretch of overlapping speech).

    Its centroid is well explained by the two nearest larger clusters' centroids together
    (:func:`mixture_fit`: at least ``MIXTURE_FIT``, with a share of the second of at least
    ``MIXTURE_SHARE``); a voice of its own is not. Measured: 3 s overlaps' clusters fit 0.78-0.81
    with shares 0.40-0.45; real voices fit 0.56-0.76 (f5-tts's country.flac beside rainbow and
    chinese: 0.76, share 0.33). A mixture cluster this misses stays a small speaker of its own,
    ranked last (so never ``main``).
    """
    if len(centroids) < 3:
        return centroids
    index, _, _ = match(embeddings, centroids)
    sizes = np.bincount(index, minlength=len(centroids))
    keep = np.ones(len(centroids), dtype=bool)
    for k in range(len(centroids)):
        larger = [j for j in range(len(centroids)) if j != k and sizes[j] > sizes[k]]
        if len(larger) >= 2:
            share, fit = mixture_fit(centroids[k], centroids[larger])
            keep[k] = not (fit >= MIXTURE_FIT and share >= MIXTURE_SHARE)
    return centroids[keep]


def mixture_fit(embedding: np.ndarray, centroids: np.ndarray) -> tuple[float, float]:
    """How well ``embedding`` is a sum of its two nearest ``centroids``: the second's share, and
    the cosine between the embedding and that best sum."""
    similar = np.asarray(centroids, dtype=np.float64) @ np.asarray(embedding, dtype=np.float64)
    first, second = np.argsort(-similar)[:2]
    s1, s2 = similar[first], similar[second]
    a, b = _two_voices(s1, s2, float(np.dot(centroids[first], centroids[second])))
    return float(b / max(1e-6, a + b)), float(np.sqrt(max(0.0, a * s1 + b * s2)))


def label_windows(windows: Windows, speakers: Speakers) -> np.ndarray:
    """Each window's speaker index, or NO_SPEAKER where it is no one's clearly (two voices at once)."""
    if len(windows) == 0 or len(speakers.centroids) == 0:
        return np.full(len(windows), NO_SPEAKER, dtype=np.int64)
    index, best, share = match(smoothed(windows), speakers.centroids)
    return np.where((best >= MATCH) & (share < MIXED), index, NO_SPEAKER)


def smoothed(windows: Windows) -> np.ndarray:
    """Each window's embedding averaged with its neighbours' in the same stretch of speech (one
    hop away). Noise and a quieter word wander from window to window; a voice, or two voices at
    once for a second or more, holds: measured on a 3-voice conversation at 15 dB SNR, the
    windows of one voice taken for two fell from 6 of 110 to none."""
    embeddings = np.asarray(windows.embeddings, dtype=np.float64)
    if len(embeddings) < 2:
        return embeddings
    out = embeddings.copy()
    near = np.abs(np.diff(windows.starts) - HOP_SECONDS) < 0.01  # window i and i+1 follow each other (starts are float32 in the cache)
    out[1:] += np.where(near[:, None], embeddings[:-1], 0.0)
    out[:-1] += np.where(near[:, None], embeddings[1:], 0.0)
    return _unit(out)


def turns(windows: Windows, labels: np.ndarray, regions: Sequence[Region], probabilities: np.ndarray, ids: list[str]) -> list[Turn]:
    """``regions`` split where the speaker changes; each part with its speaker's id or ``OVERLAP``.

    A whole region is ``OVERLAP`` when any window of it is no one's clearly: where one voice
    drowns the other, the embeddings see the second only in a window or two (measured: 1 of 4
    windows of a 3 s overlap), and a speaker's clips must not hold another voice. A region
    without windows of its own (shorter than ``MIN_WINDOW_SECONDS``) takes the speaker of the
    nearest window in time; with no window anywhere, the first speaker's.
    """
    names = [*ids, OVERLAP]  # NO_SPEAKER (-1) indexes OVERLAP
    centres = (windows.starts + windows.ends) / 2
    out: list[Turn] = []
    for region in regions:
        inside = np.flatnonzero((centres >= region.start) & (centres <= region.end))
        if not len(inside):
            nearest = int(np.argmin(np.abs(centres - (region.start + region.end) / 2))) if len(centres) else None
            out.append(Turn(region.start, region.end, names[0] if nearest is None else names[labels[nearest]]))
            continue
        if np.any(labels[inside] == NO_SPEAKER):
            out.append(Turn(region.start, region.end, OVERLAP))
            continue
        mine = labels[inside]
        start, split = region.start, False
        for i in range(len(inside) - 1):
            if mine[i] != mine[i + 1]:
                at = quietest_moment(probabilities, centres[inside[i]], centres[inside[i + 1]])
                out.append(Turn(start, at, names[mine[i]], split))
                start, split = at, True
        out.append(Turn(start, region.end, names[mine[-1]], split))
    return out


@dataclass
class Heard:
    """What the speaker step needs of one recording."""

    windows: Windows
    regions: Sequence[Region]
    probabilities: np.ndarray  # silero-vad's, one per segment.FRAME_SECONDS


def diarise(recordings: Sequence[Heard], num_speakers: int | None = None) -> tuple[Speakers, list[list[Turn]], list[np.ndarray]]:
    """The voices of a folder (its recordings' windows clustered together) ranked by speech time,
    with ``seconds`` set; each recording's turns; and each recording's window labels (ranked
    speaker index, or NO_SPEAKER)."""
    dimension = next((h.windows.embeddings.shape[1] for h in recordings if len(h.windows)), EMBEDDING_SIZE)
    everything = np.concatenate([h.windows.embeddings for h in recordings if len(h.windows)] or [np.zeros((0, dimension), dtype=np.float32)])
    found = find_speakers(everything, num_speakers)
    if not len(found.centroids) and any(h.regions for h in recordings):  # only speech too short to embed: one voice
        found = Speakers(np.zeros((1, dimension), dtype=np.float32))
    labels = [label_windows(h.windows, found) for h in recordings]
    provisional = [str(k) for k in range(len(found.centroids))]
    heard = [turns(h.windows, lab, h.regions, h.probabilities, provisional) for h, lab in zip(recordings, labels)]
    seconds = np.zeros(len(found.centroids))
    for turn in (t for found_turns in heard for t in found_turns):
        if turn.speaker != OVERLAP:
            seconds[int(turn.speaker)] += turn.end - turn.start
    order = np.argsort(-seconds, kind="stable")
    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order))
    ranked = Speakers(found.centroids[order], seconds[order])
    named = [[replace(t, speaker=t.speaker if t.speaker == OVERLAP else speaker_id(int(rank_of[int(t.speaker)]))) for t in found_turns]
             for found_turns in heard]
    relabelled = [np.where(lab == NO_SPEAKER, NO_SPEAKER, rank_of[np.maximum(lab, 0)]) if len(rank_of) else lab for lab in labels]
    return ranked, named, relabelled


def plan_turns(found: Sequence[Turn], settings: Settings) -> list[tuple[Piece, str]]:
    """Clip pieces that never cross a speaker change: :func:`segment.plan` on each run of one
    speaker's turns. A piece that begins or ends at a change inside a region is ``forced``."""
    changes = {turn.start for turn in found if turn.split}
    out: list[tuple[Piece, str]] = []
    run: list[Turn] = []
    for turn in [*found, None]:
        if run and (turn is None or turn.speaker != run[-1].speaker):
            for piece in plan([Region(t.start, t.end) for t in run], settings):
                if piece.start in changes or piece.end in changes:
                    piece = replace(piece, cut="forced")
                out.append((piece, run[-1].speaker))
            run = []
        if turn is not None:
            run.append(turn)
    return out


def select(setting: str, ids: list[str]) -> set[str]:
    """The ids ``data.speaker`` keeps: ``all``, ``main`` (S1), ``N`` (the N who speak most) or one id."""
    wrong = check_setting(setting)
    if wrong:
        raise UserError(wrong)
    value = str(setting).strip()
    if value == "all":
        return set(ids)
    if value == "main":
        return set(ids[:1])
    if value.isdigit():
        return set(ids[: int(value)])
    if value.upper() in ids:
        return {value.upper()}
    found = ", ".join(ids) or "none"
    raise UserError(f"data.speaker={setting} is not all, main, a number of speakers or a speaker found in these recordings (found: {found})")


def check_setting(setting: str) -> str | None:
    """What is wrong with ``data.speaker`` before any speaker is found, or None."""
    value = str(setting).strip()
    if value in ("all", "main") or (value.isdigit() and int(value) >= 1) or ID_PATTERN.fullmatch(value.upper()):
        return None
    return f"data.speaker={setting} must be all, main, a number N >= 1 (the N who speak most) or a speaker id such as S2"


def clearest(recordings: Sequence[Windows], labels: Sequence[np.ndarray], voices: Speakers) -> list[tuple[int, float, float] | None]:
    """For each speaker, where its window most like its centroid lies: (recording index, start, end)."""
    out: list[tuple[int, float, float] | None] = []
    for k, centroid in enumerate(voices.centroids):
        best: tuple[float, int, float, float] | None = None
        for r, (windows, found) in enumerate(zip(recordings, labels)):
            mine = np.flatnonzero(found == k)
            if len(mine):
                scores = windows.embeddings[mine] @ centroid
                i = mine[int(np.argmax(scores))]
                if best is None or float(scores.max()) > best[0]:
                    best = (float(scores.max()), r, float(windows.starts[i]), float(windows.ends[i]))
        out.append(None if best is None else best[1:])
    return out


def load_embedder() -> ResemblyzerEmbedder:
    """The bundled resemblyzer encoder (its weights ship in the package: offline)."""
    embedder = build_embedder(SpeakerConfig(name="resemblyzer"))
    assert isinstance(embedder, ResemblyzerEmbedder)
    return embedder


def match(embeddings: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each embedding's nearest centroid (index), its cosine with it, and the second voice's share.

    The share is how much of the second-nearest centroid the embedding holds, once the first is
    accounted for: ``e ~ a*c1 + b*c2`` by least squares, share ``b / (a + b)``. One voice alike
    with another's centroid only as much as the two voices are alike gives ~0; two voices summed
    give a share of both (scripts/bench_speakers.py prints both distributions).
    """
    similar = np.asarray(embeddings, dtype=np.float64) @ np.asarray(centroids, dtype=np.float64).T
    rows = np.arange(len(similar))
    if similar.shape[1] < 2:
        index = np.zeros(len(similar), dtype=np.int64)
        return index, similar[:, 0] if similar.shape[1] else np.zeros(len(similar)), np.zeros(len(similar))
    order = np.argsort(-similar, axis=1)
    index, other = order[:, 0], order[:, 1]
    s1, s2 = similar[rows, index], similar[rows, other]
    g = np.sum(np.asarray(centroids, dtype=np.float64)[index] * np.asarray(centroids, dtype=np.float64)[other], axis=1)
    a, b = _two_voices(s1, s2, g)
    return index, s1, b / np.maximum(a + b, 1e-6)


def _two_voices(s1, s2, g):  # noqa: ANN001, ANN202 (floats or arrays alike)
    """``e ~ a*c1 + b*c2`` by least squares, from the embedding's cosines ``s1``, ``s2`` with two unit
    centroids whose own cosine is ``g``; ``b`` clipped at 0 (no negative share of a voice)."""
    denominator = np.maximum(1.0 - np.square(g), 1e-6)
    return (s1 - s2 * g) / denominator, np.maximum((s2 - s1 * g) / denominator, 0.0)


def _unit(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values / np.maximum(np.linalg.norm(values, axis=-1, keepdims=True), 1e-12)

