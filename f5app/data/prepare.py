"""metadata.csv + audio -> upstream F5-TTS's prepared format, cached by content, bad rows reported.

The prepared folder holds what upstream's ``prepare_csv_wavs.py`` writes (``raw.arrow`` with
columns ``audio_path`` (absolute), ``text`` (token list), ``duration`` (seconds);
``duration.json``; ``vocab.txt``) plus ``report.json``/``report.txt``: every skipped line with its
reason, and the fingerprint of the inputs that produced the folder. It is written under a
temporary name and renamed into place, so a crash never leaves a half-prepared set behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterator, Optional

import soundfile
from tqdm import tqdm

from f5app.config import DataConfig
from f5app.data.metadata import MAX_METADATA_BYTES, BadRow, Metadata, MetadataError, MetadataRow, read_metadata
from f5app.data.tokenizer import base_vocab_for, check_tokenizer, extend_vocab, tokens_of_many
from f5app.data.vocab import VOCAB_FILE, read_vocab, upstream_vocab_path, write_vocab
from f5app.errors import UserError
from f5app.files import NotRegularFile, fsync_dir, open_regular, read_regular_bytes, sha256_file
from f5app.text.normalise import Normaliser

log = logging.getLogger(__name__)

#: Bump when the prepared format changes, so old caches are rebuilt.
FORMAT_VERSION = 1
PREPARED_FILES = ("raw.arrow", "duration.json", VOCAB_FILE, "report.json")


class DataError(UserError, ValueError):
    """The data cannot be prepared; the message says why and what to fix."""


@dataclass
class PreparedData:
    dir: Path
    vocab: list[str]
    num_items: int
    total_seconds: float
    report_path: Path
    skipped: int
    review_path: Path | None = None  # data=recordings: the review of the clips (review.html)
    metadata_path: Path | None = None  # the metadata.csv it was prepared from


@dataclass(frozen=True)
class _Clip:
    line: int
    audio_path: str
    text: str
    duration: float


def prepared_dir_for(data: DataConfig) -> Path:
    if data.prepared_dir:
        return Path(data.prepared_dir).expanduser().resolve()
    return Path(data.path).expanduser().resolve() / ".f5app_prepared"


def prepare(data: DataConfig, progress: bool = True, normaliser: Optional[Normaliser] = None) -> PreparedData:
    """Prepare ``data.path`` into ``data.prepared_dir``; a no-op when the inputs are unchanged.

    Raises DataError for a missing/malformed metadata.csv, a bad tokenizer setting, or when no
    row is usable (the message names the report listing every skipped line).

    ``data=recordings`` first cuts long recordings into clips with a metadata.csv
    (f5app/data/recordings/), then prepares those exactly as this function prepares any folder;
    :func:`f5app.data.sources.prepare_data` picks the path for a data setting.

    ``normaliser`` (``text_norm.apply_to_training``): each transcript is said as inference says
    text (f5app/text/) before it is tokenised; the prepared set records which normaliser.
    """
    _check_settings(data)
    folder = Path(data.path).expanduser().resolve()
    out_dir = prepared_dir_for(data)
    try:
        metadata = read_metadata(folder)
        base_vocab = base_vocab_for(data)
    except (MetadataError, ValueError, OSError) as error:
        raise DataError(str(error)) from None

    try:
        fingerprint = _fingerprint(metadata, data, normaliser)
    except OSError as error:  # e.g. a custom vocabulary that is a FIFO
        raise DataError(f"cannot read {error.filename}: {error.strerror or error}") from None
    with folder_lock(out_dir):
        cached = _load_if_current(out_dir, fingerprint)
        if cached is not None:
            log.info("prepared data %s is up to date with %s (%d clips); nothing to do", out_dir, metadata.path, cached.num_items)
            return cached
        clips, bad = _measure(metadata, data, progress)
        if normaliser is not None:
            clips = [replace(clip, text=normaliser.normalise(clip.text)) for clip in clips]
            log.info("transcripts normalised for training with text_norm %s", normaliser.name)
        token_lists = tokens_of_many([clip.text for clip in clips], data.tokenizer)
        seen = {token for tokens in token_lists for token in tokens}
        vocab, added = extend_vocab(base_vocab if base_vocab is not None else [" "], seen)
        report = _report(metadata, data, fingerprint, clips, bad, vocab, added, base_vocab is not None)
        with _staging(out_dir) as staging:
            _write_report(staging, report)
            if clips:
                _write_upstream_files(staging, clips, token_lists, vocab)
    report_path = out_dir / "report.txt"
    if not clips:
        raise DataError(
            f"no usable clips in {metadata.path}: all {len(bad)} rows were skipped "
            f"({_counts_text(report['skipped_by_reason'])}); see {report_path}"
        )
    log.info(
        "prepared %d clips (%.1f s) from %s into %s; skipped %d (%s)",
        len(clips), report["total_seconds"], metadata.path, out_dir, len(bad), _counts_text(report["skipped_by_reason"]) or "none",
    )
    return PreparedData(out_dir, vocab, len(clips), report["total_seconds"], report_path, len(bad), metadata_path=metadata.path)


def load_prepared(out_dir: str | Path) -> PreparedData:
    """A prepared folder written by :func:`prepare` (or one with upstream's files and our report)."""
    out_dir = Path(out_dir)
    missing = [name for name in PREPARED_FILES if not (out_dir / name).is_file()]
    if missing:
        raise DataError(f"{out_dir} is not a prepared data set (missing {', '.join(missing)}); run f5app-prepare")
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    return PreparedData(
        dir=out_dir,
        vocab=read_vocab(out_dir / VOCAB_FILE),
        num_items=int(report["num_items"]),
        total_seconds=float(report["total_seconds"]),
        report_path=out_dir / "report.txt",
        skipped=int(report["skipped"]),
        metadata_path=Path(report["metadata"]) if report.get("metadata") else None,
    )


def _check_settings(data: DataConfig) -> None:
    try:
        check_tokenizer(data.tokenizer)
    except ValueError as error:
        raise DataError(str(error)) from None
    if not 0 <= data.min_duration < data.max_duration:
        raise DataError(
            f"data.min_duration={data.min_duration} and data.max_duration={data.max_duration}: "
            "need 0 <= min_duration < max_duration"
        )


def _fingerprint(metadata: Metadata, data: DataConfig, normaliser: Optional[Normaliser] = None) -> str:
    """Hash of everything the prepared set depends on; audio by (path, size, mtime_ns), not bytes."""
    digest = hashlib.sha256()

    def add(*parts: object) -> None:
        digest.update(json.dumps(parts, default=str).encode() + b"\n")

    add("format", FORMAT_VERSION)
    digest.update(read_regular_bytes(metadata.path, MAX_METADATA_BYTES))
    add(str(metadata.path.parent), data.tokenizer, data.min_duration, data.max_duration)
    if normaliser is not None:
        add("text_norm", normaliser.fingerprint)
    if data.tokenizer == "custom":
        add("vocab", sha256_file(Path(data.vocab_path).expanduser()))  # type: ignore[arg-type]
    if data.tokenizer == "pinyin":
        add("vocab", sha256_file(upstream_vocab_path()), _f5_tts_version())
    for row in metadata.rows:
        try:
            stat = row.audio_path.stat()
            add(str(row.audio_path), stat.st_size, stat.st_mtime_ns)
        except OSError:
            add(str(row.audio_path), None)
    return digest.hexdigest()


def _f5_tts_version() -> str:
    try:
        return version("f5-tts")
    except PackageNotFoundError:
        return "unknown"


def _load_if_current(out_dir: Path, fingerprint: str) -> PreparedData | None:
    try:
        report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
        if report.get("fingerprint") != fingerprint or report.get("num_items", 0) == 0:
            return None
        return load_prepared(out_dir)
    except (OSError, ValueError, KeyError):
        return None


def _measure(metadata: Metadata, data: DataConfig, progress: bool) -> tuple[list[_Clip], list[BadRow]]:
    """Duration of every row from the file header (no decoding); rows that fail become BadRows."""

    clips: list[_Clip] = []
    bad = list(metadata.bad)
    show = progress and sys.stderr.isatty()
    for row in tqdm(metadata.rows, desc="Reading audio headers", unit="clip", disable=not show):
        outcome = _measure_row(row, data)
        (clips if isinstance(outcome, _Clip) else bad).append(outcome)
    bad.sort(key=lambda item: item.line)
    return clips, bad


def _measure_row(row: MetadataRow, data: DataConfig) -> _Clip | BadRow:
    path = str(row.audio_path)
    try:
        handle = open_regular(row.audio_path)
    except FileNotFoundError:
        return BadRow(row.line, "missing_file", f"no such file: {path}", path)
    except NotRegularFile as error:  # a FIFO would block the reader, /dev/zero feed it forever
        return BadRow(row.line, "not_a_file", f"{path} is {error.strerror}; not read", path)
    except OSError as error:
        return BadRow(row.line, "unreadable_audio", f"cannot open it: {error.strerror or error}", path)
    try:
        with handle:
            info = soundfile.info(handle)
        if info.samplerate <= 0 or info.frames <= 0:
            raise ValueError(f"{info.frames} frames at {info.samplerate} Hz")
        duration = info.frames / info.samplerate
    except Exception as error:  # soundfile raises LibsndfileError, RuntimeError, ValueError...
        return BadRow(row.line, "unreadable_audio", f"cannot read audio: {error}".replace("\n", " "), path)
    if not data.min_duration <= duration <= data.max_duration:
        return BadRow(
            row.line,
            "duration_out_of_range",
            f"{duration:.2f} s is outside [{data.min_duration}, {data.max_duration}] s (data.min_duration/max_duration)",
            path,
        )
    return _Clip(row.line, path, row.text, duration)


def _report(
    metadata: Metadata,
    data: DataConfig,
    fingerprint: str,
    clips: list[_Clip],
    bad: list[BadRow],
    vocab: list[str],
    added: list[str],
    extended: bool,
) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metadata": str(metadata.path),
        "layout": metadata.layout,
        "tokenizer": data.tokenizer,
        "vocab_path": data.vocab_path,
        "min_duration": data.min_duration,
        "max_duration": data.max_duration,
        "num_rows": len(clips) + len(bad),
        "num_items": len(clips),
        "total_seconds": round(sum(clip.duration for clip in clips), 6),
        "skipped": len(bad),
        "skipped_by_reason": dict(sorted(Counter(item.reason for item in bad).items())),
        "skipped_rows": [asdict(item) for item in bad],
        "vocab_size": len(vocab),
        "vocab_added": added if extended else [],
    }


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{reason}: {count}" for reason, count in counts.items())


