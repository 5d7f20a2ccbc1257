"""What the pages show, read from the state the product writes, through its own readers.

``run_status.json`` (f5app.run_state), checkpoint records (f5app.ckpt.schema.read_metadata and the
layout's pointers), the curves f5app.report draws, each evaluation's ``results.json``
(f5app.training.evaluation) and the run's lock (f5app.run_state.lock_holder). Nothing is parsed
from a log. JSON only: no torch import.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from f5app.ckpt import layout
from f5app.ckpt.schema import CheckpointMetadata, read_metadata
from f5app.files import read_json_object
from f5app.run_state import LOCK_FILENAME, eval_curve, lock_holder, read_progress, read_run_status, val_curve
from f5app.studio.roots import Roots, valid_name
from f5app.training.evaluation import RESULTS_FILENAME

EVAL_DIRNAME = "eval"


def list_runs(roots: Roots) -> list[dict[str, Any]]:
    """Every run under ``runs/`` and every job of every sweep under ``sweeps/``, newest first."""
    rows = [run_summary(folder, folder.name, None) for folder in _folders(roots.runs)]
    for sweep in _folders(roots.sweeps):
        rows += [run_summary(job, job.name, sweep.name) for job in _folders(sweep)
                 if (job / layout.CHECKPOINTS_DIRNAME).is_dir() or (job / ".hydra").is_dir()]
    return sorted(rows, key=lambda row: row["updated_at"] or "", reverse=True)


def _folders(parent: Path) -> list[Path]:
    try:
        return sorted(p for p in parent.iterdir() if valid_name(p.name) and p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def run_summary(run_dir: Path, name: str, sweep: Optional[str]) -> dict[str, Any]:
    """One row of the runs list: status, progress, latest losses, best scores, age."""
    status = read_run_status(run_dir)
    progress = read_progress(run_dir)
    holder = lock_holder(run_dir / LOCK_FILENAME)
    newest = read_metadata(progress.last_checkpoint) if progress.last_checkpoint is not None else None
    evals = eval_curve(run_dir)
    state, message = _state(status, holder)
    update = status.update if status is not None else progress.update
    target = status.max_updates if status is not None else progress.trainer.get("max_updates")
    updated_at = status.updated_at if status is not None else (newest.created_at if newest is not None else "")
    return {
        "name": name,
        "sweep": sweep,
        "state": state,
        "message": message,
        "locked_by": holder,
        "update": update,
        "max_updates": target,
        "loss": newest.metrics.train_loss if newest is not None else None,
        "val_loss": newest.metrics.val_loss if newest is not None else None,
        "best_wer": min((p[1] for p in evals if p[1] is not None), default=None),
        "best_sim": max((p[3] for p in evals if p[3] is not None), default=None),
        "updated_at": updated_at,
        "age_seconds": _age(updated_at),
        "finetune": (newest.config_section("finetune") or {}).get("name") if newest is not None else None,
    }


def _state(status, holder: Optional[str]) -> tuple[str, str]:  # noqa: ANN001 (RunStatus | None)
    if holder is not None:
        return "running", f"locked by {holder}"
    if status is None:
        return "unknown", "no run_status.json (never started, or an older f5app)"
    if status.state == "running":  # said running, but no process holds its lock: it died
        return "failed", "ended without saying so (killed or crashed); starting it again resumes it"
    return status.state, status.message


def _age(stamp: str) -> Optional[float]:
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - then).total_seconds())


def run_detail(run_dir: Path, name: str, sweep: Optional[str]) -> dict[str, Any]:
    """The run page: its summary, curves, checkpoint table and evaluation clips."""
    checkpoints = checkpoint_rows(run_dir)
    losses = sorted((row["update"], row["train_loss"]) for row in checkpoints if row["train_loss"] is not None and row["update"] is not None)
    return {
        **run_summary(run_dir, name, sweep),
        "run_dir": str(run_dir),
        "curves": {
            "loss": [list(point) for point in losses],
            "val_loss": val_curve(run_dir),
            "eval": eval_curve(run_dir),  # [update, wer, cer, sim]
        },
        "checkpoints": checkpoints,
        "evaluations": evaluations(run_dir),
    }


def checkpoint_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The checkpoint table: complete, incomplete and quarantined folders with their marks."""
    ckpt_dir = layout.checkpoints_dir(run_dir)
    found = layout.scan(ckpt_dir)
    pointers = {which: layout.read_pointer(ckpt_dir, which) for which in ("best", "last", "pinned")}
    rows = []
    for entry, quarantined in [(e, False) for e in found.numbered] + [(e, True) for e in found.quarantined]:
        metadata = read_metadata(entry.path) if entry.path.is_dir() else None
        rows.append(_checkpoint_row(entry, metadata, quarantined, pointers))
    return sorted(rows, key=lambda r: (r["update"] is None, -(r["update"] or 0), r["name"]))


def _checkpoint_row(entry: layout.Entry, metadata: Optional[CheckpointMetadata], quarantined: bool, pointers: dict) -> dict[str, Any]:
    scores = metadata.metrics.eval if metadata is not None else None
    adapter = metadata.adapter if metadata is not None else None
    if quarantined:
        status = "quarantined"
    elif metadata is None:
        status = "incomplete"
    else:
        status = "ok"
    base = None
    if adapter is not None:
        ref = adapter.base
        base = ref.path or (f"{ref.repo_id}/{ref.filename}" if ref.repo_id else None)
    return {
        "name": entry.name,
        "path": str(entry.path),
        "update": metadata.update if metadata is not None else entry.update,
        "train_loss": metadata.metrics.train_loss if metadata is not None else None,
        "val_loss": metadata.metrics.val_loss if metadata is not None else None,
        "wer": scores.wer if scores is not None else None,
        "cer": scores.cer if scores is not None else None,
        "sim": scores.sim if scores is not None else None,
        "size_bytes": sum(f.size for f in metadata.files.values()) if metadata is not None and metadata.files else None,
        "status": status,
        "reason": layout.quarantine_reason(entry.path) if quarantined else None,
        "marks": [which for which, pointer in pointers.items() if pointer is not None and pointer.name == entry.name],
        "adapter": adapter is not None,
        "base": base,
        "created_at": metadata.created_at if metadata is not None else None,
    }


def evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """Each evaluation's clips (newest first), with text, transcript and scores from its results.json."""
    out = []
    folder = Path(run_dir) / EVAL_DIRNAME
    for sub in sorted(folder.glob("update_*"), reverse=True):
        update = layout.parse_update(sub.name)
        if update is None or not sub.is_dir():
            continue
        results = read_json_object(sub / RESULTS_FILENAME, max_bytes=16 * 1024 * 1024) or {}
        items = results.get("items") if isinstance(results.get("items"), list) else []
        clips = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("audio"), str):
                clips.append({key: item.get(key) for key in ("id", "text", "transcript", "wer", "cer", "sim", "audio", "seconds")})
        if not clips:  # an evaluation from before results.json: the clips alone
            clips = [{"id": wav.stem, "audio": str(wav), "text": None, "transcript": None} for wav in sorted(sub.glob("*.wav"))]
        out.append({"update": update, "metrics": results.get("metrics"), "clips": clips})
    return out
