"""The ``lora`` section of scripts/bench.py: LoRA fine-tuning side by side with full fine-tuning on
the same base, model and batch, then several LoRA voices served from one base.

Workers (one process each, so each side's peak memory is its own; bench.py's Worker protocol):

  lora-base    writes the base both sides fine-tune from: a freshly initialised MODEL saved as
               upstream's release file (EMA-only safetensors) with upstream's 2,545-token vocabulary
  lora-train   f5app's real Trainer, ``finetune=full`` or ``finetune=lora``, set up as ``f5app.train``
               sets it up from that base (``ckpt=custom``). ``update``: one real update (forward,
               backward, clipping, AdamW, EMA) on a fixed synthetic batch; ``save``: the training-thread
               stall of ``save_checkpoint`` (the call plus the wait at the next optimizer step) and
               the size of the checkpoint written.
  lora-voices  ``Synthesizer.from_config`` with the base as the main model and K adapters (saved by the
               LoRA trainer) as voices: memory after loading, the bytes of each adapter, the time to
               switch voices, and the time loading the base took (what a second fine-tune would cost
               without adapters).

Updates on F5TTS_v1_Small are slow on a CPU (seconds each): the section times a few of them per
side (``--lora-updates``), after one untimed warm-up update.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import bench
from bench import Row, Worker, compose_train_config, median, serve

#: How many adapter checkpoints the LoRA side saves: voices are measured with 1 and with 3 of them.
VOICE_ADAPTERS = 3


def _current_rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    """VmHWM: this process's peak resident memory so far."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------- workers
def base_worker(workdir: Path, model_name: str) -> None:
    """Write ``workdir/base/model.safetensors`` (+ vocab.txt) once, then serve nothing but rusage."""
    import torch

    from f5app.ckpt.adapt import save_safetensors
    from f5app.config import ModelConfig, to_settings
    from f5app.data.vocab import write_vocab
    from f5app.model import build_cfm

    folder = workdir / "base"
    if not (folder / "model.safetensors").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        vocab = bench.upstream_vocab()
        model = to_settings(compose_train_config([f"model={model_name}", "data=demo"]).model, ModelConfig)
        torch.manual_seed(0)
        cfm = build_cfm(model, vocab)
        state = {f"ema_model.{k}": v for k, v in cfm.state_dict().items()}
        state.update({"initted": torch.tensor(True), "step": torch.tensor(0)})
        save_safetensors(state, folder / "model.safetensors")
        write_vocab(vocab, folder / "vocab.txt")
    serve({"info": lambda _: {"base": str(folder / "model.safetensors")}})


def train_worker(workdir: Path, device: str, model_name: str, method: str, base: str, threads: int) -> None:
    import torch

    from f5app.config import TrainConfig, resolved_container, to_settings
    from f5app.training.loop import RunContext, Trainer

    if threads:
        torch.set_num_threads(threads)
    run_name = f"lora-bench-{method}"
    cfg = compose_train_config([
        f"model={model_name}", "data=demo", f"output_root={workdir}", f"run_name={run_name}", "logger=none",
        f"finetune={method}", "ckpt=custom", f"ckpt.path={base}", f"ckpt.keep_last={0 if method == 'lora' else 1}",
        f"trainer.cpu={'true' if device == 'cpu' else 'false'}", "trainer.progress_bar=false", "trainer.val_every=0",
        "trainer.sample_every=0", "trainer.save_every=0", "eval.every=0",
    ])
    settings = to_settings(cfg, TrainConfig)
    bench._reset_accelerate()
    trainer = Trainer(settings, RunContext(run_dir=workdir / "runs" / run_name, resolved_config=resolved_container(cfg)))
    trainer.setup()
    trainer.model.train()
    batch = bench._synthetic_batch(settings.model.mel.n_mel_channels, len(trainer.vocab), trainer.accelerator.device)
    setup_peak = _peak_rss_mib()

    def one_update() -> float:
        start = time.perf_counter()
        loss, _, _ = trainer.model(batch["mel"], text=batch["text"], lens=batch["lens"])
        trainer.accelerator.backward(loss)
        trainer._grad_norm()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.ema.update()
        return time.perf_counter() - start

    def update(_: dict[str, Any]) -> dict[str, Any]:
        seconds = one_update()
        return {"update_s": seconds, "peak_rss_mib": _peak_rss_mib()}

    def save(request: dict[str, Any]) -> dict[str, Any]:
        from f5app.ckpt.layout import checkpoint_name

        timed = bench.timed_save(trainer, request["update"], one_update)
        folder = trainer.store.ckpt_dir / checkpoint_name(request["update"])
        return {**timed, "path": str(folder),
                "size_bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
                "model_pt_bytes": (folder / "model.pt").stat().st_size}

    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    info = {"trainable": trainable, "parameters": total, "setup_peak_rss_mib": setup_peak,
            "rank": trainer.lora.record.rank if trainer.lora is not None else None}
    serve({"update": update, "save": save, "info": lambda _: info})


