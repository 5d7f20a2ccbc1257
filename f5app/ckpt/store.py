"""Atomic checkpoint saving, pointers and retention for one run's ``checkpoints/`` folder.

A save writes every file into ``.tmp-update_XXXXXXXX-<pid>/``, fsyncs them, writes
``metadata.json`` (with each file's size, sha256 and xxh3_128) last, renames the folder into place and
fsyncs the parent; only then are ``last.json`` / ``best.json`` replaced and retention applied.
A crash at any moment leaves the previous checkpoints plus, at worst, a temp folder that is never
a candidate and that :meth:`CheckpointStore.cleanup_partials` removes on the next start.

An instance keeps no global state. Its operations (save, prune, cleanup) hold a lock on the
checkpoints folder itself (``flock`` of the folder: no file is added to it), so they are serialised
across threads, instances and processes alike: the training loop may save from a background thread
while anyone calls :meth:`CheckpointStore.prune` on the same folder, and neither finds the other's
work half done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from f5app.ckpt import layout
from f5app.ckpt.fingerprint import weights_fingerprint
from f5app.ckpt.schema import (
    ADAPTER_STATE, EMA_ADAPTER_STATE, EMA_STATE, METADATA_FILENAME, MODEL_STATE, Checkpoint,
    CheckpointMetadata, DamagedCheckpoint, FileRecord,
    is_plain_file_name, metric_direction, parse_metric, read_metadata, require_finite,
)
from f5app.errors import UserError, first_line
from f5app.files import file_digests, fsync_dir

log = logging.getLogger(__name__)


class CheckpointSaveError(UserError, RuntimeError):
    """A save failed; nothing partial is visible and the previous checkpoints are intact."""


@dataclass(frozen=True)
class BaseWerBound:
    """``ckpt.base_set`` / ``ckpt.max_base_wer_rise``: a checkpoint whose ``wer@SET`` rose more than
    ``max_rise`` (absolute WER) over the run's first evaluation of that set is never ``best``.
    A checkpoint that did not score the set cannot show it stayed in bounds, so it is not best either."""

    set_name: str
    max_rise: float

    def why_not_best(self, metadata: CheckpointMetadata) -> Optional[str]:
        """None when ``metadata``'s checkpoint is in bounds; else the reason, for the log."""
        metric = f"wer@{self.set_name}"
        now = metadata.metrics.value(metric)
        if now is None:
            return f"{metric} was not measured at update {metadata.update}"
        first = metadata.metrics.first_set_scores(self.set_name)
        if first is None or first[1] is None:
            return f"the run's first evaluation of {metric} is not recorded"
        rise = now - first[1]
        if rise > self.max_rise:
            return (f"{metric} {now:.3f} rose {rise:.3f} over the run's first evaluation ({first[1]:.3f} at update {first[0]}), "
                    f"more than ckpt.max_base_wer_rise={self.max_rise:g}")
        return None


def base_bound(base_set: Optional[str], max_rise: float) -> Optional[BaseWerBound]:
    """The bound ``ckpt.base_set`` asks for (None: none)."""
    if base_set is None:
        return None
    if max_rise < 0:
        raise UserError(f"ckpt.max_base_wer_rise={max_rise} must be 0 or more (an absolute rise in WER, e.g. 0.05)")
    return BaseWerBound(base_set, max_rise)


def best_by_metric(ckpt_dir: Path, metric: str, bound: Optional[BaseWerBound] = None) -> Optional[tuple[CheckpointMetadata, float]]:
    """The complete checkpoint with the best recorded ``metric`` (newest on ties) and its value,
    among those ``bound`` allows; None when none records it. The one ranking rule behind
    ``best.json`` and ``ckpt=best``."""
    winner = None
    for entry in layout.scan(Path(ckpt_dir)).complete:  # newest first: a tie keeps the newer
        metadata = read_metadata(entry.path)
        value = metadata.metrics.value(metric) if metadata is not None else None
        if value is None or (bound is not None and bound.why_not_best(metadata) is not None):
            continue
        if winner is None or _better(metric, value, winner[1]):
            winner = (metadata, value)
    return winner


def _better(metric: str, value: float, than: float) -> bool:
    return value > than if metric_direction(metric) == "max" else value < than


