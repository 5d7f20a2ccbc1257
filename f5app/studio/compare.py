"""Listen side by side: two or more checkpoints speak the same prompts with the same seed.

The work is ``python -m f5app.eval 'compare=[A,B,...]'``: each checkpoint is loaded through the
Synthesizer that f5app.infer uses, every clip is transcribed and scored (WER, SIM) by the one
evaluator, and the results land in one JSON file that the page reads. A typed text becomes a
prompt list (Seed-TTS ``meta.lst``) spoken with the references of the run's held-out prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from f5app.ckpt import layout
from f5app.ckpt.schema import read_metadata
from f5app.config import DataConfig, EvalConfig, RecordingsDataConfig, to_settings
from f5app.errors import UserError
from f5app.evaluation.prompts import load_prompts
from f5app.files import atomic_write, read_json_object
from f5app.studio.forms import SAFE_PATH, Setting
from f5app.studio.roots import Roots

MAX_CHECKPOINTS = 6
MAX_TEXT_CHARS = 1000
_SEED = Setting("seed", "int", "seed", low=0, high=2**31 - 1)
_PROMPTS = Setting("num_prompts", "int", "prompts", low=1, high=8)


def checkpoint_folder(roots: Roots, path: str) -> Path:
    folder = roots.inside(path, data=False)
    if not layout.is_complete(folder):
        raise UserError(f"{path} is not a complete checkpoint folder (update_<N> with metadata.json)")
    return folder


def plan(roots: Roots, body: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """What to run for a comparison request: checked checkpoints, prompts, seed, the eval overrides."""
    paths = body.get("checkpoints")
    if not isinstance(paths, list) or not 2 <= len(paths) <= MAX_CHECKPOINTS:
        raise UserError(f"choose between 2 and {MAX_CHECKPOINTS} checkpoints")
    folders = [checkpoint_folder(roots, p) for p in paths]
    if len(set(folders)) != len(folders):
        raise UserError("the same checkpoint is chosen twice")
    seed = int(_SEED.check(body.get("seed", 0), roots))
    count = int(_PROMPTS.check(body.get("num_prompts", 2), roots))
    text = body.get("text") or None
    if text is not None and (not isinstance(text, str) or len(text) > MAX_TEXT_CHARS or not text.strip()):
        raise UserError(f"the text must be 1 to {MAX_TEXT_CHARS} characters")
    for folder in folders:
        if not SAFE_PATH.match(str(folder)):
            raise UserError(f"{folder} has characters Hydra would read as syntax; rename the run")
    overrides = [f"compare=[{','.join(str(f) for f in folders)}]", f"out={out_dir / 'results.json'}",
                 f"eval.seed={seed}", f"eval.num_prompts={count}", "eval.save_audio=true"]
    if text is not None:
        overrides.append(f"eval.prompt_file={out_dir / 'prompts.lst'}")
    return {"folders": folders, "seed": seed, "num_prompts": count, "text": text, "overrides": overrides, "out_dir": out_dir}


def write_text_prompts(first: Path, text: str, count: int, seed: int, out_dir: Path) -> Path:
    """``prompts.lst``: ``text`` spoken with the references of the first checkpoint's held-out prompts."""
    metadata = read_metadata(first)
    section = dict(metadata.config_section("data") or {}) if metadata is not None else {}
    if not section.get("path"):
        raise UserError(f"{first} records no data set, so it has no held-out references; use the held-out prompts")
    schema = RecordingsDataConfig if section.get("name") == "recordings" else DataConfig
    data = to_settings(section, schema)
    prompts = load_prompts(EvalConfig(num_prompts=count, seed=seed), data)
    text = " ".join(text.split())
    lines = [f"{p.id}|{' '.join(p.ref_text.split())}|{p.ref_audio}|{text.replace('|', ' ')}" for p in prompts]
    out_dir.mkdir(parents=True, exist_ok=True)
    return atomic_write(out_dir / "prompts.lst", "\n".join(lines) + "\n", durable=False)


def progress(out_dir: Path, expected: int) -> dict[str, Any]:
    done = sum(1 for _ in (out_dir / "results").rglob("*.wav")) if (out_dir / "results").is_dir() else 0
    return {"done": min(done, expected), "total": expected, "unit": "clips"}


def results(out_dir: Path, folders: list[Path]) -> Optional[dict[str, Any]]:
    """The comparison as the page shows it: per checkpoint its scores and clips (None until written)."""
    record = read_json_object(out_dir / "results.json", max_bytes=32 * 1024 * 1024)
    if record is None:
        return None
    columns = []
    for row in record.get("compare") or []:
        label = str(row.get("label", ""))
        folder = Path(label)
        columns.append({
            "checkpoint": label,
            "run": folder.parent.parent.name if folder.parent.name == layout.CHECKPOINTS_DIRNAME else None,
            "name": folder.name,
            "metrics": row.get("metrics"),
            "items": [{key: item.get(key) for key in ("id", "text", "transcript", "wer", "cer", "sim", "audio", "seed")}
                      for item in row.get("items") or [] if isinstance(item, dict)],
        })
    return {"columns": columns, "created_at": record.get("created_at")}
