"""Step 1, read: find the recordings, then decode each in blocks, mixed to mono and resampled.

Every file soundfile decodes is taken (wav, flac, ogg/opus, mp3, aiff…), at any rate, with any
number of channels. A file is streamed ``BLOCK_SECONDS`` at a time through a streaming resampler
(soxr) into one 16-bit mono file at the model's rate in the cache, so a multi-hour recording never
sits decoded in memory; later steps read that file by ranges. While decoding, the samples at full
scale are counted per ``CLIP_WINDOW_SECONDS`` of the source, which is how clipping is judged
later (resampling smears a clipped plateau, so it is counted before).

A recording is known by the sha256 of its bytes: renaming or touching it costs no work, editing
it does. The hash is remembered by (size, mtime) so an unchanged file is not read to hash it again.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile

from f5app.files import atomic_write, kind_of, open_regular, read_json_object, sha256_file, write_json_atomic

#: What soundfile (libsndfile >= 1.1) decodes; other files in the folder are not audio to us.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf", ".w64", ".rf64")
#: Audio that libsndfile cannot decode: each such file is one line in the review, saying to convert it.
UNDECODABLE_SUFFIXES = (".m4a", ".aac", ".mp4", ".wma", ".webm", ".mkv", ".amr", ".ape", ".wv", ".mka")
#: Written into every work folder, so that a folder of recordings holding an old one never reads its clips as recordings.
WORK_DIR_MARKER = ".f5app_recordings_work_dir"
BLOCK_SECONDS = 10.0
#: A sample at or above this magnitude counts as clipped.
CLIP_LEVEL = 0.999
CLIP_WINDOW_SECONDS = 0.1
READ_VERSION = 1


@dataclass(frozen=True)
class Recording:
    path: Path  # absolute
    name: str  # relative to data.path, as the review shows it
    sha256: str
    size: int


@dataclass(frozen=True)
class Problem:
    """One line of the review about a whole recording (it gave no clips, or was skipped)."""

    source: str
    reason: str  # unreadable | undecodable_format | outside_folder | not_a_file | empty | duplicate | no_speech | transcript_file
    detail: str


def find_audio(root: Path, skip: list[Path], follow_links: bool = False) -> tuple[list[Path], list[Problem]]:
    """Audio files under ``root`` (a folder, searched recursively, or one file), sorted by path.

    Hidden entries, the folders in ``skip`` and every work folder of ours (marked by
    :data:`WORK_DIR_MARKER`) are left out; files whose suffix names a format soundfile cannot
    decode become problems. Only regular files are taken: a FIFO, a device or a socket named
    ``*.wav`` (or a link to one) is a problem line, never opened. A symbolic link (to a file or a
    folder) whose target lies outside ``root`` is a problem line too unless ``follow_links``.
    """
    root = root.resolve()
    if not root.is_dir():
        problem = why_not_read(root, root, root.parent, follow_links)
        return ([], [problem]) if problem else ([root], [])
    skipped = {path.resolve() for path in skip}

    def ours(folder: Path) -> bool:
        return folder.resolve() in skipped or (folder / WORK_DIR_MARKER).exists()

    found: list[Path] = []
    problems: list[Problem] = []
    walked: set[Path] = set()  # real folders already searched: a link loop ends here
    for folder, subfolders, files in os.walk(root, followlinks=follow_links):
        here = Path(folder)
        real = here.resolve()
        if real in walked:
            subfolders[:] = []
            continue
        walked.add(real)
        kept = []
        for name in sorted(subfolders):
            path = here / name
            if name.startswith(".") or ours(path):
                continue
            if path.is_symlink() and not follow_links and not _inside(path.resolve(), root):
                problems.append(Problem(_relative(path, root), "outside_folder",
                                        f"a link to {path.resolve()}, outside data.path; not read (data.follow_links=true reads it)"))
                continue
            kept.append(name)  # a link inside root is not entered without follow_links: its target is searched where it lies
        subfolders[:] = kept
        for name in sorted(files):
            path = here / name
            suffix = path.suffix.lower()
            if name.startswith("."):
                continue
            if suffix in AUDIO_SUFFIXES:
                problem = why_not_read(path, root, root, follow_links)
                if problem:
                    problems.append(problem)
                else:
                    found.append(path)
            elif suffix in UNDECODABLE_SUFFIXES:
                problems.append(Problem(_relative(path, root), "undecodable_format",
                                        f"soundfile cannot decode {suffix} files; convert it to .flac or .wav (e.g. ffmpeg -i IN OUT.flac)"))
    return found, problems


def why_not_read(path: Path, root: Path, allowed: Path, follow_links: bool) -> Problem | None:
    """Why ``path`` must not be read (a link out of ``allowed``, not a regular file), or None.

    The one rule for every file data=recordings takes from ``data.path`` (recordings, transcripts,
    metadata.csv); the readers still open through :func:`f5app.files.open_regular`, so a file
    swapped for a FIFO after this check cannot block them either."""
    name = _relative(path, root)
    try:
        mode = path.stat().st_mode  # follows a link: what would be read
    except (OSError, RuntimeError) as error:  # a dangling link or a link loop
        return Problem(name, "unreadable", f"cannot read the file: {getattr(error, 'strerror', None) or error}")
    if not stat.S_ISREG(mode):
        return Problem(name, "not_a_file", f"a {kind_of(mode)}, not a regular file; not read")
    if path.is_symlink() and not follow_links and not _inside(path.resolve(), allowed):
        return Problem(name, "outside_folder", f"a link to {path.resolve()}, outside data.path; not read (data.follow_links=true reads it)")
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def identify(paths: list[Path], root: Path, hashes: dict[str, Any]) -> tuple[list[Recording], list[Problem]]:
    """Each path with its content hash (from ``hashes`` when size and mtime match; updated in place).

    A file whose bytes equal an earlier one's is a duplicate: one problem line, no clips.
    """
    recordings: list[Recording] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for path in paths:
        name = _relative(path, root)
        try:
            stat = path.stat()
            known = hashes.get(str(path))
            if known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
                digest = known["sha256"]
            else:
                digest = sha256_file(path)
                hashes[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        except OSError as error:
            problems.append(Problem(name, "unreadable", f"cannot read the file: {error.strerror or error}"))
            continue
        if digest in seen:
            problems.append(Problem(name, "duplicate", f"same bytes as {seen[digest]}; used once"))
            continue
        seen[digest] = name
        recordings.append(Recording(path, name, digest, stat.st_size))
    return recordings, problems


def load_hashes(path: Path) -> dict[str, Any]:
    return read_json_object(path, max_bytes=64 * 1024 * 1024) or {}


def save_hashes(path: Path, hashes: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, hashes, durable=False)


def describe(path: Path) -> dict[str, Any]:
    """The header of ``path`` (rate, channels, length) without decoding; raises on a file soundfile refuses."""
    with open_regular(path) as handle:
        info = soundfile.info(handle)
    return {"source_rate": int(info.samplerate), "channels": int(info.channels), "source_frames": int(info.frames),
            "format": f"{info.format}/{info.subtype}"}


def decode(path: Path, out_wav: Path, sample_rate: int, on_seconds: Callable[[float], None] = lambda s: None) -> dict[str, Any]:
    """Stream ``path`` into ``out_wav`` (mono, ``sample_rate``, 16-bit) and return what was read.

    Raises whatever soundfile raises for a file it cannot decode; the caller turns that into a
    problem line. ``on_seconds`` is told how many seconds of the source each block held.
    """
    header = describe(path)
    source_rate = header["source_rate"]
    block = max(1, int(BLOCK_SECONDS * source_rate))
    window = CLIP_WINDOW_SECONDS * source_rate
    clipped: dict[int, int] = {}
    counts = {"frames_in": 0, "frames_out": 0, "peak": 0.0}

    def write(tmp: Path) -> None:
        import soxr  # deferred: soxr is an optional package (the [recordings] extra); data=csv_wavs imports this module without it

        resampler = None if source_rate == sample_rate else soxr.ResampleStream(source_rate, sample_rate, 1, dtype="float32")
        with open_regular(path) as handle, soundfile.SoundFile(handle) as source, soundfile.SoundFile(
            str(tmp), "w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV"
        ) as out:
            while True:
                data = source.read(block, dtype="float32", always_2d=True)
                last = len(data) < block
                if len(data):
                    _count_clipped(data, counts["frames_in"], window, clipped)
                    counts["peak"] = max(counts["peak"], float(np.abs(data).max()))
                    counts["frames_in"] += len(data)
                    on_seconds(len(data) / source_rate)
                mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                if len(mono):
                    out.write(mono)
                    counts["frames_out"] += len(mono)
                if last:
                    break

    atomic_write(out_wav, write, durable=False)
    if counts["frames_in"] == 0:
        out_wav.unlink(missing_ok=True)
        raise ValueError("the file holds no samples")
    return {
        **header,
        "source_frames": counts["frames_in"],  # what decoding gave (an mp3 header may only estimate it)
        "frames": counts["frames_out"],
        "sample_rate": sample_rate,
        "seconds": counts["frames_in"] / source_rate,
        "peak": counts["peak"],
        "clip_window_seconds": CLIP_WINDOW_SECONDS,
        # window index (of the source) -> samples at full scale in it; only windows that have any
        "clipped": {str(index): count for index, count in sorted(clipped.items())},
    }


def clipped_fraction(info: dict[str, Any], start: float, end: float) -> float:
    """The share of source samples at full scale between ``start`` and ``end`` seconds."""
    if not info.get("clipped") or end <= start:
        return 0.0
    width = info["clip_window_seconds"]
    first, last = int(start / width), int(math.ceil(end / width))
    total = sum(count for index, count in info["clipped"].items() if first <= int(index) < last)
    samples = max(1.0, (last - first) * width * info["source_rate"] * info["channels"])
    return min(1.0, total / samples)


def _count_clipped(data: np.ndarray, offset: int, window: float, into: dict[int, int]) -> None:
    rows, _ = np.nonzero(np.abs(data) >= CLIP_LEVEL)
    if rows.size:
        windows = ((rows + offset) / window).astype(np.int64)
        for index, count in zip(*np.unique(windows, return_counts=True)):
            into[int(index)] = into.get(int(index), 0) + int(count)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() if root.is_dir() else path.name
    except ValueError:
        return path.name