class CheckpointStore:
    def __init__(self, ckpt_dir: Path, keep_last: int, best_metric: str = "val_loss", bound: Optional[BaseWerBound] = None):
        """``keep_last`` newest checkpoints (plus ``best``) survive retention; < 1 keeps all.
        ``best_metric`` ranks checkpoints for ``best.json`` (val_loss, wer, cer, sim, or METRIC@SET);
        ``bound`` keeps checkpoints that let the base language slip out of ``best``."""
        try:
            parse_metric(best_metric)
        except ValueError as error:
            raise UserError(f"ckpt.best_metric={best_metric}: {error}") from None
        self.ckpt_dir = Path(ckpt_dir)
        self.keep_last = keep_last
        self.best_metric = best_metric
        self.bound = bound
        self._lock = threading.Lock()

    # --- saving ---------------------------------------------------------------------------------

    def save(self, checkpoint: Checkpoint) -> Path:
        """Write one complete checkpoint, then move the pointers and apply retention.

        Raises :class:`CheckpointSaveError` (one line) when anything fails; weights that are not
        all finite are refused before anything is written.
        """
        name = layout.checkpoint_name(checkpoint.metadata.update)
        with self._exclusive(saving=name):
            final, replaced = self._write_complete(name, checkpoint)
            self._update_pointers(final, replaced)
            self._apply_retention(protect=name)
        return final

    def _write_complete(self, name: str, checkpoint: Checkpoint) -> tuple[Path, bool]:
        temp = self.ckpt_dir / layout.temp_name(checkpoint.metadata.update, os.getpid())
        final = self.ckpt_dir / name
        replaced = False
        try:
            _refuse_non_finite(checkpoint.weights)
            if not self.ckpt_dir.is_dir():
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                fsync_dir(self.ckpt_dir.parent)  # the new folder's own entry must survive a crash too
            if temp.exists():
                shutil.rmtree(temp)
            temp.mkdir()
            files = {}
            for filename, payload in checkpoint.payloads().items():
                if filename == METADATA_FILENAME or not is_plain_file_name(filename) or filename.startswith("."):
                    raise ValueError(f"payload name {filename!r} is not allowed (plain file names, not metadata.json)")
                files[filename] = _write_file(temp / filename, payload)
            metadata = dataclasses.replace(checkpoint.metadata, files=files, weights_fingerprint=_fingerprint(checkpoint.weights))
            _write_file(temp / METADATA_FILENAME, metadata.to_json())
            fsync_dir(temp)
            if final.exists():
                self._set_aside(final)
                replaced = True
            os.rename(temp, final)
            fsync_dir(self.ckpt_dir)
        except BaseException as error:
            shutil.rmtree(temp, ignore_errors=True)
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                raise
            raise CheckpointSaveError(_describe_failure(name, self.ckpt_dir, error)) from error
        log.info("saved checkpoint %s", final)
        return final, replaced

    def _set_aside(self, existing: Path) -> None:
        """A folder with the same name exists (a run forked from an older checkpoint): keep it."""
        counter = 1
        while (aside := existing.with_name(f"{existing.name}.superseded-{counter}")).exists():
            counter += 1
        os.rename(existing, aside)
        log.warning("%s already existed; moved it to %s (nothing deleted)", existing.name, aside.name)

    # --- pointers -------------------------------------------------------------------------------

    def _update_pointers(self, folder: Path, replaced: bool) -> None:
        metadata = read_metadata(folder)
        assert metadata is not None, "a checkpoint just written has its metadata"
        layout.write_pointer(self.ckpt_dir, "last", folder.name, metadata.update, metadata.metrics.value("val_loss"))
        out_of_bounds = self.bound.why_not_best(metadata) if self.bound is not None else None
        if out_of_bounds is not None and metadata.metrics.value(self.best_metric) is not None:
            log.warning("%s is not best by %s: %s", folder.name, self.best_metric, out_of_bounds)
        best = layout.read_pointer(self.ckpt_dir, "best")
        stale = (
            best is None
            or best.metric != self.best_metric
            or not layout.is_complete(self.ckpt_dir / best.name)
            or (replaced and best.name == folder.name)  # it named the weights just set aside
            or (self.bound is not None and self._out_of_bounds(best.name))  # chosen before the bound was set
        )
        if stale:
            self.rebuild_best()
            return
        value = metadata.metrics.value(self.best_metric)
        if value is not None and out_of_bounds is None and (best.value is None or _better(self.best_metric, value, best.value)):
            self._point_best(folder.name, metadata.update, metadata.metrics.value("val_loss"), value)

    def rebuild_best(self) -> Optional[layout.Pointer]:
        """Point ``best.json`` at the complete checkpoint with the best ``best_metric`` (newest on
        ties); remove it when none has a finite value. Used whenever the pointer cannot be trusted."""
        winner = best_by_metric(self.ckpt_dir, self.best_metric, self.bound)
        if winner is None:
            layout.pointer_path(self.ckpt_dir, "best").unlink(missing_ok=True)
            return None
        metadata, value = winner
        return self._point_best(metadata.name or layout.checkpoint_name(metadata.update), metadata.update, metadata.metrics.value("val_loss"), value)

    def _out_of_bounds(self, name: str) -> bool:
        metadata = read_metadata(self.ckpt_dir / name)
        return metadata is None or (self.bound is not None and self.bound.why_not_best(metadata) is not None)

    def _point_best(self, name: str, update: int, val_loss: Optional[float], value: float) -> layout.Pointer:
        return layout.write_pointer(self.ckpt_dir, "best", name, update, val_loss, metric=self.best_metric, value=value)


    # --- retention and cleanup ------------------------------------------------------------------

    def prune(self) -> list[Path]:
        """Apply retention now; returns the checkpoints deleted. Waits for a save in flight (in this
        or any other process) to finish first."""
        with self._exclusive():
            return self._apply_retention(protect=None)

    def _apply_retention(self, protect: Optional[str]) -> list[Path]:
        if self.keep_last < 1:
            return []
        complete = layout.scan(self.ckpt_dir).complete  # newest first
        keep = {entry.name for entry in complete[: self.keep_last]}
        for which in ("best", "last", "pinned"):  # pinned: a person chose it (f5app.studio's "keep this one")
            pointer = layout.read_pointer(self.ckpt_dir, which)
            if pointer is not None:
                keep.add(pointer.name)
        if protect:
            keep.add(protect)
        healthy = next((e.name for e in complete if _healthy(e.path)), None)
        if healthy is not None:
            keep.add(healthy)  # newer checkpoints of a diverged run never push out the last good one
        deleted = []
        for entry in complete:
            if entry.name not in keep:
                deleted.append(self._delete(entry.path))
        return deleted

    @contextlib.contextmanager
    def _exclusive(self, saving: Optional[str] = None) -> Iterator[None]:
        """This instance's threads, then every other holder of the folder (``flock`` on the folder's
        own descriptor, released with it however the process ends)."""
        with self._lock:
            if saving is not None and not self.ckpt_dir.is_dir():
                try:
                    self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                    fsync_dir(self.ckpt_dir.parent)  # the new folder's own entry must survive a crash too
                except OSError as error:
                    raise CheckpointSaveError(_describe_failure(saving, self.ckpt_dir, error)) from error
            try:
                fd = os.open(self.ckpt_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except FileNotFoundError:
                yield  # no folder: nothing to prune or clean, and no save in flight in it
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

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
        with self._exclusive():
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


def _healthy(folder: Path) -> bool:
    metadata = read_metadata(folder)
    return metadata is not None and not metadata.metrics.not_finite()


def _refuse_non_finite(weights: dict[str, Any]) -> None:
    """A checkpoint of NaN weights would only ever be resumed into more NaN: never write one."""
    try:
        require_finite(weights)
    except DamagedCheckpoint as error:
        raise ValueError(f"{error}; the run diverged, nothing was written") from None


def _write_file(path: Path, payload: Any) -> FileRecord:
    with open(path, "xb") as handle:
        if isinstance(payload, str):
            handle.write(payload.encode("utf-8"))
        else:
            import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

            torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return FileRecord(path.stat().st_size, **file_digests(path))


def _fingerprint(weights: dict[str, Any]) -> Optional[str]:
    """The weights fingerprint (EMA when present, as ``info`` computes it), so ``list`` needs no torch.
    An adapter checkpoint's is its (EMA) adapter's."""
    state = weights.get(EMA_STATE) or weights.get(MODEL_STATE) or weights.get(EMA_ADAPTER_STATE) or weights.get(ADAPTER_STATE)
    if not isinstance(state, dict):
        return None
    try:
        return weights_fingerprint(state)
    except Exception:  # odd weights must not cost the checkpoint; info recomputes from the file
        return None


def _describe_failure(name: str, ckpt_dir: Path, error: BaseException) -> str:
    if _is_disk_full(error, ckpt_dir):
        why = "no space left on device"
    elif isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"not writable ({error.strerror})"
    else:
        why = f"{type(error).__name__}: {first_line(error, default='')}".rstrip(": ")
    return f"could not save checkpoint {name} in {ckpt_dir}: {why}; nothing partial was left and earlier checkpoints are intact"


#: torch.save reports a failed write as RuntimeError ("... unexpected pos N vs M", "basic_ios::clear").
_TORCH_WRITE_FAILED = ("unexpected pos", "basic_ios::clear", "file write failed", "PytorchStreamWriter failed writing")


def _is_disk_full(error: BaseException, ckpt_dir: Path) -> bool:
    chain, cause = [], error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in chain):
        return True
    if any(isinstance(e, RuntimeError) and any(mark in str(e) for mark in _TORCH_WRITE_FAILED) for e in chain):
        try:
            return shutil.disk_usage(ckpt_dir).free < 64 * 1024 * 1024
        except OSError:
            return False
    return False
