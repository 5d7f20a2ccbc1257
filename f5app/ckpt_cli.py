"""``python -m f5app.ckpt`` (= ``f5app-ckpt``): inspect, validate, resolve, export and prune checkpoints.

    resolve [--for train|infer] [--json] [hydra overrides...]   what train/infer would load, and why
    list RUN_DIR [--json]                                       the run's checkpoints, best/last/pinned marked
    info PATH [--json]                                          metadata, lineage, files, fingerprint
    validate PATH [--full] [--json]                             exit 1 when invalid
    export SRC OUT [--format safetensors|pt|peft] [--merge] [--no-ema]
                                                                weights for inference (format: OUT's suffix);
                                                                a LoRA adapter: --merge (into its base) or peft
    prune RUN_DIR [--keep-last N]                               apply retention now

Exit codes: 0 ok, 1 invalid or nothing found, 2 usage error or bad input, 3 stopped by a
signal. An entry point beside train.py and infer.py (``python -m f5app.ckpt`` runs it through
``f5app/ckpt/__main__.py``). No f5_tts import anywhere here; torch is imported only by the
commands that read tensors (info, validate, export, resolve), inside the checkpoint modules.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from f5app.ckpt import layout
from f5app.ckpt.export import adapter_record, export_adapter, export_merged, export_weights
from f5app.ckpt.reader import CheckpointReader
from f5app.ckpt.resolve import ResolutionError, resolve
from f5app.ckpt.schema import read_export_record, read_metadata
from f5app.ckpt.store import CheckpointStore
from f5app.ckpt.validate import validate
from f5app.config import CONF_DIR, CkptConfig, ModelConfig, to_settings
from f5app.errors import UserError, first_line, run_entry_point
from f5app.free_text import literal_overrides
from f5app.hydra_setup import register
from f5app.infer import FREE_TEXT_KEYS
from f5app.training.lock import RunLock, RunLockedError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    def body() -> int:
        try:
            return args.handler(args)
        except _UsageError as error:
            print(f"f5app-ckpt {args.command}: {error}", file=sys.stderr)
            return EXIT_USAGE

    return run_entry_point(f"f5app-ckpt {args.command}", body)


class _UsageError(UserError):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="f5app-ckpt", description="Inspect and manage f5app checkpoints.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("resolve", help="show which checkpoint train/infer would load with these overrides")
    p.add_argument("--for", dest="purpose", choices=("train", "infer"), default="train")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, exactly as given to f5app.train / f5app.infer")
    p.set_defaults(handler=_cmd_resolve)

    p = commands.add_parser("list", help="table of a run's checkpoints")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_list)

    p = commands.add_parser("info", help="metadata, lineage, files and weights fingerprint of a checkpoint")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_info)

    p = commands.add_parser("validate", help="check a checkpoint (exit 1 when invalid)")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--full", action="store_true", help="also verify sha256 of every file and that all tensors are finite")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_validate)

    p = commands.add_parser("export", help="write inference weights (EMA) as safetensors or upstream .pt, or a LoRA adapter")
    p.add_argument("src", type=Path, metavar="SRC")
    p.add_argument("out", type=Path, metavar="OUT")
    p.add_argument("--format", dest="fmt", choices=("safetensors", "pt", "peft"), default=None,
                   help="default: the one OUT's suffix names (.safetensors or .pt); safetensors for a folder; "
                        "peft (a folder) for a LoRA adapter checkpoint without --merge")
    p.add_argument("--merge", action="store_true", help="a LoRA adapter checkpoint: fold it into its base (found and "
                   "fingerprint-checked as for inference) and write full weights in upstream's format")
    p.add_argument("--no-ema", dest="use_ema", action="store_false", help="export the live weights instead of EMA")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(handler=_cmd_export)

    p = commands.add_parser("prune", help="apply retention now: keep the newest N plus best")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--keep-last", type=int, default=None, help="default: ckpt.keep_last's default (3)")
    p.set_defaults(handler=_cmd_prune)
    return parser


# --- resolve ------------------------------------------------------------------------------------


def _cmd_resolve(args) -> int:
    ckpt, model, run_dir = compose_for(args.purpose, args.overrides)
    resolve_log = logging.getLogger("f5app.ckpt.resolve")
    level = resolve_log.level
    resolve_log.setLevel(logging.ERROR)  # the table is printed below; do not log it twice
    try:
        resolution = resolve(ckpt, purpose=args.purpose, run_dir=run_dir, model=model, dry_run=True)
    except ResolutionError as error:
        if args.json:
            _print_json(error.to_dict())
        else:
            print(error.table())
            print(f"error: {error}")
        return EXIT_INVALID
    finally:
        resolve_log.setLevel(level)
    if args.json:
        _print_json(resolution.to_dict())
    else:
        print(resolution.table())
        print(resolution.summary())
    return EXIT_OK


def compose_for(purpose: str, overrides: Sequence[str]):
    """(CkptConfig, ModelConfig, run dir) exactly as the train/infer entry point would see them."""
    register()
    name = "train" if purpose == "train" else "infer"
    if purpose == "infer":
        overrides = literal_overrides(overrides, FREE_TEXT_KEYS)  # the same words f5app.infer takes literally
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose(name, overrides=list(overrides), return_hydra_config=purpose == "train")
        ckpt = to_settings(cfg.ckpt, CkptConfig)
        model = to_settings(cfg.model, ModelConfig)
        # train: Hydra's run dir (what HydraConfig.runtime.output_dir becomes); infer: cfg.run_dir
        run_dir = OmegaConf.select(cfg, "hydra.run.dir") if purpose == "train" else cfg.run_dir
    except (HydraException, OmegaConfBaseException, ValueError) as error:
        raise _UsageError(first_line(error)) from None
    return ckpt, model, Path(str(run_dir))


# --- list ---------------------------------------------------------------------------------------


def _cmd_list(args) -> int:
    ckpt_dir = layout.checkpoints_dir(args.run_dir)
    if not ckpt_dir.is_dir():
        print(f"f5app-ckpt list: {ckpt_dir} does not exist", file=sys.stderr)
        return EXIT_INVALID
    found = layout.scan(ckpt_dir)
    best, last = layout.read_pointer(ckpt_dir, "best"), layout.read_pointer(ckpt_dir, "last")
    pinned = layout.read_pointer(ckpt_dir, "pinned")
    rows = []
    for entry, status in (
        [(e, None) for e in found.numbered] + [(e, "quarantined") for e in found.quarantined] + [(e, "temporary") for e in found.temporary]
    ):
        metadata = read_metadata(entry.path) if entry.path.is_dir() else None
        row = _list_row(entry, metadata, status or _quick_status(entry.path, metadata), best, last, pinned)
        rows.append(row)
    rows.sort(key=lambda r: (r["update"] is None, -(r["update"] or 0)))
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return EXIT_OK if rows else EXIT_INVALID
    if not rows:
        print(f"no checkpoints in {ckpt_dir}")
        return EXIT_INVALID
    metric = best.metric if best is not None else "val_loss"
    values_of = [_listed_metrics(r["metrics"]) for r in rows]
    measured = list(dict.fromkeys(name for values in values_of for name, value in values.items() if value is not None))
    columns = ["val_loss"] + [name for name in ("wer", "cer", "sim") if name in measured] + [name for name in measured if "@" in name]
    table = [("name", "update", *columns, "size", "status", "marks")]
    for r, values in zip(rows, values_of):
        table.append((r["name"], "-" if r["update"] is None else str(r["update"]), *(_fmt_loss(values.get(c)) for c in columns),
                      _fmt_size(r["size_bytes"]), r["status"], ",".join(r["marks"])))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print(f"checkpoints in {ckpt_dir}" + (f" (best by {metric})" if best is not None else ""))
    for row in table:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    for r in rows:
        if r["reason"]:
            print(f"  {r['name']}: {r['reason']}")
    return EXIT_OK


def _listed_metrics(metrics: dict) -> dict:
    """``metrics`` (as metadata.json holds them) -> the numbers ``list`` shows, by column name."""
    scores = (metrics or {}).get("eval") or {}
    values = {"val_loss": (metrics or {}).get("val_loss"), **{name: scores.get(name) for name in ("wer", "cer", "sim")}}
    for set_name, one in (scores.get("sets") or {}).items():
        values.update({f"{name}@{set_name}": one.get(name) for name in ("wer", "cer", "sim")})
    return values


def _list_row(entry, metadata, status, best, last, pinned=None) -> dict:
    marks = [which for which, p in (("best", best), ("last", last), ("pinned", pinned)) if p is not None and p.name == entry.name]
    files = {name: f.to_dict() for name, f in metadata.files.items()} if metadata is not None else {}
    size = sum(f["size"] for f in files.values()) if files else _du(entry.path)
    return {
        "name": entry.name,
        "path": str(entry.path),
        "update": metadata.update if metadata is not None else entry.update,
        "metrics": metadata.metrics.to_dict() if metadata is not None else {},
        "size_bytes": size,
        "status": status,
        "marks": marks,
        "created_at": metadata.created_at if metadata is not None else None,
        "id": metadata.id if metadata is not None else None,
        "lineage": metadata.to_dict()["lineage"] if metadata is not None else None,
        "config": metadata.config if metadata is not None else None,
        "files": files,
        "fingerprint": metadata.weights_fingerprint if metadata is not None else None,  # recorded at save time
        "reason": layout.quarantine_reason(entry.path) if status == "quarantined" else None,
    }


def _quick_status(folder: Path, metadata) -> str:
    """Filesystem-only checks (no torch): complete, recorded files present with recorded sizes."""
    if metadata is None:
        return "incomplete" if not (folder / "metadata.json").exists() else "damaged metadata"
    for name, record in metadata.files.items():
        file = folder / name
        if not file.is_file():
            return f"missing {name}"
        if file.stat().st_size != record.size:
            return f"size mismatch {name}"
    return "ok"


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- info / validate ----------------------------------------------------------------------------


def _cmd_info(args) -> int:
    result = validate(args.path, model=None, vocab_size=None, full=False, min_size_bytes=1)
    if result.kind is None:
        print(f"f5app-ckpt info: {args.path} does not exist", file=sys.stderr)
        return EXIT_INVALID
    metadata = result.metadata or _sidecar(args.path)
    record = metadata.to_dict() if metadata is not None else {}
    fingerprint, fingerprint_error = None, None
    if result.ok:
        try:  # an adapter checkpoint's is its own (EMA) adapter's
            fingerprint = CheckpointReader(args.path, metadata=result.metadata).fingerprint()
        except Exception as error:  # a damaged file still gets its metadata shown
            fingerprint_error = first_line(error)
    info = {
        "path": str(args.path),
        "kind": result.kind,
        "valid": result.ok,
        "reason": result.reason,
        **{key: record.get(key) for key in ("id", "epoch", "samples_seen", "created_at", "config", "hydra", "model", "lineage",
                                            "versions", "git_commit", "world_size", "precision", "adapter")},
        "update": metadata.update if metadata is not None else _container_update(args.path, result),
        "metrics": record.get("metrics") or {},
        "files": record.get("files") or _file_sizes(args.path),
        "num_tensors": len(result.shapes),
        "fingerprint": fingerprint,
    }
    if fingerprint_error:
        info["fingerprint_error"] = fingerprint_error
    if args.json:
        _print_json(info)
    else:
        _print_info(info)
    return EXIT_OK if result.ok else EXIT_INVALID


def _print_info(info: dict) -> None:
    print(f"{info['path']}  ({info['kind']}, {'valid' if info['valid'] else 'INVALID: ' + info['reason']})")
    for key in ("id", "update", "epoch", "samples_seen", "created_at", "world_size", "precision", "git_commit", "fingerprint"):
        if info.get(key) is not None:
            print(f"  {key:13} {info[key]}")
    if info["metrics"]:
        histories = {"val_history": "validation", "eval_history": "evaluation", "eval_set_history": "set evaluation"}
        shown = {k: v for k, v in info["metrics"].items() if k not in (*histories, "eval", "nonfinite") and v is not None}
        shown.update({k: v for k, v in _listed_metrics(info["metrics"]).items() if v is not None})  # val_loss, wer..., wer@SET...
        print("  metrics       " + ", ".join(f"{k}={_fmt_loss(v)}" for k, v in shown.items()))
        counts = [(len(info["metrics"].get(key) or ()), what) for key, what in histories.items()
                  if key != "eval_set_history" or info["metrics"].get(key)]  # runs without eval.sets never mention them
        if any(n for n, _ in counts):
            print("  history       " + ", ".join(f"{n} {what}{'' if n == 1 else 's'}" for n, what in counts))
        if info["metrics"].get("nonfinite"):
            print("  non-finite    " + ", ".join(info["metrics"]["nonfinite"]))
    lineage = info.get("lineage") or {}
    if lineage:
        print(f"  lineage       {lineage.get('mode')}" + "".join(
            f"; {key.replace('_', ' ')} {_describe_ref(lineage.get(key))}" for key in ("resumed_from", "finetuned_from") if lineage.get(key)))
    adapter = info.get("adapter")
    if adapter:
        base = adapter.get("base") or {}
        print(f"  adapter       {adapter.get('method')} rank {adapter.get('rank')} alpha {adapter.get('alpha')} on "
              f"{', '.join(adapter.get('target_modules') or [])}")
        where = f"{base.get('repo_id')}/{base.get('filename')}@{base.get('revision')}" if base.get("source") == "pretrained" else base.get("path")
        print(f"  base          {where} (fingerprint {str(base.get('fingerprint'))[:16]}…)")
    if info.get("model"):
        arch = (info["model"] or {}).get("arch") or {}
        print(f"  model         {info['model'].get('name')} " + " ".join(f"{k}={v}" for k, v in arch.items()))
    overrides = (info.get("hydra") or {}).get("overrides")
    if overrides:
        print("  overrides     " + " ".join(overrides))
    print("  files")
    for name, meta in (info["files"] or {}).items():
        digest = meta.get("sha256")
        print(f"    {name:22} {_fmt_size(meta.get('size')):>10}" + (f"  sha256 {digest[:16]}…" if digest else ""))


def _cmd_validate(args) -> int:
    result = validate(args.path, model=None, vocab_size=None, full=args.full, min_size_bytes=1)
    if args.json:
        _print_json({"path": str(args.path), "full": args.full, **result.to_dict()})
    elif result.ok:
        print(f"valid: {args.path} ({result.kind}; checked {', '.join(result.checks)})")
    else:
        print(f"INVALID: {args.path}: {result.reason}")
    return EXIT_OK if result.ok else EXIT_INVALID


def _container_update(path: Path, result) -> Optional[int]:
    """Upstream trainer files record ``update`` in the pickle itself (read memory-mapped, weights-only)."""
    if not result.ok or result.kind != "upstream_pt":
        return None
    return CheckpointReader(path).update()


def _sidecar(path: Path):
    record = read_export_record(path) if path.is_file() else None
    return record.source if record is not None else None


def _describe_ref(ref: dict) -> str:
    where = ref.get("id") or ref.get("path") or "?"
    return f"{where}" + (f" (update {ref['update']})" if ref.get("update") is not None else "") + (f" via {ref['source']}" if ref.get("source") else "")


def _file_sizes(path: Path) -> dict:
    if path.is_file():
        return {path.name: {"size": path.stat().st_size}}
    return {p.name: {"size": p.stat().st_size} for p in sorted(path.iterdir()) if p.is_file()}


# --- export / prune -----------------------------------------------------------------------------


def _cmd_export(args) -> int:
    if not args.src.exists():
        raise _UsageError(f"{args.src} does not exist")
    try:
        if args.merge:
            written = export_merged(args.src, args.out, None if args.fmt == "peft" else args.fmt, use_ema=args.use_ema, overwrite=args.overwrite)
        elif args.fmt == "peft" or (args.fmt is None and adapter_record(args.src) is not None and args.out.suffix not in (".safetensors", ".pt")):
            written = export_adapter(args.src, args.out, use_ema=args.use_ema, overwrite=args.overwrite)
        else:
            written = export_weights(args.src, args.out, args.fmt, use_ema=args.use_ema, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"f5app-ckpt export: {first_line(error)}", file=sys.stderr)
        return EXIT_INVALID
    print(f"exported {args.src} -> {written}")
    return EXIT_OK


def _cmd_prune(args) -> int:
    keep_last = args.keep_last if args.keep_last is not None else CkptConfig.keep_last
    if keep_last < 1:
        raise _UsageError(f"--keep-last must be at least 1 (got {keep_last})")
    ckpt_dir = layout.checkpoints_dir(args.run_dir)
    if not ckpt_dir.is_dir():
        print(f"f5app-ckpt prune: {ckpt_dir} does not exist", file=sys.stderr)
        return EXIT_INVALID
    # The trainer's lock: a trainer saving now would find what it expects deleted, and only
    # while nobody holds the lock is every temporary folder a dead writer's (its pid, as seen
    # from another PID namespace, proves nothing).
    run_dir = ckpt_dir.parent if ckpt_dir.name == layout.CHECKPOINTS_DIRNAME else ckpt_dir
    try:
        lock = RunLock(run_dir).acquire()
    except RunLockedError as error:
        print(f"f5app-ckpt prune: refused: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        store = CheckpointStore(ckpt_dir, keep_last=keep_last)
        leftovers = store.cleanup_partials()
        deleted = store.prune()
    finally:
        lock.release()
    for path in deleted:
        print(f"deleted {path.name}")
    for path in leftovers:
        print(f"removed leftover {path.name}")
    kept = [e.name for e in layout.scan(ckpt_dir).complete]
    print(f"kept {len(kept)}: {', '.join(kept) or 'none'}")
    return EXIT_OK


# --- formatting ---------------------------------------------------------------------------------


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _fmt_size(size: Any) -> str:
    if not isinstance(size, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def _fmt_loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def run() -> None:
    """The console script ``f5app-ckpt`` and ``python -m f5app.ckpt``."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sys.exit(main())


if __name__ == "__main__":
    run()
