"""The review of ``data=recordings`` in the page: the same files and rules as editing by hand.

Saving writes ``metadata.csv`` exactly as a person editing it would (a text changed, a line
deleted to reject a clip, a line put back to accept it again), atomically, and then runs
``python -m f5app.prepare data=recordings ...`` with the settings the review records: that run
takes the edits into ``edits.json``, rewrites the review and the prepared set, and uses the same
cache (f5app/data/recordings/review.py owns all of that; nothing here repeats it).

Two tabs: the page sends the version (sha256 of ``metadata.csv``) it loaded; a save against
any other version is refused with a message, so no edit is lost silently.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

from f5app.data.metadata import metadata_text
from f5app.data.recordings.pipeline import DEFAULT_WORK_DIR
from f5app.data.recordings.report import REVIEW_JSON
from f5app.data.recordings.review import METADATA_FILE, _read_user_rows
from f5app.errors import UserError
from f5app.files import atomic_write, read_json_object, sha256_file
from f5app.studio.roots import Roots

_SIMPLE = re.compile(r"^[A-Za-z0-9_.:/-]+$")
#: The data settings a re-run repeats from the review's record (each a number or a fixed word).
_NUMBERS = ("sample_rate", "min_seconds", "max_seconds", "max_pause_seconds", "pad_seconds", "vad_threshold", "loudness_lufs",
            "min_loudness_lufs", "max_clipped_fraction", "min_confidence", "min_duration", "max_duration", "val_fraction",
            "val_min_items", "seed")
_save_lock = threading.Lock()


class ReviewConflict(UserError):
    """The file changed since the page loaded it."""


def work_dir(roots: Roots, path: str) -> Path:
    """The review's work folder for a recordings folder (or the work folder itself), under the roots."""
    folder = roots.in_data(path)
    work = folder if (folder / REVIEW_JSON).is_file() else folder / DEFAULT_WORK_DIR
    if not (work / REVIEW_JSON).is_file():
        raise UserError(f"{folder} has no review yet: run python -m f5app.prepare data=recordings data.path={folder} first")
    return roots.inside(work)


def version(work: Path) -> str:
    path = work / METADATA_FILE
    return sha256_file(path) if path.is_file() else "absent"


def load(work: Path) -> dict[str, Any]:
    """Every clip with its text (as metadata.csv holds it now), measurements, flags and state."""
    review = read_json_object(work / REVIEW_JSON, max_bytes=64 * 1024 * 1024) or {}
    current = _read_user_rows(work) if (work / METADATA_FILE).is_file() else {}
    clips = []
    for row, kept in [(c, True) for c in review.get("clips", [])] + [(c, False) for c in review.get("dropped", [])]:
        name = row.get("audio_file")
        if not isinstance(name, str):
            continue
        state = "accepted" if name in current else ("rejected" if row.get("dropped") == "removed_by_you" or kept else "dropped")
        clips.append({
            "audio_file": name,
            "audio": str(work / name) if kept or state == "rejected" else str(work / "rejected" / Path(name).name),
            "text": current.get(name, row.get("text", "")),
            "asr_text": row.get("asr_text"),
            "confidence": row.get("confidence"),
            "loudness_lufs": row.get("loudness_lufs"),
            "seconds": row.get("seconds"),
            "flags": row.get("flags") or [],
            "dropped": row.get("dropped"),
            "split": row.get("split"),
            "state": state,
        })
    source = str(work.parent) if work.name == DEFAULT_WORK_DIR else review.get("source")  # where it is now, if moved
    return {"work_dir": str(work), "source": source, "metadata": str(work / METADATA_FILE), "version": version(work),
            "summary": review.get("summary"), "clips": clips, "rerun_command": None}


def save(work: Path, changes: dict[str, Any], loaded_version: str) -> list[tuple[str, str]]:
    """Write metadata.csv with ``changes`` ({"texts": {file: text}, "reject": [file], "accept": [file]}); the rows written."""
    texts, reject, accept = changes.get("texts") or {}, set(changes.get("reject") or []), set(changes.get("accept") or [])
    if not isinstance(texts, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
        raise UserError("texts must map audio files to their new text")
    with _save_lock:
        if version(work) != loaded_version:
            raise ReviewConflict(f"{work / METADATA_FILE} changed since this page loaded it (another tab or an editor saved); "
                                 "reload the review, then make your edits again")
        current = _read_user_rows(work)
        known = {clip["audio_file"]: clip for clip in load(work)["clips"]}
        unknown = sorted((set(texts) | reject | accept) - set(known))
        if unknown:
            raise UserError(f"not clips of this review: {', '.join(unknown[:5])}")
        dropped = sorted(name for name in accept if known[name]["state"] == "dropped")
        if dropped:
            raise UserError(f"{', '.join(dropped[:5])} were dropped by the rules ({known[dropped[0]]['dropped']}), not by you; change the settings to keep them")
        rows = [(name, texts.get(name, text)) for name, text in current.items() if name not in reject]
        rows += [(name, texts.get(name, known[name]["text"])) for name in sorted(accept) if name not in current and name not in reject]
        atomic_write(work / METADATA_FILE, metadata_text(rows), durable=True)
        return rows


def rerun_overrides(work: Path) -> list[str]:
    """``f5app.prepare`` arguments that repeat the run that made this review (its recorded settings)."""
    review = read_json_object(work / REVIEW_JSON, max_bytes=64 * 1024 * 1024) or {}
    settings = review.get("settings") or {}
    # The folder the review sits in is the recordings folder (a copied or moved folder's review
    # still names where it was made); only a work_dir set apart falls back to the recorded source.
    source = str(work.parent) if work.name == DEFAULT_WORK_DIR else review.get("source")
    if not isinstance(source, str):
        raise UserError(f"{work / REVIEW_JSON} does not name its recordings folder; run f5app.prepare by hand")
    overrides = ["data=recordings", f"data.path={source}"]
    if work.name != DEFAULT_WORK_DIR:
        overrides.append(f"data.work_dir={work}")
    asr = settings.get("asr") or {}
    if asr.get("name") in ("whisper", "tiny_en"):
        overrides.append(f"asr={asr['name']}")
        for key in ("model", "language", "compute_type"):
            value = asr.get(key)
            if isinstance(value, str) and _SIMPLE.match(value):
                overrides.append(f"asr.{key}={value}")
        if isinstance(asr.get("beam_size"), int):
            overrides.append(f"asr.beam_size={asr['beam_size']}")
    if settings.get("tokenizer") in ("char", "pinyin"):
        overrides.append(f"data.tokenizer={settings['tokenizer']}")
    for key in _NUMBERS:
        value = settings.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            overrides.append(f"data.{key}={value!r}")
    speaker = settings.get("speaker")  # whose clips the review kept (data.speaker): the same again
    if isinstance(speaker, str) and _SIMPLE.match(speaker):
        overrides.append(f"data.speaker={speaker}")
    if isinstance(settings.get("num_speakers"), int) and not isinstance(settings["num_speakers"], bool):
        overrides.append(f"data.num_speakers={settings['num_speakers']}")
    return overrides
