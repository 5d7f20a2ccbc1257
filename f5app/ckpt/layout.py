"""The on-disk layout of a run's checkpoints (docs/architecture.md): names, scanning, pointers,
quarantine. Filesystem only: no torch import, so the CLI's ``list`` stays fast.

```
<run dir>/checkpoints/
  update_00000300/                complete when metadata.json exists (written last)
  .tmp-update_00000400-<pid>/     being written by process <pid>; never a candidate
  update_00000200.corrupted/      quarantined (never deleted)
  .deleting-update_00000100-<pid>/  retention in progress
  best.json  last.json            pointers
  pinned.json                     the checkpoint a person chose to keep (retention never deletes it)
```
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Optional

from f5app.files import write_json_atomic

#: Written last into a checkpoint folder: its presence is what makes the folder complete
#: (its contents are ckpt/schema.py's).
METADATA_FILENAME = "metadata.json"
CHECKPOINTS_DIRNAME = "checkpoints"
QUARANTINE_SUFFIX = ".corrupted"
QUARANTINE_REASON_FILENAME = "QUARANTINED.json"
TEMP_PREFIX = ".tmp-"
DELETING_PREFIX = ".deleting-"
#: A pointer file is a few hundred bytes; a larger one is not ours and is not parsed.
MAX_POINTER_BYTES = 64 * 1024

PointerName = Literal["best", "last", "pinned"]

_FINAL_NAME = re.compile(r"^update_(\d+)$")
_TEMP_NAME = re.compile(r"^\.tmp-update_(\d+)-(\d+)$")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def checkpoint_name(update: int) -> str:
    return f"update_{update:08d}"


def temp_name(update: int, pid: int) -> str:
    return f"{TEMP_PREFIX}{checkpoint_name(update)}-{pid}"


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
    """``best.json`` / ``last.json`` / ``pinned.json``: which checkpoint, and (for best) by which metric it won."""

    name: str
    update: int
    val_loss: Optional[float]
    updated_at: str
    metric: str = "val_loss"
    value: Optional[float] = None  # the winning value of ``metric`` (val_loss for val_loss)


def pointer_path(ckpt_dir: Path, which: PointerName) -> Path:
    return Path(ckpt_dir) / f"{which}.json"


class PointerError(ValueError):
    """A pointer file that exists but cannot be trusted; the message says why."""


def read_pointer(ckpt_dir: Path, which: PointerName) -> Optional[Pointer]:
    """The pointer, or None when the file is absent or unusable (a damaged pointer is no pointer)."""
    try:
        return load_pointer(ckpt_dir, which)
    except PointerError:
        return None


def load_pointer(ckpt_dir: Path, which: PointerName) -> Optional[Pointer]:
    """The pointer; None when absent, :class:`PointerError` when damaged or naming anything but a
    checkpoint folder of this run (an absolute path, ``..`` or ``.`` must never steer quarantine)."""
    path = pointer_path(ckpt_dir, which)
    try:
        if path.stat().st_size > MAX_POINTER_BYTES:
            raise PointerError(f"{path.name} is damaged ({path.stat().st_size} bytes; a pointer is a few hundred)")
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as error:
        raise PointerError(f"{path.name} is damaged (unreadable JSON: {type(error).__name__})") from None
    if not isinstance(data, dict):
        raise PointerError(f"{path.name} is damaged (holds {type(data).__name__}, not an object)")
    name, update = data.get("name"), data.get("update")
    if not isinstance(name, str) or parse_update(name) is None:
        raise PointerError(f"{path.name} is damaged (names {name!r}, which is not a checkpoint folder of this run)")
    if not isinstance(update, int) or isinstance(update, bool) or update != parse_update(name):
        raise PointerError(f"{path.name} is damaged (records update {update!r} for {name})")
    val_loss, value = _number(data.get("val_loss")), _number(data.get("value"))
    metric = data.get("metric") if isinstance(data.get("metric"), str) else "val_loss"
    return Pointer(name, update, val_loss, str(data.get("updated_at", "")), metric, val_loss if value is None and metric == "val_loss" else value)


def write_pointer(
    ckpt_dir: Path, which: PointerName, name: str, update: int, val_loss: Optional[float],
    *, metric: str = "val_loss", value: Optional[float] = None,
) -> Pointer:
    """Replace ``best.json`` / ``last.json`` / ``pinned.json`` atomically: temp file, fsync, os.replace, fsync dir."""
    if parse_update(name) is None:
        raise ValueError(f"pointer target {name!r} is not a checkpoint folder name")
    val_loss, value = _number(val_loss), _number(value)
    pointer = Pointer(name, update, val_loss, utc_now(), metric, val_loss if value is None and metric == "val_loss" else value)
    write_json_atomic(pointer_path(ckpt_dir, which), pointer.__dict__)
    return pointer


def _number(value) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None


# --- quarantine ---------------------------------------------------------------------------------


def quarantine(path: Path, reason: str) -> Path:
    """Rename ``path`` (a checkpoint folder of a run) to ``<name>.corrupted`` (``.corrupted-2``… if taken).

    Nothing is deleted, and nothing but a checkpoint folder is ever renamed. The reason is written
    next to it: inside a quarantined folder as QUARANTINED.json, beside a quarantined link as
    ``<name>.corrupted.json``.
    """
    path = Path(path)
    if parse_update(path.name) is None and parse_temp(path.name) is None:
        raise ValueError(f"refusing to quarantine {path}: only checkpoint folders (update_<8 digits>) are renamed")
    target = path.with_name(path.name + QUARANTINE_SUFFIX)
    counter = 2
    while os.path.lexists(target):
        target = path.with_name(f"{path.name}{QUARANTINE_SUFFIX}-{counter}")
        counter += 1
    os.rename(path, target)
    note = {"original_name": path.name, "reason": reason, "quarantined_at": utc_now(), "pid": os.getpid()}
    in_folder = target.is_dir() and not target.is_symlink()
    note_path = target / QUARANTINE_REASON_FILENAME if in_folder else target.with_name(target.name + ".json")
    try:
        write_json_atomic(note_path, note)
    except (OSError, ValueError):
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