def voices_worker(workdir: Path, device: str, model_name: str, base: str, adapters: list[str]) -> None:
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR, InferConfig, to_settings
    from f5app.hydra_setup import register
    from f5app.inference.synthesizer import Synthesizer

    register()
    demo = ROOT_ASSETS / "demo" / "wavs" / "harvard_001.flac"
    overrides = ["ckpt=custom", f"ckpt.path={base}", f"model={model_name}", f"device={device}", "progress=false"]
    for i, adapter in enumerate(adapters):
        overrides += [f"+voices.v{i}.adapter={adapter}", f"+voices.v{i}.ref_audio={demo}",
                      f"+voices.v{i}.ref_text=The birch canoe slid on the smooth planks."]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = to_settings(compose("infer", overrides=overrides), InferConfig)
    before = _current_rss_mib()
    start = time.perf_counter()
    synth = Synthesizer.from_config(cfg, workdir)
    load_s = time.perf_counter() - start
    after = _current_rss_mib()
    names = ["main"] + [f"v{i}" for i in range(len(adapters))]
    switches = []
    for i in range(200):
        t = time.perf_counter()
        synth.adapters.use(names[i % len(names)])
        switches.append(time.perf_counter() - t)
    from f5app.ckpt import lora
    from f5app.ckpt.reader import CheckpointReader
    from f5app.data.vocab import read_vocab

    vocab = read_vocab(Path(base).with_name("vocab.txt"))
    start = time.perf_counter()
    lora.base_model(CheckpointReader(base).weights(), synth.model_config, vocab, vocab)  # what serving another full fine-tune costs
    second_base_s = time.perf_counter() - start
    adapter_names = [f"v{i}" for i in range(len(adapters))]
    base_bytes = sum(p.numel() * p.element_size() for n, p in synth.cfm.named_parameters() if "lora_" not in n and "trainable_tokens" not in n)
    info = {
        "voices": len(adapters), "load_s": load_s, "second_base_load_s": second_base_s, "rss_before_mib": before, "rss_after_mib": after,
        "peak_rss_mib": _peak_rss_mib(), "base_mib": base_bytes / 2**20,
        "adapter_mib": [synth.adapters.adapter_bytes(n) / 2**20 for n in adapter_names],
        "switch_ms": 1000 * median(switches), "switch_p95_ms": 1000 * sorted(switches)[int(0.95 * len(switches))],
    }
    serve({"info": lambda _: info})


ROOT_ASSETS = bench.ROOT / "f5app" / "assets"


def run_worker(kind: str, args: Any) -> None:
    adapters = [a for a in (args.adapters or "").split(",") if a]
    if kind == "lora-base":
        base_worker(args.workdir, args.model)
    elif kind == "lora-train":
        train_worker(args.workdir, args.device, args.model, args.method, args.base, args.threads)
    elif kind == "lora-voices":
        voices_worker(args.workdir, args.device, args.model, args.base, adapters)
    else:
        raise SystemExit(f"unknown worker {kind!r}")


