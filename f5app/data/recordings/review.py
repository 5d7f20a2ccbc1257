"""Step 5, review: ``metadata.csv`` for a person to edit, and their edits kept across runs.

``metadata.csv`` (upstream's ``audio_file|text``) lists the clips that were kept. Change a text,
delete a line to leave a clip out, or add a line for audio of your own; then run again. What you
changed is recorded in ``edits.json`` beside it before the file is ever rewritten, and applied on
every later run, so new recordings or new settings never undo an edit. A change is what differs
from the file as it was last written (kept in the cache), so an untouched line takes a better
transcript when the ASR settings change, and an edited one keeps yours.

An edit whose clip is no longer made (other cut settings) stays in ``edits.json`` and is listed
in the review; delete ``metadata.csv`` and ``edits.json`` to start the review over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from f5app.data.metadata import MetadataError, metadata_text, read_metadata
from f5app.errors import UserError
from f5app.files import atomic_write, read_json_object, sha256_file, write_json_atomic

METADATA_FILE = "metadata.csv"
EDITS_FILE = "edits.json"
WRITTEN_FILE = "metadata.written.json"  # in the cache: the file as last written, to tell edits apart
USER_COPY = "metadata.before-rewrite.csv"  # in the cache: the user's file before the last rewrite


@dataclass
class Edits:
    texts: dict[str, str] = field(default_factory=dict)  # audio_file -> the text you wrote
    removed: set[str] = field(default_factory=set)  # lines you deleted
    added: dict[str, str] = field(default_factory=dict)  # lines you added (audio of your own)

    def to_dict(self) -> dict[str, Any]:
        return {"texts": dict(sorted(self.texts.items())), "removed": sorted(self.removed), "added": dict(sorted(self.added.items()))}

    @classmethod
    def load(cls, path: Path) -> "Edits":
        data = read_json_object(path, max_bytes=256 * 1024 * 1024)
        if data is None:
            if path.exists():
                raise UserError(f"{path} is not readable JSON; fix it, or delete it to drop your recorded edits")
            return cls()
        return cls({str(k): str(v) for k, v in dict(data.get("texts", {})).items()}, {str(x) for x in data.get("removed", [])},
                   {str(k): str(v) for k, v in dict(data.get("added", {})).items()})


@dataclass
class Merged:
    rows: list[tuple[str, str]]  # what metadata.csv now holds
    edited: set[str]  # audio_files whose text is yours
    removed: set[str]
    added: set[str]
    orphaned: dict[str, str]  # your edits of clips no longer made
    rewritten: bool


def merge_metadata(work_dir: Path, cache_dir: Path, produced: list[tuple[str, str]]) -> Merged:
    """Take the edits made to ``work_dir/metadata.csv`` and write it for ``produced`` (audio_file, text) rows."""
    metadata_path = work_dir / METADATA_FILE
    edits_path = work_dir / EDITS_FILE
    written_path = cache_dir / WRITTEN_FILE
    edits = Edits.load(edits_path)
    written = read_json_object(written_path, max_bytes=256 * 1024 * 1024)
    ours = dict(produced)
    if metadata_path.is_file() and (written is None or sha256_file(metadata_path) != written.get("sha256")):
        baseline = dict(written["rows"]) if written else ours
        _take_edits(_read_user_rows(work_dir), baseline, ours, edits)
        write_json_atomic(edits_path, edits.to_dict(), durable=True)  # before any rewrite: an edit is never lost
        cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(cache_dir / USER_COPY, metadata_path.read_bytes(), durable=False)
    rows = [(name, edits.texts.get(name, text)) for name, text in produced if name not in edits.removed]
    rows += [(name, text) for name, text in edits.added.items() if name not in ours]
    text = metadata_text(rows)
    rewritten = not metadata_path.is_file() or metadata_path.read_bytes() != text.encode("utf-8")
    if rewritten:
        atomic_write(metadata_path, text, durable=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(written_path, {"sha256": sha256_file(metadata_path), "rows": dict(rows)}, durable=False)
    kept = {name for name, _ in rows}
    return Merged(
        rows=rows,
        edited={name for name in edits.texts if name in kept and name in ours},
        removed={name for name in edits.removed if name in ours},
        added={name for name in edits.added if name not in ours},
        orphaned={name: text for name, text in edits.texts.items() if name not in ours and name not in edits.added},
        rewritten=rewritten,
    )


def audio_file_key(path: Path, work_dir: Path) -> str:
    """How metadata.csv names ``path``: relative to the work folder when inside it."""
    try:
        return path.resolve().relative_to(work_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def _read_user_rows(work_dir: Path) -> dict[str, str]:
    try:
        metadata = read_metadata(work_dir)
    except MetadataError as error:
        raise UserError(f"{error}; fix {work_dir / METADATA_FILE} (or delete it to start the review over)") from None
    malformed = [item for item in metadata.bad if item.reason == "malformed_line"]
    if malformed:
        lines = ", ".join(str(item.line) for item in malformed[:10])
        raise UserError(
            f"{work_dir / METADATA_FILE}: line(s) {lines} are not 'audio_file|text'; fix them and run again "
            "(nothing was rewritten)"
        )
    rows = {audio_file_key(row.audio_path, work_dir): row.text for row in metadata.rows}
    for item in metadata.bad:  # a text you emptied is an edit too (preparation then skips the line)
        if item.reason == "empty_text" and item.audio_path:
            rows.setdefault(audio_file_key(Path(item.audio_path), work_dir), "")
    return rows


def _take_edits(current: dict[str, str], baseline: dict[str, str], ours: dict[str, str], edits: Edits) -> None:
    for name, text in current.items():
        if name in baseline:
            edits.removed.discard(name)
            if text != baseline[name]:
                edits.texts[name] = text
        elif name in ours:  # a line you deleted earlier and put back
            edits.removed.discard(name)
            if text != ours[name]:
                edits.texts[name] = text
        else:
            edits.added[name] = text
    for name in baseline:
        if name not in current and name not in edits.added:
            edits.removed.add(name)
    for name in list(edits.added):
        if name not in current:
            del edits.added[name]
