"""Benchmark: resolving ``ckpt=auto`` (training) in a run with 20 checkpoints, several >= 1 GiB,
some corrupt — f5app's resolver vs a naive one that fully ``torch.load``s each candidate.

    .venv/bin/python scripts/bench_resolve.py [--dir DIR] [--big-gib 1.0] [--keep]

The run directory (newest first):
  update_20  >= 1 GiB  model.pt lacks model_state_dict/ema_model_state_dict (missing keys)
  update_19  >= 1 GiB  model.pt truncated
  update_18            model.pt replaced by random bytes
  update_17            model.pt is 0 bytes
  update_16  >= 1 GiB  valid  <- both resolvers should choose this
  update_15  >= 1 GiB  valid
  update_1..14         valid, small
The size comes from an optimizer state (Adam moments) inside model.pt, as in real trainer
checkpoints. Both resolvers walk newest first and stop at the first valid candidate; f5app's runs
as a dry run (nothing renamed) so both see the same folder. Peak memory growth is the process's
peak RSS (VmHWM, reset through /proc/self/clear_refs) above its RSS before each resolver ran.
Creating the folder takes a while (several GiB written); timing covers resolution only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ckpt_factory import ema_section, fake_cfm_state_dict, make_f5app_checkpoint, random_bytes, tiny_model_config, tiny_vocab  # noqa: E402
from f5app.ckpt import layout  # noqa: E402
from f5app.ckpt.resolve import resolve  # noqa: E402
from f5app.config import CkptConfig  # noqa: E402

MODEL, VOCAB = tiny_model_config(), tiny_vocab()
BIG = {20, 19, 16, 15}


def build_run(run_dir: Path, big_gib: float) -> None:
    ckpt_dir = run_dir / "checkpoints"
    moments = int(big_gib * (1 << 30)) // 4 // 2 + 1  # two fp32 moment tensors per big file
    for update in range(1, 21):
        state = fake_cfm_state_dict(MODEL, len(VOCAB), seed=update)
        folder = make_f5app_checkpoint(ckpt_dir, update, MODEL, VOCAB, val_loss=1.0 / update, state=state)
        if update in BIG:
            exp_avg = torch.zeros(moments)
            payload = {
                "model_state_dict": state,
                "ema_model_state_dict": ema_section(state, update),
                "optimizer_state_dict": {"state": {0: {"exp_avg": exp_avg, "exp_avg_sq": exp_avg.clone()}}, "param_groups": []},
                "update": update,
            }
            if update == 20:
                del payload["model_state_dict"], payload["ema_model_state_dict"]
            _rewrite_model_pt(folder, payload)
            del exp_avg, payload
    os.truncate(ckpt_dir / "update_00000019" / "model.pt", (ckpt_dir / "update_00000019" / "model.pt").stat().st_size // 2)
    random_bytes(ckpt_dir / "update_00000018" / "model.pt")
    (ckpt_dir / "update_00000017" / "model.pt").write_bytes(b"")


def _rewrite_model_pt(folder: Path, payload: dict) -> None:
    """Replace model.pt and record its size in metadata, as if it had been saved that way."""
    import json

    from f5app.files import sha256_file as sha256_of

    torch.save(payload, folder / "model.pt")
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["files"]["model.pt"] = {"size": (folder / "model.pt").stat().st_size, "sha256": sha256_of(folder / "model.pt")}
    (folder / "metadata.json").write_text(json.dumps(metadata))


def naive_resolve(run_dir: Path) -> Path | None:
    """What the origin report's system did: fully load each candidate, newest first, check keys."""
    for entry in layout.scan(run_dir / "checkpoints").numbered:
        try:
            payload = torch.load(entry.path / "model.pt", map_location="cpu", weights_only=True)
        except Exception:
            continue
        if isinstance(payload, dict) and "model_state_dict" in payload:
            return entry.path
    return None


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(label: str, func):
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    growth_mib = (_rss_kib("VmHWM") - before) / 1024
    print(f"{label:8} {seconds:8.3f} s   peak memory +{growth_mib:8.1f} MiB   chose {result}")
    return seconds, growth_mib, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to build the run (default: a temp folder)")
    parser.add_argument("--big-gib", type=float, default=1.0, help="size of each big model.pt in GiB")
    parser.add_argument("--keep", action="store_true", help="keep the run folder afterwards")
    args = parser.parse_args()

    root = args.dir or Path(tempfile.mkdtemp(prefix="bench_resolve_"))
    run_dir = root / "runs" / "bench"
    t0 = time.perf_counter()
    build_run(run_dir, args.big_gib)
    sizes = sorted(((p.stat().st_size, p.parent.name) for p in run_dir.glob("checkpoints/*/model.pt")), reverse=True)
    print(f"built 20 checkpoints in {time.perf_counter() - t0:.1f} s; largest model.pt files: "
          + ", ".join(f"{name} {size / (1 << 30):.2f} GiB" for size, name in sizes[:4]))

    def ours():
        return resolve(CkptConfig(), purpose="train", run_dir=run_dir, model=MODEL, vocab_size=len(VOCAB), dry_run=True).chosen.path.name

    f5app_s, f5app_mib, f5app_choice = measure("f5app", ours)
    naive_s, naive_mib, naive_choice = measure("naive", lambda: naive_resolve(run_dir).name)
    print(f"ratio    naive / f5app time = {naive_s / f5app_s:.0f}x;  peak memory growth f5app {f5app_mib:.1f} MiB vs naive {naive_mib:.1f} MiB")
    verdict = f5app_s < 0.5 and f5app_mib < 100 and f5app_choice == naive_choice == "update_00000016"
    print("PASS" if verdict else "FAIL", "(target: f5app under 0.5 s and under 100 MB, both choose update_00000016)")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
