"""The on-disk layout of a run's checkpoints (docs/architecture.md): names, scanning, pointers,
quarantine. Filesystem only: no torch import, so the CLI's ``list`` stays fast.

```
<run dir>/checkpoints/
  update_00000300/                complete when metadata.json exists (written last)
  .tmp-update_00000400-<pid>/     being written by process <pid>; never a candidate
  update_00000200.corrupted/      quarantined (never deleted)
  .deleting-update_00000100-<pid>/  retention in progress
  best.json  last.json            pointers
```
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional

CHECKPOINTS_DIRNAME = "checkpoints"
METADATA_FILENAME = "metadata.json"
MODEL_FILENAME = "model.pt"
TRAINING_STATE_FILENAME = "training_state.pt"
VOCAB_FILENAME = "vocab.txt"
QUARANTINE_SUFFIX = ".corrupted"
QUARANTINE_REASON_FILENAME = "QUARANTINED.json"
TEMP_PREFIX = ".tmp-"
DELETING_PREFIX = ".deleting-"

PointerName = Literal["best", "last"]

_FINAL_NAME = re.compile(r"^update_(\d+)$")
_TEMP_NAME = re.compile(r"^\.tmp-update_(\d+)-(\d+)$")


def checkpoint_name(update: int) -> str:
    return f"update_{update:08d}"


def temp_name(update: int, pid: int) -> str:
    return f"{TEMP_PREFIX}{checkpoint_name(update)}-{pid}"


def rng_state_filename(rank: int) -> str:
    return f"rng_state_{rank}.pt"


def parse_update(name: str) -> Optional[int]:
    """The update number of a final checkpoint folder name, or None for any other name."""
    match = _FINAL_NAME.match(name)
    return int(match.group(1)) if match else None


def parse_temp(name: str) -> Optional[tuple[int, int]]:
    """``(update, pid)`` of a temporary folder name, or None."""
    match = _TEMP_NAME.match(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def checkpoints_dir(run_dir: Path) -> Path:
    """The folder holding a run's checkpoints; accepts the run dir or the checkpoints dir itself."""
    run_dir = Path(run_dir)
    if run_dir.name == CHECKPOINTS_DIRNAME or (
        not (run_dir / CHECKPOINTS_DIRNAME).is_dir() and any(parse_update(p.name) is not None for p in _children(run_dir))
    ):
        return run_dir
    return run_dir / CHECKPOINTS_DIRNAME


def is_complete(folder: Path) -> bool:
    return parse_update(folder.name) is not None and (folder / METADATA_FILENAME).is_file()


@dataclass(frozen=True)
class Entry:
    name: str
    path: Path
    update: Optional[int]


@dataclass(frozen=True)
class Scan:
    """Everything in a checkpoints folder, sorted newest first within each kind."""

    complete: list[Entry]  # final name and metadata.json
    incomplete: list[Entry]  # final name, no metadata.json (copied by hand, or an older layout)
    temporary: list[Entry]  # .tmp-update_*-<pid>
    quarantined: list[Entry]  # *.corrupted*
    deleting: list[Entry]  # .deleting-*

    @property
    def numbered(self) -> list[Entry]:
        """Complete and incomplete final-named folders, newest first."""
        return sorted(self.complete + self.incomplete, key=lambda e: e.update or 0, reverse=True)


def scan(ckpt_dir: Path) -> Scan:
    complete, incomplete, temporary, quarantined, deleting = [], [], [], [], []
    for child in _children(ckpt_dir):
        name = child.name
        if name.startswith(TEMP_PREFIX):
            parsed = parse_temp(name)
            temporary.append(Entry(name, child, parsed[0] if parsed else None))
        elif name.startswith(DELETING_PREFIX):
            deleting.append(Entry(name, child, None))
        elif QUARANTINE_SUFFIX in name:
            base = name.split(QUARANTINE_SUFFIX, 1)[0]
            quarantined.append(Entry(name, child, parse_update(base)))
        elif child.is_dir() and (update := parse_update(name)) is not None:
            (complete if (child / METADATA_FILENAME).is_file() else incomplete).append(Entry(name, child, update))

    def newest_first(entries: list[Entry]) -> list[Entry]:
        return sorted(entries, key=lambda e: (e.update is not None, e.update or 0, e.name), reverse=True)

    return Scan(*(newest_first(group) for group in (complete, incomplete, temporary, quarantined, deleting)))


def _children(folder: Path) -> list[Path]:
    try:
        return list(Path(folder).iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


# --- pointers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pointer:
    name: str
    update: int
    val_loss: Optional[float]
    updated_at: str


def pointer_path(ckpt_dir: Path, which: PointerName) -> Path:
    return Path(ckpt_dir) / f"{which}.json"


def read_pointer(ckpt_dir: Path, which: PointerName) -> Optional[Pointer]:
    """The pointer, or None when the file is absent or unreadable (a damaged pointer is no pointer)."""
    try:
        data = json.loads(pointer_path(ckpt_dir, which).read_text(encoding="utf-8"))
        val_loss = data.get("val_loss")
        return Pointer(
            name=str(data["name"]),
            update=int(data["update"]),
            val_loss=None if val_loss is None else float(val_loss),
            updated_at=str(data.get("updated_at", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_pointer(ckpt_dir: Path, which: PointerName, name: str, update: int, val_loss: Optional[float]) -> Pointer:
    """Replace ``best.json`` / ``last.json`` atomically: temp file, fsync, os.replace, fsync dir."""
    pointer = Pointer(name, update, val_loss, utc_now())
    write_json_atomic(pointer_path(ckpt_dir, which), pointer.__dict__)
    return pointer


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- quarantine ---------------------------------------------------------------------------------


def quarantine(path: Path, reason: str) -> Path:
    """Rename ``path`` (a folder or a file) to ``<name>.corrupted`` (``.corrupted-2``… if taken).

    Nothing is deleted. The reason is written next to it: inside a quarantined folder as
    QUARANTINED.json, beside a quarantined file as ``<name>.corrupted.json``.
    """
    path = Path(path)
    target = path.with_name(path.name + QUARANTINE_SUFFIX)
    counter = 2
    while target.exists():
        target = path.with_name(f"{path.name}{QUARANTINE_SUFFIX}-{counter}")
        counter += 1
    os.rename(path, target)
    note = {"original_name": path.name, "reason": reason, "quarantined_at": utc_now(), "pid": os.getpid()}
    note_path = target / QUARANTINE_REASON_FILENAME if target.is_dir() else target.with_name(target.name + ".json")
    try:
        write_json_atomic(note_path, note)
    except OSError:
        pass  # the rename is what protects the run; the note is a courtesy
    return target


def quarantine_reason(path: Path) -> Optional[str]:
    path = Path(path)
    note_path = path / QUARANTINE_REASON_FILENAME if path.is_dir() else path.with_name(path.name + ".json")
    try:
        return str(json.loads(note_path.read_text(encoding="utf-8")).get("reason"))
    except (OSError, ValueError, AttributeError):
        return None


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