# ---------------------------------------------------------------------------------------- section
def bench_lora(model: str, updates: int, saves: int, device: str, threads: int, work: Path, logs: Path) -> dict[str, Any]:
    workdir = work / "lora"
    common = ["--workdir", str(workdir), "--device", device, "--model", model, "--threads", str(threads)]
    maker = Worker("lora-base", common, logs / "lora-base.log")
    base = maker.ask({"command": "info"})["base"]
    maker.close()
    sides: dict[str, Worker] = {}
    try:
        for method in ("full", "lora"):  # one after the other: they share the demo data's preparation
            sides[method] = Worker("lora-train", [*common, "--method", method, "--base", base], logs / f"lora-train-{method}.log")
            sides[method].ask({"command": "info"})
        info = {method: worker.ask({"command": "info"}) for method, worker in sides.items()}
        timed: dict[str, list[float]] = {"full": [], "lora": []}
        for method, worker in sides.items():
            worker.ask({"command": "update"})  # warm-up: first-call allocations
        for rep in range(updates):
            for method in (("full", "lora") if rep % 2 == 0 else ("lora", "full")):
                answer = sides[method].ask({"command": "update"})
                timed[method].append(answer["update_s"])
                print(f"  lora section: {method} update {rep}: {answer['update_s']:.2f} s", file=sys.stderr)
        peak_training = {method: worker.ask({"command": "update"})["peak_rss_mib"] for method, worker in sides.items()}
        saved: dict[str, list[dict[str, Any]]] = {"full": [], "lora": []}
        for rep in range(max(saves, VOICE_ADAPTERS)):
            for method in ("full", "lora"):
                if method == "full" and rep >= saves:
                    continue
                saved[method].append(sides[method].ask({"command": "save", "update": rep + 1}))
        rss = {method: worker.close() for method, worker in sides.items()}
    except BaseException:
        for worker in sides.values():
            worker._process.kill()
        raise

    adapters = [row["path"] for row in saved["lora"][:VOICE_ADAPTERS]]
    voices: dict[int, dict[str, Any]] = {}
    for count in (1, VOICE_ADAPTERS):
        worker = Worker("lora-voices", [*common, "--base", base, "--adapters", ",".join(adapters[:count])], logs / f"lora-voices-{count}.log")
        try:
            voices[count] = worker.ask({"command": "info"})
            worker.close()
        except BaseException:
            worker._process.kill()
            raise
    few, many = voices[1], voices[VOICE_ADAPTERS]
    per_voice = (many["rss_after_mib"] - few["rss_after_mib"]) / (VOICE_ADAPTERS - 1)

    def ups(method: str) -> float:
        return 1 / median(timed[method])

    full_ckpt, lora_ckpt = median([r["size_bytes"] for r in saved["full"]]), median([r["size_bytes"] for r in saved["lora"]])
    peak = {method: max(peak_training[method], rss[method]["self"]) for method in sides}
    return {
        "model": model, "device": device, "rank": info["lora"]["rank"], "timed_updates_per_side": updates, "torch_threads": threads or "default",
        "trainable": {m: info[m]["trainable"] for m in sides}, "parameters": info["full"]["parameters"],
        "trainable_pct": 100 * info["lora"]["trainable"] / info["lora"]["parameters"],
        "update_s": {m: median(timed[m]) for m in sides}, "updates_per_s": {m: ups(m) for m in sides},
        "updates_ratio": ups("lora") / ups("full"),
        "peak_rss_mib": peak, "peak_rss_training_mib": peak_training, "peak_ratio": peak["lora"] / peak["full"],
        "checkpoint_bytes": {"full": full_ckpt, "lora": lora_ckpt}, "checkpoint_ratio": lora_ckpt / full_ckpt,
        "save_stall_s": {m: median([r["stall_s"] for r in saved[m]]) for m in sides},
        "voices": {"one": few, "many": many, "per_extra_voice_rss_mib": per_voice,
                   "per_voice_ratio": per_voice / many["base_mib"], "switch_ms": many["switch_ms"], "base_load_s": few["second_base_load_s"]},
        "reps": {"update_s": timed, "saves": saved},
    }


def table_rows(r: dict[str, Any]) -> list[Row]:
    v, model = r["voices"], r["model"]
    stall = r["save_stall_s"]
    return [
        Row(f"LoRA trainable parameters ({model}, rank {r['rank']})", f"{r['trainable_pct']:.2f} %", "100 % (full fine-tuning)",
            r["trainable_pct"] / 100, "info", None),
        Row(f"LoRA vs full fine-tuning: peak RSS ({model})", f"{r['peak_rss_mib']['lora']:.0f} MiB", f"{r['peak_rss_mib']['full']:.0f} MiB",
            r["peak_ratio"], "<= 0.6x", r["peak_ratio"] <= 0.6),
        Row(f"LoRA vs full fine-tuning: updates/s ({r['timed_updates_per_side']} timed updates each)", f"{r['updates_per_s']['lora']:.3f}",
            f"{r['updates_per_s']['full']:.3f}", r["updates_ratio"], ">= 1.0x", r["updates_ratio"] >= 1.0),
        Row("LoRA vs full fine-tuning: checkpoint size", f"{r['checkpoint_bytes']['lora'] / 2**20:.1f} MiB",
            f"{r['checkpoint_bytes']['full'] / 2**20:.0f} MiB", r["checkpoint_ratio"], "<= 0.05x", r["checkpoint_ratio"] <= 0.05),
        Row("  save stall per checkpoint, LoRA vs full", f"{stall['lora']:.3f} s", f"{stall['full']:.2f} s",
            stall["lora"] / stall["full"], "info", None),
        Row(f"switch voices ({v['many']['voices']} adapters on one base) vs loading another base", f"{v['switch_ms']:.2f} ms",
            f"{v['base_load_s']:.1f} s", v["switch_ms"] / 1000 / v["base_load_s"], "<= 10 ms", v["switch_ms"] <= 10),
        Row("memory per extra voice (RSS growth) vs the base", f"{v['per_extra_voice_rss_mib']:.1f} MiB (adapter {v['many']['adapter_mib'][0]:.1f} MiB)",
            f"{v['many']['base_mib']:.0f} MiB", v["per_voice_ratio"], "<= 0.1x", v["per_voice_ratio"] <= 0.1),
    ]