def _write_report(folder: Path, report: dict) -> None:
    (folder / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    lines = [
        f"Prepared from {report['metadata']} ({report['layout']} layout) at {report['created_at']}",
        f"{report['num_items']} clips kept, {report['total_seconds']:.1f} s of audio; {report['skipped']} rows skipped",
        f"tokenizer {report['tokenizer']}, vocabulary of {report['vocab_size']} tokens"
        + (f" ({len(report['vocab_added'])} added to the base vocabulary)" if report["vocab_added"] else ""),
    ]
    if report["skipped"]:
        lines += ["", "Skipped by reason:"]
        lines += [f"  {reason}: {count}" for reason, count in report["skipped_by_reason"].items()]
        lines += ["", "Skipped rows (line number in metadata.csv: reason: detail):"]
        lines += [f"  line {row['line']}: {row['reason']}: {row['detail']}" for row in report["skipped_rows"]]
    (folder / "report.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_upstream_files(folder: Path, clips: list[_Clip], token_lists: list[list[str]], vocab: list[str]) -> None:
    # upstream's writer, so datasets.Dataset.from_file and upstream's loaders read it unchanged
    from datasets.arrow_writer import ArrowWriter

    with ArrowWriter(path=str(folder / "raw.arrow")) as writer:
        for clip, tokens in zip(clips, token_lists):
            writer.write({"audio_path": clip.audio_path, "text": tokens, "duration": clip.duration})
        writer.finalize()
    durations = {"duration": [clip.duration for clip in clips]}
    (folder / "duration.json").write_text(json.dumps(durations, ensure_ascii=False), encoding="utf-8")
    write_vocab(vocab, folder / VOCAB_FILE)


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """Write into a temporary sibling folder, fsync it, then swap it in for ``out_dir``."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        for item in staging.iterdir():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
        retired = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            os.rename(out_dir, retired)
        os.rename(staging, out_dir)
        fsync_dir(out_dir.parent)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """One preparer per folder at a time (e.g. every process of an accelerate launch)."""
    try:
        import fcntl  # deferred: Windows has no fcntl (the except below)
    except ImportError:  # Windows: no advisory locks; the atomic rename still keeps the folder whole
        yield
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
