"""The ``training`` section of scripts/bench.py at the sizes people train (``--model f5tts_v1_small``
or ``f5tts_v1_base``, random weights): f5app's Trainer against upstream's ``f5_tts.model.Trainer`` on
the same batches, and f5app with each memory option, side by side in one run.

Each variant trains in its own worker process, one after the other (two base-size trainings at once
would need ~14 GB), so each one's peak memory is its own:

  f5app                    f5app's real Trainer (``f5app.train``'s set-up, checkpointing off)
  upstream                 upstream's Trainer on the same mels, the same batches in the same order
  checkpoint_activations   f5app with ``model.arch.checkpoint_activations=true``
  adamw8bit                f5app with ``optim=adamw8bit``

Speed: updates/s over the updates after the first (which pays one-off costs), timed at each EMA
update as in the tiny training section. Efficiency: the model FLOPs of every timed update
(forward + backward of ``CFM.forward`` on that update's batch, counted by
``torch.utils.flop_counter`` on the batch itself; recomputation by activation checkpointing is not
model work and is not counted) over its wall time, against the dense-matmul peak this worker
reaches in the training dtype on the same device, measured in the same process just before
training (MFU). Memory: each worker's peak RSS (VmHWM) at the end of training, and on CUDA
``torch.cuda.max_memory_allocated``.

The data are the first ``clips`` utterances of the bundled demo set (1.6-3.3 s each), cut into
frame batches of ``frames`` mel frames; upstream trains whole epochs, so both sides run the same
number of whole epochs.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import bench
from bench import Row, Worker, compose_train_config, serve
from bench_lora import _peak_rss_mib as vm_peak_rss_mib  # VmHWM, the one reader of it

VARIANTS = ("f5app", "upstream", "checkpoint_activations", "adamw8bit")
#: The f5app overrides of each f5app variant.
VARIANT_OVERRIDES = {"f5app": [], "checkpoint_activations": ["model.arch.checkpoint_activations=true"], "adamw8bit": ["optim=adamw8bit"]}


def default_sizes(device: str) -> dict[str, int]:
    """Short clips and few updates on a CPU (minutes); the whole demo set in one big batch on a GPU."""
    if device == "cuda":
        return {"clips": 40, "frames": 9000, "max_samples": 64, "updates": 20}
    return {"clips": 4, "frames": 500, "max_samples": 2, "updates": 2}


def subset_of_demo(folder: Path, clips: int) -> Path:
    """A csv_wavs folder holding the first ``clips`` utterances of the bundled demo set (plus one for validation)."""
    source = bench.ROOT / "f5app" / "assets" / "demo"
    rows = (source / "metadata.csv").read_text(encoding="utf-8").splitlines()
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    for row in rows[1:clips + 2]:
        shutil.copy(source / row.split("|", 1)[0], folder / "wavs")
    (folder / "metadata.csv").write_text("\n".join(rows[:clips + 2]) + "\n", encoding="utf-8")
    return folder


def overrides(workdir: Path, data: Path, model: str, device: str, precision: str, frames: int, max_samples: int,
              updates: int, run_name: str, extra: list[str]) -> list[str]:
    return [
        f"model={model}", "data=csv_wavs", f"data.path={data}", f"data.prepared_dir={workdir / 'prepared'}",
        f"data.frames_per_gpu={frames}", f"data.max_samples={max_samples}", "data.val_fraction=0.0", "data.val_min_items=1",
        "ckpt.allow_scratch=true", "ckpt.train_chain=[scratch]", "logger=none", f"output_root={workdir}", f"run_name={run_name}",
        "optim.lr=1e-4", "optim.warmup_updates=10", "optim.weight_decay=0.01",  # upstream's AdamW weight decay
        f"trainer.max_updates={updates}", "trainer.epochs=100000", "trainer.save_every=0", "trainer.val_every=0",
        "trainer.sample_every=0", "eval.every=0", "trainer.log_every=1000", "trainer.progress_bar=false",
        f"trainer.mixed_precision={precision}", f"trainer.cpu={'true' if device == 'cpu' else 'false'}",
        "trainer.async_save=false", "trainer.ema_decay=0.9999", *extra,
    ]


# ---------------------------------------------------------------------------------------- the worker
def matmul_peak(device: Any, dtype: Any) -> float:
    """The best FLOP/s of a square matmul in ``dtype`` on ``device`` (the denominator of MFU)."""
    import torch

    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = math.inf
    for _ in range(20 if device.type == "cuda" else 6):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def count_flops(model: Any, inputs: tuple, precision: str) -> int:
    """Forward + backward FLOPs of one training step of ``model`` (a CFM) on ``inputs``.

    torch's counter knows the CUDA attention kernels but not the CPU one that
    ``scaled_dot_product_attention`` runs here, so that one is counted with the same formula."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop, sdpa_flop

    aten = torch.ops.aten
    # the registered formulas come wrapped (shapes from tensors); FlopCounterMode wraps custom ones itself
    cpu_attention = {aten._scaled_dot_product_flash_attention_for_cpu: sdpa_flop.__wrapped__,
                     aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_backward_flop.__wrapped__}
    inp, text, lens = inputs
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    device = next(model.parameters()).device
    with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss, _, _ = model(inp.to(device), text=text.to(device) if torch.is_tensor(text) else text, lens=lens.to(device))
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def size_worker(args: Any) -> None:
    """Serve ``peak`` and one ``train`` request for one variant (``args.method``)."""
    import torch
    from f5_tts.model.cfm import CFM

    from f5app.config import TrainConfig, resolved_container, to_settings
    from f5app.data.dataset import FrameBatches, load_splits
    from f5app.data.prepare import prepare
    from f5app.model import build_cfm

    if args.threads:
        torch.set_num_threads(args.threads)
    variant, workdir, data = args.method, args.workdir, Path(args.base)
    clock = bench.UpdateClock()
    batch_of_update: list[tuple] = []  # the shape key of every training forward, in order
    inputs_of: dict[tuple, tuple] = {}  # one real batch of each shape, for counting its FLOPs
    counted_forward = CFM.forward

    def recorded_forward(cfm, inp, text, *rest, lens=None, **kwargs):  # noqa: ANN001, ANN202
        if cfm.training and torch.is_grad_enabled():
            key = (tuple(inp.shape), tuple(text.shape) if torch.is_tensor(text) else (len(text), max(map(len, text))))
            batch_of_update.append(key)
            if key not in inputs_of:
                inputs_of[key] = (inp.detach().cpu().clone(), text.detach().cpu().clone() if torch.is_tensor(text) else list(text),
                                  lens.detach().cpu().clone() if lens is not None else torch.full((inp.shape[0],), inp.shape[1]))
        return counted_forward(cfm, inp, text, *rest, lens=lens, **kwargs)

    CFM.forward = recorded_forward

    def settings_for(run_name: str, updates: int):  # noqa: ANN202
        extra = VARIANT_OVERRIDES.get(variant, [])
        cfg = compose_train_config(overrides(workdir, data, args.model, args.device, args.precision, args.frames, args.max_samples, updates, run_name, extra))
        return cfg, to_settings(cfg, TrainConfig)

    _, base = settings_for("setup", 1)
    prepared = prepare(base.data, progress=False)
    train_set, _ = load_splits(prepared, base.model.mel, base.data.val_fraction, base.data.val_min_items, base.data.seed)
    batches = FrameBatches(train_set.frame_lens(), base.data.frames_per_gpu, base.data.max_samples, base.data.seed)
    per_epoch = len(batches)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")

    def peak(_: dict[str, Any]) -> dict[str, Any]:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision, torch.float32)
        return {"matmul_peak_flops": matmul_peak(device, dtype), "dtype": str(dtype).replace("torch.", ""),
                "batches_per_epoch": per_epoch, "threads": torch.get_num_threads()}

    def train(request: dict[str, Any]) -> dict[str, Any]:
        epochs = math.ceil((request["updates"] + 2) / per_epoch)  # the first update is not timed, the window starts at the second
        updates = epochs * per_epoch
        clock.reset()
        batch_of_update.clear()
        bench._reset_accelerate()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        if variant == "upstream":
            bench.run_upstream(base, prepared, train_set, batches, epochs, workdir / "upstream", args.device, args.precision)
        else:
            from f5app.training.loop import RunContext, Trainer

            cfg, settings = settings_for(variant, updates)
            Trainer(settings, RunContext(run_dir=workdir / "runs" / variant, resolved_config=resolved_container(cfg))).run()
        gc.collect()
        peak_rss = vm_peak_rss_mib()  # before the FLOP count below builds a model of its own
        window = clock.window(skip=1)
        timed_keys = batch_of_update[-window["updates"]:]
        result = {key: window[key] for key in ("updates", "seconds", "updates_per_s", "frames_per_s")}
        result["peak_rss_mib"] = peak_rss
        result["cuda_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        # random weights (FLOPs depend on shapes only), never recomputing: recomputation is not model work
        plain = dataclasses.replace(base.model, arch=dataclasses.replace(base.model.arch, checkpoint_activations=False))
        model = build_cfm(plain, prepared.vocab).to(device).train()
        flops = {key: count_flops(model, inputs_of[key], args.precision) for key in set(timed_keys)}
        result["model_flops"] = sum(flops[key] for key in timed_keys)
        result["flops_per_s"] = result["model_flops"] / window["seconds"]
        result["batches"] = [list(key[0]) for key in batch_of_update]  # (clips, frames, mels) of every update, untimed first
        return result

    serve({"peak": peak, "train": train})


# ---------------------------------------------------------------------------------------- the section
def bench_training_at_size(model: str, variants: list[str], device: str, precision: str, threads: int, sizes: dict[str, int],
                           work: Path, logs: Path) -> dict[str, Any]:
    workdir = work / f"training-{model}"
    data = subset_of_demo(workdir / "data", sizes["clips"])
    args = ["--workdir", str(workdir), "--base", str(data), "--model", model, "--device", device, "--precision", precision,
            "--frames", str(sizes["frames"]), "--max-samples", str(sizes["max_samples"]), "--threads", str(threads)]
    results: dict[str, Any] = {"model": model, "device": device, "precision": precision, "sizes": sizes, "variants": {}}
    for variant in variants:  # one at a time: each worker's peak memory is its own, and two would not fit at base size
        worker = Worker(f"size-{variant}", [*args, "--method", variant], logs / f"train-{model}-{variant}.log")
        try:
            peak = worker.ask({"command": "peak"})
            row = worker.ask({"command": "train", "updates": sizes["updates"]})
            row["matmul_peak_flops"] = peak["matmul_peak_flops"]
            row["mfu"] = row["flops_per_s"] / peak["matmul_peak_flops"]
            worker.close()
        except BaseException:
            worker._process.kill()
            raise
        results.update(batches_per_epoch=peak["batches_per_epoch"], dtype=peak["dtype"], torch_threads=peak["threads"])
        results["variants"][variant] = row
        print(f"  training {model} {variant:24} {row['updates_per_s']:.3f} updates/s, {row['flops_per_s'] / 1e9:.1f} GFLOP/s, "
              f"MFU {100 * row['mfu']:.0f} %, peak RSS {row['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    v = results["variants"]
    if "f5app" in v and "upstream" in v:
        results["updates_ratio"] = v["f5app"]["updates_per_s"] / v["upstream"]["updates_per_s"]
        # the same batches over the run (upstream's loader may shift the per-epoch order by one epoch)
        results["same_batches"] = sorted(v["f5app"]["batches"]) == sorted(v["upstream"]["batches"])
    return results


def table_rows(r: dict[str, Any]) -> list[Row]:
    v, model, where = r["variants"], r["model"], f"{r['device']}, {r['precision'] if r['precision'] != 'no' else 'fp32'}"
    rows: list[Row] = []

    def describe(row: dict[str, Any]) -> str:
        return f"{row['updates_per_s']:.3f} upd/s, MFU {100 * row['mfu']:.0f} %"

    if "f5app" in v and "upstream" in v:
        ours, theirs = v["f5app"], v["upstream"]
        rows.append(Row(f"training {model} ({where}) updates/s vs upstream Trainer, same batches{'' if r['same_batches'] else ' (BATCHES DIFFER)'}",
                        f"{ours['updates_per_s']:.3f}", f"{theirs['updates_per_s']:.3f}", r["updates_ratio"], ">= 1.0x", r["updates_ratio"] >= 1.0))
    for name, row in v.items():
        goal = ">= 40 %" if r["device"] == "cuda" and r["precision"] == "bf16" and name in ("f5app", "upstream") else "info"
        rows.append(Row(f"  {name}: model FLOP/s (fwd+bwd) vs {r['dtype']} matmul peak, {row['updates']} timed updates",
                        f"{row['flops_per_s'] / 1e9:.1f} GFLOP/s", f"{row['matmul_peak_flops'] / 1e9:.1f} GFLOP/s", row["mfu"],
                        goal, row["mfu"] >= 0.4 if goal != "info" else None))
    if "f5app" in v:
        plain = v["f5app"]
        for name in ("checkpoint_activations", "adamw8bit"):
            if name in v:
                row = v[name]
                memory = f"RSS {row['peak_rss_mib']:.0f} vs {plain['peak_rss_mib']:.0f} MiB"
                if row["cuda_peak_allocated_mib"] is not None:
                    memory += f"; CUDA {row['cuda_peak_allocated_mib']:.0f} vs {plain['cuda_peak_allocated_mib']:.0f} MiB"
                rows.append(Row(f"  {name} vs plain f5app: peak memory ({memory}), speed", describe(row), describe(plain),
                                row["peak_rss_mib"] / plain["peak_rss_mib"], "info", None))
    rows.append(Row(f"  peak RSS (MiB), {model}", ", ".join(f"{name} {row['peak_rss_mib']:.0f}" for name, row in v.items()), "-", None, "info", None))
    return rows
