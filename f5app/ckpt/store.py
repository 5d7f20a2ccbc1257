"""Atomic checkpoint saving, pointers and retention for one run's ``checkpoints/`` folder.

A save writes every file into ``.tmp-update_XXXXXXXX-<pid>/``, fsyncs them, writes
``metadata.json`` (with each file's size and sha256) last, renames the folder into place and
fsyncs the parent; only then are ``last.json`` / ``best.json`` replaced and retention applied.
A crash at any moment leaves the previous checkpoints plus, at worst, a temp folder that is never
a candidate and that :meth:`CheckpointStore.cleanup_partials` removes on the next start.

An instance keeps no global state and serialises its own operations with a lock, so the training
loop may call :meth:`CheckpointStore.save` from a background thread.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Optional

from f5app.ckpt import layout
from f5app.errors import UserError

log = logging.getLogger(__name__)


class CheckpointSaveError(UserError, RuntimeError):
    """A save failed; nothing partial is visible and the previous checkpoints are intact."""


class CheckpointStore:
    def __init__(self, ckpt_dir: Path, keep_last: int):
        """``keep_last`` newest checkpoints (plus ``best``) survive retention; < 1 keeps all."""
        self.ckpt_dir = Path(ckpt_dir)
        self.keep_last = keep_last
        self._lock = threading.Lock()

    # --- saving ---------------------------------------------------------------------------------

    def save(self, payloads: dict[str, Any], metadata: dict, *, val_loss: Optional[float] = None) -> Path:
        """Write one complete checkpoint and return its folder.

        ``payloads`` maps file names to objects (``torch.save``d) or ``str`` (UTF-8 text, e.g.
        vocab.txt). ``metadata`` must hold ``update``; its ``files`` entry is filled in here.
        Raises :class:`CheckpointSaveError` (one line) when anything fails.
        """
        update = int(metadata["update"])
        name = layout.checkpoint_name(update)
        with self._lock:
            final = self._write_complete(name, update, payloads, metadata)
            self._update_pointers(name, update, val_loss)
            self._apply_retention(protect=name)
        return final

    def _write_complete(self, name: str, update: int, payloads: dict[str, Any], metadata: dict) -> Path:
        temp = self.ckpt_dir / layout.temp_name(update, os.getpid())
        final = self.ckpt_dir / name
        try:
            if not self.ckpt_dir.is_dir():
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                layout.fsync_dir(self.ckpt_dir.parent)  # the new folder's own entry must survive a crash too
            if temp.exists():
                shutil.rmtree(temp)
            temp.mkdir()
            files = {}
            for filename, payload in payloads.items():
                if filename == layout.METADATA_FILENAME or "/" in filename or filename.startswith("."):
                    raise ValueError(f"payload name {filename!r} is not allowed (plain file names, not metadata.json)")
                files[filename] = _write_file(temp / filename, payload)
            metadata = {**metadata, "files": files, "weights_fingerprint": _fingerprint(payloads.get(layout.MODEL_FILENAME))}
            _write_file(temp / layout.METADATA_FILENAME, json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
            layout.fsync_dir(temp)
            if final.exists():
                self._set_aside(final)
            os.rename(temp, final)
            layout.fsync_dir(self.ckpt_dir)
        except BaseException as error:
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            raise CheckpointSaveError(_describe_failure(name, self.ckpt_dir, error)) from error
        log.info("saved checkpoint %s", final)
        return final

    def _set_aside(self, existing: Path) -> None:
        """A folder with the same name exists (a run forked from an older checkpoint): keep it."""
        counter = 1
        while (aside := existing.with_name(f"{existing.name}.superseded-{counter}")).exists():
            counter += 1
        os.rename(existing, aside)
        log.warning("%s already existed; moved it to %s (nothing deleted)", existing.name, aside.name)

    # --- pointers -------------------------------------------------------------------------------

    def _update_pointers(self, name: str, update: int, val_loss: Optional[float]) -> None:
        layout.write_pointer(self.ckpt_dir, "last", name, update, val_loss)
        if val_loss is None:
            return
        best = layout.read_pointer(self.ckpt_dir, "best")
        best_missing = best is None or not layout.is_complete(self.ckpt_dir / best.name)
        if best_missing or best.val_loss is None or val_loss < best.val_loss:
            layout.write_pointer(self.ckpt_dir, "best", name, update, val_loss)

    def set_best(self, name: str, val_loss: Optional[float]) -> None:
        """Point ``best.json`` at an existing complete checkpoint."""
        update = layout.parse_update(name)
        if update is None or not layout.is_complete(self.ckpt_dir / name):
            raise ValueError(f"{name} is not a complete checkpoint in {self.ckpt_dir}")
        with self._lock:
            layout.write_pointer(self.ckpt_dir, "best", name, update, val_loss)

    # --- retention and cleanup ------------------------------------------------------------------

    def prune(self) -> list[Path]:
        """Apply retention now; returns the checkpoints deleted."""
        with self._lock:
            return self._apply_retention(protect=None)

    def _apply_retention(self, protect: Optional[str]) -> list[Path]:
        if self.keep_last < 1:
            return []
        complete = layout.scan(self.ckpt_dir).complete  # newest first
        keep = {entry.name for entry in complete[: self.keep_last]}
        for which in ("best", "last"):
            pointer = layout.read_pointer(self.ckpt_dir, which)
            if pointer is not None:
                keep.add(pointer.name)
        if protect:
            keep.add(protect)
        deleted = []
        for entry in complete:
            if entry.name not in keep:
                deleted.append(self._delete(entry.path))
        return deleted

    def _delete(self, folder: Path) -> Path:
        # Renaming first means a crash mid-delete leaves a .deleting-* folder, never a damaged
        # candidate with the final name.
        doomed = folder.with_name(f"{layout.DELETING_PREFIX}{folder.name}-{os.getpid()}")
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("retention: deleted %s", folder.name)
        return folder

    def cleanup_partials(self) -> list[Path]:
        """Delete temp folders of writers that are no longer alive, and half-done deletions.

        Temp folders never hold a complete checkpoint (completion is the rename), so deleting
        them loses nothing; folders of live processes (including this one) are left alone.
        """
        removed = []
        with self._lock:
            found = layout.scan(self.ckpt_dir)
            for entry in found.temporary:
                parsed = layout.parse_temp(entry.name)
                if parsed is not None and layout.pid_alive(parsed[1]):
                    continue
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
            for entry in found.deleting:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
        for path in removed:
            log.info("removed leftover %s", path.name)
        return removed


def _write_file(path: Path, payload: Any) -> dict:
    with open(path, "wb") as handle:
        if isinstance(payload, str):
            handle.write(payload.encode("utf-8"))
        else:
            import torch

            torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def _fingerprint(model_payload: Any) -> Optional[str]:
    """The weights fingerprint (EMA when present, as ``info`` computes it), so ``list`` needs no torch."""
    if not isinstance(model_payload, dict):
        return None
    state = model_payload.get("ema_model_state_dict") or model_payload.get("model_state_dict")
    if not isinstance(state, dict):
        return None
    from f5app.ckpt.fingerprint import weights_fingerprint

    try:
        return weights_fingerprint(state)
    except Exception:  # odd weights must not cost the checkpoint; info recomputes from the file
        return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _describe_failure(name: str, ckpt_dir: Path, error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        why = "no space left on device"
    elif isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"not writable ({error.strerror})"
    else:
        why = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")
    return f"could not save checkpoint {name} in {ckpt_dir}: {why}; nothing partial was left and earlier checkpoints are intact"


def load_training_state(ckpt_path: Path, rank: int) -> dict:
    """``{"model", "training_state", "rng_state"}`` of a checkpoint folder, loaded weights-only.

    ``rng_state`` is None when this rank has no file (the run was saved with fewer processes).
    numpy's RNG state is an ndarray, so numpy's array reconstruction is allow-listed for the RNG
    file only; that allowlist rebuilds arrays and runs no other code.
    """
    import torch

    ckpt_path = Path(ckpt_path)
    model = torch.load(ckpt_path / layout.MODEL_FILENAME, map_location="cpu", weights_only=True)
    training_state = torch.load(ckpt_path / layout.TRAINING_STATE_FILENAME, map_location="cpu", weights_only=True)
    rng_file = ckpt_path / layout.rng_state_filename(rank)
    rng_state = None
    if rng_file.is_file():
        with torch.serialization.safe_globals(_numpy_array_globals()):
            rng_state = torch.load(rng_file, map_location="cpu", weights_only=True)
    return {"model": model, "training_state": training_state, "rng_state": rng_state}


def _numpy_array_globals() -> list:
    import numpy as np

    try:
        reconstruct = np._core.multiarray._reconstruct  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        reconstruct = np.core.multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
