#!/usr/bin/env python
"""f5app benchmarks, each a ratio against upstream F5-TTS or the naive approach, measured side by side.

    .venv/bin/python scripts/bench.py [--quick] [--device cpu|cuda] [--json FILE] [--only SECTION,...]
    .venv/bin/python scripts/bench.py --only training --model f5tts_v1_base --device cuda --precision bf16 --json OUT

Sections (docs/benchmarks.md has the goals and the latest table):
  training    (``--model tiny``, the default) updates/s and frames/s of f5app's loop vs upstream
              ``f5_tts.model.Trainer`` (same tiny model, same mels, same batches in the same order,
              checkpointing off in both), then f5app with a checkpoint every ``--save-every`` updates
              vs none; peak RSS of both.
              (``--model f5tts_v1_small|f5tts_v1_base``, random weights; scripts/bench_train.py) the same
              comparison at real size in ``--precision``, plus f5app with activation checkpointing
              and with 8-bit AdamW (``--train-variants``): updates/s, model FLOP/s of forward+backward
              (torch.utils.flop_counter) against the dense-matmul peak in the same dtype measured in
              the same worker (MFU), peak RSS (and CUDA peak memory). CPU: 4 short clips, 2 per batch,
              2 timed updates per variant, minutes at small size; CUDA: the 40 demo clips in one batch,
              20 timed updates (``--train-updates``, ``--train-clips``, ``--train-frames`` change them).
              ``--only train`` is the same section.
  save        training-thread stall of ``Trainer.save_checkpoint`` (model=f5tts_v1_small, AdamW
              state) vs a synchronous ``torch.save`` of the same state.
  resolve     ``ckpt=auto`` over 20 checkpoints (several big, some corrupt) vs a resolver that fully
              loads each candidate (scripts/bench_resolve.py builds the run and the naive resolver),
              with the page cache warm and evicted.
  infer       RTF vs upstream ``infer_process`` and process start to wav vs ``f5-tts_infer-cli``
              (scripts/bench_infer.py), plus peak RSS of both command lines.
  cli         wall time of ``f5app.ckpt list RUN_DIR`` and of each entry point's ``--help``.
  verify      reading a ~1 GiB checkpoint for resume with verification (the xxh3_128 checksum of every
              file while it is read, finiteness of the weights) vs the same read without it.
  evaluation  seconds per prompt (synthesis, ASR, embedding) and the share of the demo's training
              wall time that evaluation costs at its interval; ASR real-time factor; WER against
              upstream ``f5_tts.eval.utils_eval.run_asr_wer`` on the same files (scripts/bench_eval.py).
  serve       ``f5app.serve`` on a tiny trained model: time to the first streamed audio byte vs the
              full response (three sentences), server latency vs ``Synthesizer.generate`` in the
              same process, throughput at 1/2/4 concurrent clients, and a long text rendered as
              padded batches vs one chunk at a time.
  prepare     (only with --only prepare: ~25 min here) ``data=recordings`` on a 10 and a 60 min recording
              (--quick: 1 and 3 min; --prepare-minutes SHORT,LONG) made of f5-tts's
              human speech: seconds of recording per wall second per step and in all (asr=tiny_en),
              peak RSS of both, WER against the known words (scripts/bench_prepare.py).
  speed       (only with --only speed or --model) inference at real sizes, --model f5tts_v1_small|f5tts_v1_base:
              f5app (fp32, bf16, int8) vs upstream ``infer_process`` at NFE 7 and 32, RTF, FLOP/s against this
              machine's matmul peak, mel difference vs fp32, reference length, TTFA (scripts/bench_speed.py).
  verify_asr  verify=asr: checking (tiny.en + resemblyzer) per second of audio vs synthesis per second of
              audio at f5tts_v1_small (random weights) and demo size; reference preparation's steps
              (transcription, alignment and cut, DNSMOS, speaker spread) (scripts/bench_verify_asr.py).
  lora        finetune=lora vs finetune=full on ``--lora-model`` (f5tts_v1_small): trainable share, peak
              RSS, updates/s, checkpoint size, save stall; voices switched on one base (scripts/bench_lora.py).

Every comparison alternates the two sides repetition by repetition, so background load (this
machine is shared) hits both alike, and reports the median. Heavy work runs in worker processes
(``--worker``) so that each side's peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
SECTIONS = ("training", "save", "resolve", "infer", "cli", "verify", "evaluation", "serve", "prepare", "lora", "speed", "verify_asr")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; ``--quick`` and the full run differ only here."""

    repeats: int
    train_updates: int  # per repetition; the first epoch is excluded from the timed window
    frames_per_batch: int
    max_samples: int
    save_every: int
    save_model: str
    save_repeats: int
    resolve_big_gib: float
    resolve_repeats: int
    infer_repeats: int
    cli_repeats: int
    serve_repeats: int
    serve_nfe: int  # sampling steps of the served model (the product default is 32)
    serve_requests_per_client: int
    serve_long_sentences: int  # of the long text rendered batched vs one chunk at a time
    verify_gib: float = 1.0
    verify_repeats: int = 9


QUICK = Sizes(repeats=2, train_updates=90, frames_per_batch=1000, max_samples=4, save_every=50, save_model="f5tts_v1_small",
              save_repeats=1, resolve_big_gib=0.25, resolve_repeats=2, infer_repeats=1, cli_repeats=1,
              serve_repeats=2, serve_nfe=8, serve_requests_per_client=2, serve_long_sentences=6, verify_gib=0.25, verify_repeats=3)
FULL = Sizes(repeats=5, train_updates=160, frames_per_batch=1000, max_samples=4, save_every=50, save_model="f5tts_v1_small",
             save_repeats=3, resolve_big_gib=1.0, resolve_repeats=3, infer_repeats=3, cli_repeats=5,
             serve_repeats=5, serve_nfe=32, serve_requests_per_client=4, serve_long_sentences=12)


# ---------------------------------------------------------------------------------------- helpers
def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_rss_mib() -> dict[str, float]:
    """This process's peak RSS and the largest of its waited-for children's (ru_maxrss is in KiB on Linux)."""
    return {
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


# A child's ru_maxrss starts at its parent's peak RSS (Linux keeps the high-water mark of the
# forked image across exec), so children of a big process report at least that process's size.
# Each measured command is therefore started by this small launcher, whose child starts small.
RSS_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def with_rss_report(command: list[str], report: Path) -> list[str]:
    """``command`` run through :data:`RSS_LAUNCHER`, which writes its peak RSS (KiB) to ``report``."""
    return [sys.executable, "-c", RSS_LAUNCHER, str(report), *command]


def run_timed(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, log: Path | None = None) -> tuple[float, int]:
    """(wall seconds, exit status) of one child process, its output appended to ``log``."""
    with open(log, "a") if log else open(os.devnull, "w") as sink:
        start = time.perf_counter()
        status = subprocess.run(command, cwd=cwd, env=env, stdout=sink, stderr=sink).returncode
        return time.perf_counter() - start, status


def worker_env() -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV, "PYTHONWARNINGS": "ignore"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Worker:
    """A ``bench.py --worker KIND`` process answering one JSON line per JSON request line.

    The worker keeps its imports and data between requests, so repetitions alternate between two
    live workers without paying Python's start-up and f5_tts's import each time.
    """

    def __init__(self, kind: str, args: list[str], log: Path):
        self.kind = kind
        self._log = open(log, "a")
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker", kind, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=worker_env(), cwd=ROOT,
        )
        self.log_path = log

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.kind} died; its log is {self.log_path}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"benchmark worker {self.kind} failed: {answer['error']} (log: {self.log_path})")
        return answer

    def close(self) -> dict[str, Any]:
        """Ask for the worker's peak memory, then end it."""
        try:
            return self.ask({"command": "rusage"})
        finally:
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.wait(timeout=120)
            self._log.close()


def serve(handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """The worker side of :class:`Worker`: replies go to the real stdout; library prints go to stderr."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    handlers = {**handlers, "rusage": lambda _: peak_rss_mib()}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = handlers[request["command"]](request)
        except Exception as error:  # reported to the parent, which stops with the worker's log
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


# ---------------------------------------------------------------------------------------- training
def compose_train_config(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from f5app.config import CONF_DIR, register_configs

    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def train_overrides(workdir: Path, device: str, frames: int, max_samples: int, updates: int, save_every: int, run_name: str) -> list[str]:
    """The demo experiment (tiny model, bundled data) with the settings both trainers share."""
    return [
        "experiment=demo", "logger=none", f"output_root={workdir}", f"run_name={run_name}",
        f"data.prepared_dir={workdir / 'prepared'}", f"data.frames_per_gpu={frames}", f"data.max_samples={max_samples}",
        "optim.weight_decay=0.01",  # upstream's AdamW default
        f"trainer.max_updates={updates}", "trainer.epochs=100000", f"trainer.save_every={save_every}",
        "trainer.val_every=0", "trainer.sample_every=0", "eval.every=0", "trainer.log_every=10", "trainer.progress_bar=true",
        f"trainer.cpu={'true' if device == 'cpu' else 'false'}", "ckpt.keep_last=2",
    ]


class UpdateClock:
    """Timestamps every EMA update (once per optimizer update in both trainers), the mel frames each
    update consumed (the ``lens`` given to ``CFM.forward``) and, for f5app, when each checkpoint
    save began on the training thread and when its background write ended. Patched on the
    classes, so f5app's loop and upstream's Trainer are observed through the same calls."""

    def __init__(self) -> None:
        from ema_pytorch import EMA
        from f5_tts.model.cfm import CFM

        self.reset()
        clock = self
        ema_update, cfm_forward = EMA.update, CFM.forward

        def timed_update(ema, *args, **kwargs):
            result = ema_update(ema, *args, **kwargs)
            clock.times.append(time.perf_counter())
            clock.frames.append(clock._pending_frames)
            clock._pending_frames = 0
            return result

        def counted_forward(cfm, inp, text, *args, lens=None, **kwargs):
            clock._pending_frames += int(lens.sum()) if lens is not None else inp.shape[0] * inp.shape[1]
            return cfm_forward(cfm, inp, text, *args, lens=lens, **kwargs)

        EMA.update, CFM.forward = timed_update, counted_forward

    def watch_f5app_saves(self) -> None:
        from f5app.ckpt.store import CheckpointStore
        from f5app.training.loop import Trainer

        clock = self
        save_checkpoint, store_save = Trainer.save_checkpoint, CheckpointStore.save

        def timed_save_checkpoint(trainer, *args, **kwargs):
            start = time.perf_counter()
            try:
                return save_checkpoint(trainer, *args, **kwargs)
            finally:
                clock.saves.append([start, time.perf_counter(), None])

        def timed_store_save(store, *args, **kwargs):
            try:
                return store_save(store, *args, **kwargs)
            finally:
                clock.saves[-1][2] = time.perf_counter()  # the writer runs one save at a time

        Trainer.save_checkpoint, CheckpointStore.save = timed_save_checkpoint, timed_store_save

    def reset(self) -> None:
        self.times: list[float] = []
        self.frames: list[int] = []
        self.saves: list[list] = []  # [called, returned, written] per save
        self._pending_frames = 0

    def window(self, skip: int) -> dict[str, Any]:
        """Throughput over updates ``skip+1 .. end`` (the first ``skip`` pay one-off costs: first epoch's
        mel computation, data loader start-up), and the checkpoint cost within that window."""
        if len(self.times) <= skip + 1:
            raise RuntimeError(f"only {len(self.times)} updates ran; need more than {skip + 1}")
        start, end = self.times[skip], self.times[-1]
        seconds = end - start
        updates = len(self.times) - 1 - skip
        frames = sum(self.frames[skip + 1:])
        intervals = [b - a for a, b in zip(self.times[skip:], self.times[skip + 1:])]
        saves = [s for s in self.saves if start <= s[0] < end]
        return {
            "updates": updates, "seconds": seconds, "updates_per_s": updates / seconds, "frames_per_s": frames / seconds,
            "frames_per_update": self.frames, "intervals": intervals,
            "saves_in_window": len(saves),
            "save_blocked_s": [s[1] - s[0] for s in saves],
            "save_written_s": [(s[2] or s[1]) - s[0] for s in saves],
            "save_excess_s": self._save_excess(saves, skip),
        }

    def _save_excess(self, saves: list[list], skip: int) -> float:
        """Training time the saves cost: for every update interval overlapping a save (the call on
        the training thread through the end of its background write), how much longer it took than
        the window's median interval (not clipped at zero, so load noise averages out instead of adding up)."""
        bounds = list(zip(self.times[skip:], self.times[skip + 1:]))
        typical = statistics.median(b - a for a, b in bounds)
        hit = {i for i, (a, b) in enumerate(bounds) for s in saves if a < (s[2] or s[1]) and b > s[0]}
        return sum(bounds[i][1] - bounds[i][0] - typical for i in hit)


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def training_worker(impl: str, workdir: Path, device: str, frames: int, max_samples: int, threads: int) -> None:
    """Serve ``train`` requests for one implementation (``f5app`` or ``upstream``)."""
    import torch

    from f5app.config import TrainConfig, to_settings
    from f5app.data.dataset import FrameBatches, load_splits
    from f5app.data.prepare import prepare

    clock = UpdateClock()
    if threads:
        torch.set_num_threads(threads)
    base = to_settings(compose_train_config(train_overrides(workdir, device, frames, max_samples, 1, 0, "setup")), TrainConfig)
    prepared = prepare(base.data, progress=False)
    train_set, _ = load_splits(prepared, base.model.mel, base.data.val_fraction, base.data.val_min_items, base.data.seed)
    batches = FrameBatches(train_set.frame_lens(), base.data.frames_per_gpu, base.data.max_samples, base.data.seed)
    per_epoch = len(batches)

    def train_f5app(request: dict[str, Any]) -> dict[str, Any]:
        from f5app.config import resolved_container
        from f5app.training.loop import RunContext, Trainer

        run_name = request["run_name"]
        cfg = compose_train_config(train_overrides(workdir, device, frames, max_samples, request["updates"], request["save_every"], run_name))
        _reset_accelerate()
        clock.reset()
        Trainer(to_settings(cfg, TrainConfig), RunContext(run_dir=workdir / "runs" / run_name, resolved_config=resolved_container(cfg))).run()
        saved = sorted(p.name for p in (workdir / "runs" / run_name / "checkpoints").glob("update_*"))
        return {**clock.window(skip=per_epoch), "checkpoints": saved}

    if impl == "f5app":
        clock.watch_f5app_saves()
        serve({"train": train_f5app, "info": lambda _: {"batches_per_epoch": per_epoch}})
        return

    # upstream: same mels (computed once by f5app's dataset), same batches in the same order
    def train_upstream(request: dict[str, Any]) -> dict[str, Any]:
        updates = request["updates"]
        if updates % per_epoch:
            raise ValueError(f"updates={updates} must be a multiple of the {per_epoch} batches per epoch (upstream trains whole epochs)")
        _reset_accelerate()
        clock.reset()
        run_upstream(base, prepared, train_set, batches, updates // per_epoch, workdir / "upstream" / request["run_name"], device, "no")
        return clock.window(skip=per_epoch)

    serve({"train": train_upstream, "info": lambda _: {"batches_per_epoch": per_epoch}})


def run_upstream(base: Any, prepared: Any, train_set: Any, batches: Any, epochs: int, checkpoint_path: Path, device: str,
                 precision: str) -> None:
    """Upstream's Trainer for ``epochs`` whole epochs of f5app's batches: the same mels (computed once
    by f5app's dataset), the same batches in the same order (upstream's own sampler replaced)."""
    import f5_tts.model.trainer as upstream_trainer
    import torch
    from f5_tts.model import Trainer as UpstreamTrainer

    from f5app.model import build_cfm

    mels = [train_set[i]["mel"] for i in range(len(train_set))]
    texts = [train_set[i]["text"] for i in range(len(train_set))]

    class PreparedMels(torch.utils.data.Dataset):
        """Upstream's item format from f5app's prepared mels (upstream's CustomDataset needs FFmpeg)."""

        def __len__(self) -> int:
            return len(mels)

        def get_frame_len(self, index: int) -> int:
            return mels[index].shape[-1]

        def __getitem__(self, index: int) -> dict[str, Any]:
            return {"mel_spec": mels[index], "text": texts[index]}

    class SameBatches(torch.utils.data.Sampler):
        """Stands in for upstream's DynamicBatchSampler: f5app's batches, in f5app's per-epoch order."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.epoch = 0
            self.drop_last = True

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):  # noqa: ANN204
            return iter(batches.for_epoch(self.epoch))

        def __len__(self) -> int:
            return len(batches)

    upstream_trainer.DynamicBatchSampler = SameBatches
    torch.manual_seed(base.trainer.seed)
    model = build_cfm(base.model, prepared.vocab)
    trainer = UpstreamTrainer(
        model, epochs=epochs, learning_rate=base.optim.lr, num_warmup_updates=base.optim.warmup_updates,
        save_per_updates=10**9, keep_last_n_checkpoints=0, checkpoint_path=str(checkpoint_path),
        batch_size_per_gpu=base.data.frames_per_gpu, batch_size_type="frame", max_samples=base.data.max_samples,
        grad_accumulation_steps=1, max_grad_norm=base.optim.max_grad_norm, logger=None, log_samples=False,
        accelerate_kwargs={"cpu": device == "cpu", "mixed_precision": precision},
        ema_kwargs={"beta": base.trainer.ema_decay, "update_after_step": base.trainer.ema_update_after, "update_every": 1},
        mel_spec_type=base.model.mel.mel_spec_type,
    )
    trainer.train(PreparedMels(), num_workers=1, resumable_with_seed=base.data.seed)  # upstream refuses num_workers=0


def bench_training(sizes: Sizes, device: str, threads: int, work: Path, logs: Path) -> dict[str, Any]:
    workdir = work / "training"
    args = ["--workdir", str(workdir), "--device", device, "--frames", str(sizes.frames_per_batch),
            "--max-samples", str(sizes.max_samples), "--threads", str(threads)]
    ours = Worker("train-f5app", args, logs / "train-f5app.log")
    theirs = Worker("train-upstream", args, logs / "train-upstream.log")
    try:
        per_epoch = ours.ask({"command": "info"})["batches_per_epoch"]
        updates = max(per_epoch * 3, sizes.train_updates // per_epoch * per_epoch)
        rows: dict[str, list[dict[str, Any]]] = {"f5app": [], "upstream": [], "f5app_ckpt": []}
        for rep in range(sizes.repeats):
            # ABC, BCA, CAB, …: each side takes each slot of a round in turn, so load drifts hit all alike
            order = [("f5app", ours, 0), ("upstream", theirs, 0), ("f5app_ckpt", ours, sizes.save_every)]
            for name, worker, save_every in order[rep % 3:] + order[:rep % 3]:
                answer = worker.ask({"command": "train", "run_name": f"{name}-{rep}", "updates": updates, "save_every": save_every})
                rows[name].append(answer)
                print(f"  training {name:10} rep {rep}: {answer['updates_per_s']:.3f} updates/s, {answer['frames_per_s']:.0f} frames/s", file=sys.stderr)
        rss = {"f5app": ours.close(), "upstream": theirs.close()}
    except BaseException:
        for worker in (ours, theirs):
            worker._process.kill()
        raise

    def med(name: str, key: str) -> float:
        return median([row[key] for row in rows[name]])

    def epochs_of(frames: list[int]) -> list[list[int]]:
        return [sorted(frames[i:i + per_epoch]) for i in range(0, len(frames), per_epoch)]

    # upstream's data loader shifts the per-epoch shuffle by one epoch (accelerate's own epoch
    # counter); every epoch still holds exactly the same batches, which is what this checks
    same_batches = all(epochs_of(a["frames_per_update"]) == epochs_of(b["frames_per_update"]) for a, b in zip(rows["f5app"], rows["upstream"]))
    no_ckpt, with_ckpt = med("f5app", "updates_per_s"), med("f5app_ckpt", "updates_per_s")
    ckpt_rows = rows["f5app_ckpt"]
    return {
        "updates_per_rep": updates,
        "timed_updates_per_rep": rows["f5app"][0]["updates"],
        "batches_per_epoch": per_epoch,
        "frames_per_batch_budget": sizes.frames_per_batch,
        "max_samples": sizes.max_samples,
        "torch_threads": threads or "default",
        "same_batches_each_epoch": same_batches,
        "f5app_updates_per_s": no_ckpt,
        "upstream_updates_per_s": med("upstream", "updates_per_s"),
        "f5app_frames_per_s": med("f5app", "frames_per_s"),
        "upstream_frames_per_s": med("upstream", "frames_per_s"),
        "updates_ratio": no_ckpt / med("upstream", "updates_per_s"),
        "frames_ratio": med("f5app", "frames_per_s") / med("upstream", "frames_per_s"),
        "save_every": sizes.save_every,
        "saves_in_window": ckpt_rows[0]["saves_in_window"],
        "f5app_with_ckpt_updates_per_s": with_ckpt,
        "ckpt_overhead_throughput": 1 - with_ckpt / no_ckpt,
        "ckpt_overhead_attributed": median([row["save_excess_s"] / row["seconds"] for row in ckpt_rows]),
        "save_blocked_ms": 1000 * median([x for row in ckpt_rows for x in row["save_blocked_s"]]),
        "save_written_ms": 1000 * median([x for row in ckpt_rows for x in row["save_written_s"]]),
        "peak_rss_mib": {"f5app": rss["f5app"]["self"], "upstream": rss["upstream"]["self"],
                         "upstream_dataloader_worker": rss["upstream"]["children"]},
        "reps": {name: [{k: v for k, v in row.items() if k not in ("frames_per_update", "intervals")} for row in values]
                 for name, values in rows.items()},
    }


# ---------------------------------------------------------------------------------------- save stall
def upstream_vocab() -> list[str]:
    """The pretrained models' 2,545-token vocabulary shipped inside f5-tts (so the text embedding is full size)."""
    from f5app.data.vocab import read_vocab, upstream_vocab_path

    return read_vocab(upstream_vocab_path())


def save_stall_worker(workdir: Path, device: str, model_name: str) -> None:
    """Serve ``save`` requests: one f5app checkpoint (timed on the calling thread) or one torch.save.

    The trainer is f5app's real ``Trainer``, set up as ``f5app.train`` sets it up (scratch weights,
    the demo data) and saving through its public ``save_checkpoint``; the optimizer state comes
    from one AdamW step on random gradients (what a training step leaves behind).
    """
    import torch

    from f5app.config import TrainConfig, resolved_container, to_settings
    from f5app.training.loop import RunContext, Trainer

    cfg = compose_train_config([f"model={model_name}", "data=demo", f"output_root={workdir}", "run_name=save", "logger=none",
                                f"trainer.cpu={'true' if device == 'cpu' else 'false'}", "ckpt.keep_last=1",
                                "ckpt.train_chain=[scratch]", "ckpt.allow_scratch=true", "trainer.progress_bar=false", "eval.every=0"])
    settings = to_settings(cfg, TrainConfig)
    trainer = Trainer(settings, RunContext(run_dir=workdir / "runs" / "save", resolved_config=resolved_container(cfg)))
    trainer.setup()
    model, optimizer, ema, accelerator, vocab = trainer.model, trainer.optimizer, trainer.ema, trainer.accelerator, trainer.vocab
    torch.manual_seed(0)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter) * 1e-3
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    ema.update()
    sync_dir = workdir / "sync"
    state_bytes = sum(t.numel() * t.element_size() for t in _tensors(
        {"m": model.state_dict(), "e": ema.state_dict(), "o": optimizer.state_dict()}))

    batch = _synthetic_batch(settings.model.mel.n_mel_channels, len(vocab), accelerator.device)

    def one_update() -> float:
        """A real training update (forward, backward, AdamW step, EMA update) on a small batch."""
        start = time.perf_counter()
        loss, _, _ = model(batch["mel"], text=batch["text"], lens=batch["lens"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update()
        return time.perf_counter() - start

    def save_f5app(request: dict[str, Any]) -> dict[str, Any]:
        return timed_save(trainer, request["update"], one_update)

    def plain_update(request: dict[str, Any]) -> dict[str, Any]:
        return {"update_s": one_update()}

    def save_sync(request: dict[str, Any]) -> dict[str, Any]:
        """What upstream's Trainer.save_checkpoint does: torch.save of the live state, on the training thread."""
        sync_dir.mkdir(parents=True, exist_ok=True)
        target = sync_dir / "model.pt"
        start = time.perf_counter()
        torch.save({
            "model_state_dict": accelerator.unwrap_model(model).state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "ema_model_state_dict": ema.state_dict(),
            "update": request["update"],
        }, target)
        seconds = time.perf_counter() - start
        target.unlink()
        return {"sync_s": seconds}

    info = {"parameters": sum(p.numel() for p in model.parameters()), "state_bytes": state_bytes}
    serve({"f5app": save_f5app, "sync": save_sync, "update": plain_update, "info": lambda _: info})


def timed_save(trainer: Any, update: int, one_update: Callable[[], float]) -> dict[str, Any]:
    """Training-thread time lost to one checkpoint: the save_checkpoint call, plus the wait at the
    next optimizer step for the state copy (which overlaps that update's forward/backward)."""
    trainer.progress.update = update
    start = time.perf_counter()
    trainer.save_checkpoint(train_loss=1.0, val_loss=None)
    called = time.perf_counter() - start
    blocked_before = trainer.writer.blocked_seconds
    update_s = one_update()
    fence = trainer.writer.blocked_seconds - blocked_before
    trainer.writer.wait()  # untimed: the background write must not overlap the next measurement
    return {"stall_s": called + fence, "call_s": called, "fence_s": fence, "update_s": update_s,
            "background_done_s": time.perf_counter() - start}


def _synthetic_batch(n_mels: int, vocab_size: int, device: Any, clips: int = 2, frames: int = 300) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return {
        "mel": torch.randn(clips, frames, n_mels, generator=generator).to(device),
        "text": torch.randint(1, vocab_size, (clips, frames // 4), generator=generator).to(device),
        "lens": torch.full((clips,), frames, dtype=torch.long).to(device),
    }


def _tensors(obj: Any):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def bench_save_stall(sizes: Sizes, device: str, work: Path, logs: Path) -> dict[str, Any]:
    worker = Worker("save", ["--workdir", str(work / "save"), "--device", device, "--model", sizes.save_model], logs / "save.log")
    try:
        info = worker.ask({"command": "info"})
        saves: list[dict[str, Any]] = []
        syncs: list[float] = []
        plain: list[float] = []
        for rep in range(sizes.save_repeats):
            order = ["f5app", "sync", "update"] if rep % 2 == 0 else ["update", "sync", "f5app"]
            for side in order:
                answer = worker.ask({"command": side, "update": rep + 1})
                if side == "f5app":
                    saves.append(answer)
                elif side == "sync":
                    syncs.append(answer["sync_s"])
                else:
                    plain.append(answer["update_s"])
            print(f"  save rep {rep}: f5app stall {saves[-1]['stall_s']:.2f} s (call {saves[-1]['call_s']:.2f} + step wait "
                  f"{saves[-1]['fence_s']:.2f}; written after {saves[-1]['background_done_s']:.1f} s), torch.save {syncs[-1]:.2f} s", file=sys.stderr)
        rss = worker.close()
    except BaseException:
        worker._process.kill()
        raise
    stalls = [row["stall_s"] for row in saves]
    later = stalls[1:] or stalls
    return {
        "model": sizes.save_model,
        "parameters": info["parameters"],
        "state_gib": info["state_bytes"] / 2**30,
        "f5app_stall_s": median(stalls),
        "f5app_first_save_stall_s": stalls[0],
        "f5app_later_saves_stall_s": median(later),
        "f5app_written_after_s": median([row["background_done_s"] for row in saves]),
        "sync_torch_save_s": median(syncs),
        "ratio": median(stalls) / median(syncs),
        "update_s_while_saving": median([row["update_s"] for row in saves]),
        "update_s_plain": median(plain),
        "peak_rss_mib": rss["self"],
        "reps": {"saves": saves, "sync_s": syncs, "plain_update_s": plain},
    }


# ---------------------------------------------------------------------------------------- resolution
def evict_from_page_cache(folder: Path) -> None:
    """Drop the folder's file pages from the page cache (no root needed), as after a reboot or on a
    network disk: the next read comes from the disk. Pages must be clean, hence the fsync."""
    for file in folder.rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def resolve_worker(workdir: Path, big_gib: float) -> None:
    """Serve ``resolve`` requests over one run built by scripts/bench_resolve.py (its layout, its naive resolver)."""
    sys.path[:0] = [str(SCRIPTS), str(ROOT / "tests")]
    import bench_resolve

    from f5app.ckpt.resolve import resolve
    from f5app.config import CkptConfig

    run_dir = workdir / "runs" / "bench"
    start = time.perf_counter()
    bench_resolve.build_run(run_dir, big_gib)
    evict_from_page_cache(run_dir)  # also flushes the freshly written GiBs before anything is timed
    build_s = time.perf_counter() - start
    sizes = sorted((p.stat().st_size for p in run_dir.glob("checkpoints/*/model.pt")), reverse=True)

    def ours() -> str:
        chosen = resolve(CkptConfig(), purpose="train", run_dir=run_dir, model=bench_resolve.MODEL,
                         vocab_size=len(bench_resolve.VOCAB), dry_run=True).chosen
        return chosen.path.name if chosen else "none"

    def naive() -> str:
        chosen = bench_resolve.naive_resolve(run_dir)
        return chosen.name if chosen else "none"

    def run(request: dict[str, Any]) -> dict[str, Any]:
        if request["cache"] == "cold":
            evict_from_page_cache(run_dir)
        seconds, growth_mib, chosen = bench_resolve.measure(request["side"], ours if request["side"] == "f5app" else naive)
        return {"seconds": seconds, "peak_growth_mib": growth_mib, "chosen": chosen}

    info = {"build_s": build_s, "largest_model_pt_gib": [s / 2**30 for s in sizes[:4]], "checkpoints": len(sizes)}
    serve({"resolve": run, "info": lambda _: info})


def bench_resolution(sizes: Sizes, work: Path, logs: Path) -> dict[str, Any]:
    worker = Worker("resolve", ["--workdir", str(work / "resolve"), "--big-gib", str(sizes.resolve_big_gib)], logs / "resolve.log")
    try:
        info = worker.ask({"command": "info"})
        found: dict[str, dict[str, list]] = {}
        for cache in ("warm", "cold"):
            for rep in range(sizes.resolve_repeats):
                for side in (["f5app", "naive"] if rep % 2 == 0 else ["naive", "f5app"]):
                    answer = worker.ask({"command": "resolve", "side": side, "cache": cache})
                    row = found.setdefault(f"{side}_{cache}", {"seconds": [], "peak_growth_mib": [], "chosen": []})
                    for key in row:
                        row[key].append(answer[key])
        worker.close()
    except BaseException:
        worker._process.kill()
        raise
    out: dict[str, Any] = {"big_model_pt_gib": sizes.resolve_big_gib, **info}
    for cache in ("warm", "cold"):
        ours, naive = found[f"f5app_{cache}"], found[f"naive_{cache}"]
        out[cache] = {
            "f5app_s": median(ours["seconds"]), "naive_s": median(naive["seconds"]),
            "speedup": median(naive["seconds"]) / median(ours["seconds"]),
            "f5app_peak_growth_mib": max(ours["peak_growth_mib"]), "naive_peak_growth_mib": max(naive["peak_growth_mib"]),
            "same_choice": set(ours["chosen"]) == set(naive["chosen"]) and len(set(ours["chosen"])) == 1,
            "chosen": ours["chosen"][0],
        }
    return out


# ---------------------------------------------------------------------------------------- verify on load
def verify_worker(workdir: Path, gib: float) -> None:
    """Serve ``load`` requests over one checkpoint of ~``gib`` GiB written by the real store."""
    sys.path[:0] = [str(ROOT / "tests")]
    import torch
    from ckpt_factory import checkpoint_record, tiny_model_config, tiny_vocab

    from f5app.ckpt import schema
    from f5app.ckpt.reader import CheckpointReader
    from f5app.ckpt.store import CheckpointStore

    record = checkpoint_record(1, tiny_model_config(), tiny_vocab(), 1.0)
    third = int(gib * 2**30) // 4 // 3
    record.weights[schema.MODEL_STATE]["transformer.big"] = torch.randn(third)
    record.weights[schema.EMA_STATE]["ema_model.transformer.big"] = torch.randn(third)
    record.weights[schema.OPTIMIZER_STATE] = {"state": {0: {"exp_avg": torch.randn(third)}}, "param_groups": []}
    folder = CheckpointStore(workdir / "checkpoints", keep_last=0).save(record)
    size = sum(f.stat().st_size for f in folder.iterdir())
    # The same files (hard links) with the metadata an f5app that recorded only sha256 wrote.
    sha256_only = workdir / "sha256_only" / folder.name
    sha256_only.mkdir(parents=True)
    for file in folder.iterdir():
        if file.name != schema.METADATA_FILENAME:
            os.link(file, sha256_only / file.name)
    metadata = json.loads((folder / schema.METADATA_FILENAME).read_text())
    for entry in metadata["files"].values():
        entry.pop("xxh3_128")
    (sha256_only / schema.METADATA_FILENAME).write_text(json.dumps(metadata))
    CheckpointReader(folder, verify=False).resume_state(0)  # page cache warm for every side

    def load(request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        CheckpointReader(sha256_only if request["side"] == "sha256" else folder, verify=request["side"] != "plain").resume_state(0)
        return {"seconds": time.perf_counter() - start}

    serve({"load": load, "info": lambda _: {"gib": size / 2**30}})


def bench_verify(sizes: Sizes, work: Path, logs: Path) -> dict[str, Any]:
    worker = Worker("verify", ["--workdir", str(work / "verify"), "--big-gib", str(sizes.verify_gib)], logs / "verify.log")
    try:
        info = worker.ask({"command": "info"})
        sides = ["plain", "xxh3_128", "sha256"]
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        for rep in range(sizes.verify_repeats):
            for side in sides[rep % 3:] + sides[:rep % 3]:  # A B C, B C A, C A B, ...
                seconds[side].append(worker.ask({"command": "load", "side": side})["seconds"])
        worker.close()
    except BaseException:
        worker._process.kill()
        raise
    plain, verified, sha256 = (median(seconds[side]) for side in sides)
    return {"gib": info["gib"], "plain_s": plain, "verified_s": verified, "ratio": verified / plain,
            "sha256_s": sha256, "sha256_ratio": sha256 / plain}


# ---------------------------------------------------------------------------------------- CLI latency
def make_small_run(run_dir: Path) -> None:
    """Three small complete checkpoints for ``ckpt list``."""
    sys.path[:0] = [str(ROOT / "tests")]
    from ckpt_factory import make_f5app_checkpoint, tiny_model_config, tiny_vocab

    for update in (100, 200, 300):
        make_f5app_checkpoint(run_dir / "checkpoints", update, tiny_model_config(), tiny_vocab(), val_loss=1.0 / update)


def cli_commands(run_dir: Path) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "ckpt list RUN_DIR": [python, "-m", "f5app.ckpt", "list", str(run_dir)],
        "train --help": [python, "-m", "f5app.train", "--help"],
        "infer --help": [python, "-m", "f5app.infer", "--help"],
        "ckpt --help": [python, "-m", "f5app.ckpt", "--help"],
        "prepare --help": [python, "-m", "f5app.prepare", "--help"],
        "report --help": [python, "-m", "f5app.report", "--help"],
    }


def bench_cli(sizes: Sizes, work: Path, logs: Path) -> dict[str, Any]:
    run_dir = work / "cli" / "runs" / "listed"
    make_small_run(run_dir)
    commands = cli_commands(run_dir)
    env = worker_env()
    times: dict[str, list[float]] = {name: [] for name in commands}
    baseline: list[float] = []
    for _ in range(sizes.cli_repeats):
        baseline.append(run_timed([sys.executable, "-c", "pass"], env=env)[0])
        for name, command in commands.items():  # round-robin: load drifts hit every command alike
            seconds, status = run_timed(command, cwd=ROOT, env=env, log=logs / "cli.log")
            if status != 0:
                raise RuntimeError(f"`{' '.join(command[1:])}` exited {status}; see {logs / 'cli.log'}")
            times[name].append(seconds)
    return {
        "python_startup_s": median(baseline),
        "commands": {name: {"seconds": median(values), "runs": values} for name, values in times.items()},
    }


# ---------------------------------------------------------------------------------------- inference
class _MeasuredSubprocess:
    """Stands in for the ``subprocess`` module inside scripts/bench_infer.py: runs each command as
    before, through :data:`RSS_LAUNCHER` (some 30 ms more wall time, for both tools alike), and
    keeps its peak RSS, keyed by which tool it was."""

    def __init__(self) -> None:
        self.peak_rss_mib: dict[str, list[float]] = {"f5app": [], "upstream": []}

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    def run(self, command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        with tempfile.NamedTemporaryFile(suffix=".rss") as report:
            done = subprocess.run(with_rss_report(command, Path(report.name)), **kwargs)
            peak_kib = Path(report.name).read_text() or "nan"
        tool = "f5app" if "f5app.infer" in command else "upstream"
        self.peak_rss_mib[tool].append(float(peak_kib) / 1024)
        return subprocess.CompletedProcess(command, done.returncode, done.stdout, done.stderr)


def infer_worker(workdir: Path, device: str, repeats: int, nfe: int) -> None:
    """scripts/bench_infer.py's two measurements, run as it runs them, plus each command's peak RSS."""
    sys.path[:0] = [str(SCRIPTS)]
    import bench_infer

    measured = _MeasuredSubprocess()
    bench_infer.subprocess = measured

    def run(_: dict[str, Any]) -> dict[str, Any]:
        workdir.mkdir(parents=True, exist_ok=True)
        assets = bench_infer.make_assets(Path(tempfile.mkdtemp(dir=workdir)))
        rtf = bench_infer.rtf_pair(assets, nfe, repeats, device)
        startup = bench_infer.start_to_wav_pair(assets, nfe, repeats, device)
        return {"rtf": rtf, "start_to_wav": startup, "cli_peak_rss_mib": {k: median(v) for k, v in measured.peak_rss_mib.items()}}

    serve({"run": run})


def bench_inference(sizes: Sizes, device: str, work: Path, logs: Path) -> dict[str, Any]:
    worker = Worker("infer", ["--workdir", str(work / "infer"), "--device", device, "--repeats", str(sizes.infer_repeats)], logs / "infer.log")
    try:
        answer = worker.ask({"command": "run"})
        worker.close()
    except BaseException:
        worker._process.kill()
        raise
    rtf, startup = answer["rtf"], answer["start_to_wav"]
    return {
        "nfe_step": 32, "repeats": sizes.infer_repeats,
        "f5app_rtf": rtf["f5app_rtf"], "upstream_rtf": rtf["upstream_rtf"], "rtf_ratio": rtf["ratio"],
        "f5app_start_to_wav_s": startup["f5app_seconds"], "upstream_start_to_wav_s": startup["upstream_seconds"],
        "start_to_wav_ratio": startup["ratio"],
        "peak_rss_mib": answer["cli_peak_rss_mib"],
        "detail": answer,
    }


# ---------------------------------------------------------------------------------------- evaluation
def bench_evaluation(quick: bool, device: str, repeats: int, work: Path, logs: Path) -> dict[str, Any]:
    """scripts/bench_eval.py in its own process (it trains the demo and loads three models)."""
    out = work / "evaluation.json"
    command = [sys.executable, str(SCRIPTS / "bench_eval.py"), "--device", device, "--repeats", str(repeats),
               "--json", str(out), "--workdir", str(work / "evaluation")] + (["--quick"] if quick else [])
    seconds, status = run_timed(command, cwd=ROOT, env=worker_env(), log=logs / "evaluation.log")
    if status != 0:
        raise RuntimeError(f"scripts/bench_eval.py failed (exit {status}); see {logs / 'evaluation.log'}")
    return {**json.loads(out.read_text()), "seconds": seconds}

# ---------------------------------------------------------------------------------------- verify_asr
def bench_verify_asr(device: str, nfe: int, repeats: int, work: Path, logs: Path) -> dict[str, Any]:
    """scripts/bench_verify_asr.py in its own process (it loads two model sizes, the ASR, DNSMOS and resemblyzer)."""
    if device != "cpu":
        raise RuntimeError("the verify_asr section measures the CPU (its goal is this CPU's); run it with --device cpu")
    out = work / "verify_asr.json"
    command = [sys.executable, str(SCRIPTS / "bench_verify_asr.py"), "--nfe", str(nfe), "--repeats", str(repeats),
               "--json", str(out), "--workdir", str(work / "verify_asr")]
    seconds, status = run_timed(command, cwd=ROOT, env=worker_env(), log=logs / "verify_asr.log")
    if status != 0:
        raise RuntimeError(f"scripts/bench_verify_asr.py failed (exit {status}); see {logs / 'verify_asr.log'}")
    return {**json.loads(out.read_text()), "seconds": seconds}


# ---------------------------------------------------------------------------------------- serving
THREE_SENTENCES = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
                   "It is easy to tell the depth of a well.")
CLIENT_TEXT = "Hello there, this is a client asking for a short sentence."
LONG_SENTENCE = "Paragraph {} begins here, and it carries on for a good while so that the chunks fill up."
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def serve_worker(workdir: Path, device: str, threads: int, nfe: int) -> None:
    """A tiny trained run behind ``f5app.serve``'s app on a loopback port, plus direct Synthesizer calls."""
    import torch

    sys.path[:0] = [str(ROOT / "tests")]
    from infer_fixtures import tiny_run_checkpoint
    from serve_fixtures import running_server, tiny_serve_settings

    from f5app.inference.synthesizer import Synthesizer

    if threads:
        torch.set_num_threads(threads)
    run = workdir / "runs" / "bench"
    if not (run / "checkpoints").is_dir():
        tiny_run_checkpoint(run, update=2)
    settings = tiny_serve_settings(run, nfe_step=nfe, voices_dir=str(workdir / "voices"), queue_size=64, max_active=8)
    settings.vocoder.n_iter = 32  # the product's default
    settings.device = device
    synth = Synthesizer.from_config(settings, run)
    auto_batch = synth.max_batch
    server = running_server(settings, synth)
    running = server.__enter__()

    def direct(request: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        result = synth.generate(request["text"], seed=request["seed"])
        return {"seconds": time.perf_counter() - start, "audio_seconds": result.seconds}

    def long_text(request: dict[str, Any]) -> dict[str, Any]:
        synth.max_batch = request["max_batch"] or auto_batch
        try:
            start = time.perf_counter()
            text = " ".join(LONG_SENTENCE.format(word) for word in NUMBER_WORDS[: request["sentences"]])
            result = synth.generate(text, seed=0)
            return {"seconds": time.perf_counter() - start, "chunks": len(result.chunks), "audio_seconds": result.seconds,
                    "max_batch": synth.max_batch}
        finally:
            synth.max_batch = auto_batch

    serve({"info": lambda _: {"url": running.url, "auto_max_batch": auto_batch}, "direct": direct, "long": long_text})
    server.__exit__(None, None, None)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def bench_serve(sizes: Sizes, device: str, threads: int, work: Path, logs: Path) -> dict[str, Any]:
    import threading

    import httpx

    worker = Worker("serve", ["--workdir", str(work / "serve"), "--device", device, "--threads", str(threads), "--nfe", str(sizes.serve_nfe)],
                    logs / "serve.log")
    try:
        info = worker.ask({"command": "info"})
        url = f"{info['url']}/v1/audio/speech"
        client = httpx.Client(timeout=600)

        def full(text: str, seed: int) -> float:
            start = time.perf_counter()
            answer = client.post(url, json={"model": "tts-1", "input": text, "response_format": "wav", "stream": False, "seed": seed})
            answer.raise_for_status()
            return time.perf_counter() - start

        def first_byte(text: str, seed: int) -> tuple[float, float]:
            start = time.perf_counter()
            with client.stream("POST", url, json={"model": "tts-1", "input": text, "response_format": "pcm", "seed": seed}) as answer:
                answer.raise_for_status()
                pieces = answer.iter_bytes()
                next(pieces)
                first = time.perf_counter() - start
                for _ in pieces:
                    pass
            return first, time.perf_counter() - start

        full(THREE_SENTENCES, 0), first_byte(THREE_SENTENCES, 0), worker.ask({"command": "direct", "text": THREE_SENTENCES, "seed": 0})
        rows: dict[str, list[float]] = {"first_byte": [], "stream_total": [], "full": [], "direct": []}
        for rep in range(sizes.serve_repeats):
            steps = [("full", lambda: full(THREE_SENTENCES, rep)), ("stream", lambda: first_byte(THREE_SENTENCES, rep)),
                     ("direct", lambda: worker.ask({"command": "direct", "text": THREE_SENTENCES, "seed": rep})["seconds"])]
            for name, step in steps[rep % 3:] + steps[:rep % 3]:
                value = step()
                if name == "stream":
                    rows["first_byte"].append(value[0])
                    rows["stream_total"].append(value[1])
                else:
                    rows[name].append(value)
            print(f"  serve rep {rep}: first byte {rows['first_byte'][-1]:.3f} s, full {rows['full'][-1]:.3f} s, "
                  f"direct {rows['direct'][-1]:.3f} s", file=sys.stderr)

        throughput = {}
        for clients in (1, 2, 4):
            latencies: list[float] = []
            audio: list[float] = []

            def one_client(index: int) -> None:
                with httpx.Client(timeout=600) as own:
                    for n in range(sizes.serve_requests_per_client):
                        start = time.perf_counter()
                        answer = own.post(url, json={"model": "tts-1", "input": CLIENT_TEXT, "response_format": "pcm", "stream": False,
                                                     "seed": index * 100 + n})
                        answer.raise_for_status()
                        latencies.append(time.perf_counter() - start)
                        audio.append(len(answer.content) / 2 / 24000)

            started = time.perf_counter()
            pool = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            wall = time.perf_counter() - started
            throughput[str(clients)] = {"requests": len(latencies), "wall_s": wall, "requests_per_s": len(latencies) / wall,
                                        "audio_seconds_per_s": sum(audio) / wall, "p50_s": _percentile(latencies, 0.5),
                                        "p95_s": _percentile(latencies, 0.95)}
            print(f"  serve {clients} client(s): {len(latencies) / wall:.2f} req/s", file=sys.stderr)

        long_rows: dict[str, list[dict[str, Any]]] = {"one_at_a_time": [], "batched_4": [], "auto": []}
        settings = {"one_at_a_time": 1, "batched_4": 4, "auto": 0}
        for rep in range(sizes.serve_repeats):
            names = list(settings)
            for name in names[rep % 3:] + names[:rep % 3]:
                long_rows[name].append(worker.ask({"command": "long", "max_batch": settings[name], "sentences": sizes.serve_long_sentences}))
        worker.close()
    except BaseException:
        worker._process.kill()
        raise
    long_s = {name: median([r["seconds"] for r in values]) for name, values in long_rows.items()}
    return {
        "nfe_step": sizes.serve_nfe, "repeats": sizes.serve_repeats, "auto_max_batch": info["auto_max_batch"],
        "first_byte_s": median(rows["first_byte"]), "stream_total_s": median(rows["stream_total"]),
        "full_response_s": median(rows["full"]), "direct_s": median(rows["direct"]),
        "first_byte_ratio": median(rows["first_byte"]) / median(rows["full"]),
        "server_overhead_ratio": median(rows["full"]) / median(rows["direct"]),
        "throughput": throughput,
        "long_text": {"chunks": long_rows["auto"][0]["chunks"], "audio_seconds": long_rows["auto"][0]["audio_seconds"],
                      "one_at_a_time_s": long_s["one_at_a_time"], "batched_4_s": long_s["batched_4"], "auto_s": long_s["auto"],
                      "batched_4_ratio": long_s["batched_4"] / long_s["one_at_a_time"],
                      "auto_ratio": long_s["auto"] / long_s["one_at_a_time"]},
        "reps": rows,
    }
# ---------------------------------------------------------------------------------------- prepare
def _bench_prepare_module():  # noqa: ANN202
    sys.path[:0] = [str(SCRIPTS)]
    import bench_prepare

    return bench_prepare


def bench_prepare(quick: bool, minutes: str | None, work: Path, logs: Path) -> dict[str, Any]:
    return _bench_prepare_module().bench_prepare(quick, minutes, work, logs, with_rss_report, run_timed, worker_env())


# ---------------------------------------------------------------------------------------- speed
def bench_speed(model: str, device: str, work: Path, logs: Path) -> dict[str, Any]:
    """scripts/bench_speed.py in its own process: one repetition per side at real sizes."""
    out = work / "speed.json"
    nfe = "7" if model == "f5tts_v1_small" else "7,32"
    command = [sys.executable, str(SCRIPTS / "bench_speed.py"), "--model", model, "--device", device, "--nfe", nfe,
               "--workdir", str(work / "speed"), "--json", str(out)] + (["--ttfa"] if model == "f5tts_v1_small" else [])
    seconds, status = run_timed(command, cwd=ROOT, env=worker_env(), log=logs / "speed.log")
    if status != 0:
        raise RuntimeError(f"scripts/bench_speed.py failed (exit {status}); see {logs / 'speed.log'}")
    return {**json.loads(out.read_text()), "seconds": seconds}


def speed_rows(s: dict[str, Any]) -> list[Row]:
    rows = []
    for nfe, row in s["nfe"].items():
        for option in ("bf16", "int8", "fp32"):
            if option in row:
                m = row[option]
                rows.append(Row(f"{s['model']} inference NFE {nfe}, f5app {option} vs upstream infer_process (mel diff vs fp32 "
                                f"{m['mel_rel_diff_vs_fp32']:.3f}; {100 * m['peak_share']:.0f} % of the {option} matmul peak)",
                                f"RTF {m['rtf']:.2f}", f"RTF {row['upstream']['rtf']:.2f}", m["seconds"] / row["upstream"]["seconds"],
                                "<= 0.4x (2.5x faster)" if option == "bf16" else "info",
                                m["speedup_vs_upstream"] >= 2.5 if option == "bf16" else None))
    if "ttfa" in s:
        t = s["ttfa"]
        rows.append(Row(f"time to first audio vs full response ({s['model']}, NFE {t['nfe']}, three sentences)", f"{t['first_audio_s']:.1f} s",
                        f"{t['full_s']:.1f} s", t["ratio"], "<= 0.25x", t["ratio"] <= 0.25))
    return rows


# ---------------------------------------------------------------------------------------- main
def run_worker(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.py --worker")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int)
    parser.add_argument("--max-samples", type=int)
    parser.add_argument("--model")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--big-gib", type=float)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--nfe", type=int, default=32)
    parser.add_argument("--method")
    parser.add_argument("--base")
    parser.add_argument("--adapters")
    parser.add_argument("--precision", default="no")
    args = parser.parse_args(argv)
    os.environ.update(OFFLINE_ENV)
    if args.worker.startswith("lora-"):
        import bench_lora

        bench_lora.run_worker(args.worker, args)
        return
    if args.worker.startswith("size-"):
        import bench_train

        bench_train.size_worker(args)
        return
    if args.worker in ("train-f5app", "train-upstream"):
        training_worker(args.worker.split("-", 1)[1], args.workdir, args.device, args.frames, args.max_samples, args.threads)
    elif args.worker == "save":
        save_stall_worker(args.workdir, args.device, args.model)
    elif args.worker == "infer":
        infer_worker(args.workdir, args.device, args.repeats, args.nfe)
    elif args.worker == "resolve":
        resolve_worker(args.workdir, args.big_gib)
    elif args.worker == "verify":
        verify_worker(args.workdir, args.big_gib)
    elif args.worker == "serve":
        serve_worker(args.workdir, args.device, args.threads, args.nfe)
    else:
        raise SystemExit(f"unknown worker {args.worker!r}")


@dataclass
class Row:
    """One line of the table: what was measured, both sides, their ratio, the goal and its verdict."""

    measure: str
    ours: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None


def table_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    t = results.get("training")
    if t and "variants" in t:
        import bench_train

        rows += bench_train.table_rows(t)
    elif t:
        rows += [
            Row("training updates/s (tiny, vs upstream Trainer)", f"{t['f5app_updates_per_s']:.2f}", f"{t['upstream_updates_per_s']:.2f}",
                t["updates_ratio"], ">= 1.0x", t["updates_ratio"] >= 1.0),
            Row("training frames/s (same batches)", f"{t['f5app_frames_per_s']:.0f}", f"{t['upstream_frames_per_s']:.0f}",
                t["frames_ratio"], ">= 1.0x", t["frames_ratio"] >= 1.0),
            Row(f"checkpoint every {t['save_every']} updates: training time spent on saves", f"{100 * t['ckpt_overhead_attributed']:.1f} %",
                "0 % (no saves)", None, "<= 3 %", t["ckpt_overhead_attributed"] <= 0.03),
            Row("  same, from throughput with vs without saves (load-noisy)", f"{t['f5app_with_ckpt_updates_per_s']:.2f} upd/s",
                f"{t['f5app_updates_per_s']:.2f} upd/s", None, "info", None),
            Row("training peak RSS (MiB)", f"{t['peak_rss_mib']['f5app']:.0f}",
                f"{t['peak_rss_mib']['upstream']:.0f} (+ forked loader worker {t['peak_rss_mib']['upstream_dataloader_worker']:.0f}, pages shared)",
                t["peak_rss_mib"]["f5app"] / t["peak_rss_mib"]["upstream"], "info", None),
        ]
    v = results.get("save_stall")
    if v:
        rows += [
            Row(f"save stall per checkpoint ({v['model']}, {v['state_gib']:.1f} GiB state) vs sync torch.save",
                f"{v['f5app_stall_s']:.3f} s", f"{v['sync_torch_save_s']:.2f} s", v["ratio"], "<= 0.25x", v["ratio"] <= 0.25),
            Row("  update during the background save vs plain update (CPU contention)", f"{v['update_s_while_saving']:.2f} s",
                f"{v['update_s_plain']:.2f} s", v["update_s_while_saving"] / v["update_s_plain"], "info", None),
        ]
    r = results.get("resolution")
    if r:
        for cache in ("warm", "cold"):
            c = r[cache]
            rows.append(Row(f"ckpt=auto over 20 checkpoints ({r['big_model_pt_gib']:g} GiB big files, page cache {cache}) vs naive full load",
                            f"{1000 * c['f5app_s']:.0f} ms", f"{1000 * c['naive_s']:.0f} ms", c["speedup"], ">= 100x faster",
                            c["speedup"] >= 100 and c["same_choice"]))
        growth = max(r["warm"]["f5app_peak_growth_mib"], r["cold"]["f5app_peak_growth_mib"])
        naive_growth = max(r["warm"]["naive_peak_growth_mib"], r["cold"]["naive_peak_growth_mib"])
        rows.append(Row("  resolution peak memory growth (MiB)", f"{growth:.1f}", f"{naive_growth:.0f}", None, "< 100 MB", growth * 2**20 < 100e6))
    i = results.get("inference")
    if i:
        rows += [
            Row("inference real-time factor vs upstream infer_process", f"{i['f5app_rtf']:.3f}", f"{i['upstream_rtf']:.3f}",
                i["rtf_ratio"], "<= 1.0x", i["rtf_ratio"] <= 1.0),
            Row("process start to wav written vs f5-tts_infer-cli", f"{i['f5app_start_to_wav_s']:.1f} s", f"{i['upstream_start_to_wav_s']:.1f} s",
                i["start_to_wav_ratio"], "<= 0.5x", i["start_to_wav_ratio"] <= 0.5),
            Row("inference CLI peak RSS (MiB)", f"{i['peak_rss_mib']['f5app']:.0f}", f"{i['peak_rss_mib']['upstream']:.0f}",
                i["peak_rss_mib"]["f5app"] / i["peak_rss_mib"]["upstream"], "info", None),
        ]
    sv = results.get("serve")
    if sv:
        rows += [
            Row("serve: first audio byte (stream) vs full response, three sentences", f"{sv['first_byte_s']:.2f} s",
                f"{sv['full_response_s']:.2f} s", sv["first_byte_ratio"], "<= 0.5x", sv["first_byte_ratio"] <= 0.5),
            Row("serve: full response latency vs Synthesizer.generate in-process", f"{sv['full_response_s']:.2f} s",
                f"{sv['direct_s']:.2f} s", sv["server_overhead_ratio"], "<= 1.1x", sv["server_overhead_ratio"] <= 1.1),
        ]
        for clients, t in sv["throughput"].items():
            rows.append(Row(f"serve: {clients} concurrent client(s), {t['requests']} requests", f"{t['requests_per_s']:.2f} req/s, "
                            f"{t['audio_seconds_per_s']:.1f} audio s/s", f"p50 {t['p50_s']:.2f} s, p95 {t['p95_s']:.2f} s", None, "info", None))
        lt = sv["long_text"]
        on_gpu = results.get("device") == "cuda"
        rows += [
            Row(f"long text ({lt['chunks']} chunks): default (max_batch auto={sv['auto_max_batch']}) vs one chunk at a time",
                f"{lt['auto_s']:.2f} s", f"{lt['one_at_a_time_s']:.2f} s", lt["auto_ratio"],
                "<= 0.6x" if on_gpu else "<= 1.0x (CPU)",
                # auto=1 is the one-at-a-time path itself (batching measured slower on CPU): the ratio is noise
                sv["auto_max_batch"] == 1 or lt["auto_ratio"] <= (0.6 if on_gpu else 1.0)),
            Row("  same, padded batches of 4 forced", f"{lt['batched_4_s']:.2f} s", f"{lt['one_at_a_time_s']:.2f} s",
                lt["batched_4_ratio"], "info", None),
        ]
    if results.get("lora"):
        import bench_lora

        rows += bench_lora.table_rows(results["lora"])
    c = results.get("cli")
    if c:
        for name, row in c["commands"].items():
            rows.append(Row(f"`python -m f5app.{name}` wall time", f"{row['seconds']:.2f} s", f"python -c pass {c['python_startup_s']:.2f} s",
                            None, "<= 1.5 s", row["seconds"] <= 1.5))
    w = results.get("verify")
    if w:
        rows.append(Row(f"resume read of a {w['gib']:.2f} GiB checkpoint verified (xxh3_128 of every file + finiteness) vs without",
                        f"{w['verified_s']:.2f} s", f"{w['plain_s']:.2f} s", w["ratio"], "<= 1.1x", w["ratio"] <= 1.1))
        if "sha256_s" in w:
            rows.append(Row("  same, a checkpoint saved before xxh3_128 was recorded (verified with its sha256)",
                            f"{w['sha256_s']:.2f} s", f"{w['plain_s']:.2f} s", w["sha256_ratio"], "info", None))
    e = results.get("evaluation")
    if e:
        cost, speed, up = e["evaluation"], e["asr_speed"], e["upstream_wer"]
        per = cost["seconds_per_prompt"]
        interval = f"every {cost['every']} updates" + ("" if cost["every_is_configured"] else " (save_every; eval.every is 0)")
        rows += [
            Row(f"evaluation: seconds per prompt (synthesis / ASR / embedding, nfe {cost['nfe_step']})",
                f"{per['synthesis']:.2f} / {per['asr']:.2f} / {per['embedding']:.2f} s", "-", None, "info", None),
            Row(f"evaluation share of demo training wall time ({cost['prompts']} prompts {interval}, {cost['events_per_run']} per run)",
                f"{100 * cost['share_steady']:.1f} %", f"{cost['train_wall_s']:.0f} s training", None, "<= 5 %", cost["share_steady"] <= 0.05),
            Row("  same, counting model loading and first-use warm-up once per run", f"{100 * cost['share_with_loading']:.1f} %",
                f"load {cost['load_s']:.1f} s", None, "info", None),
            Row("  same, measured: demo wall time with evaluation on vs eval.every=0 (load-noisy)", f"{cost['train_with_eval_wall_s']:.0f} s",
                f"{cost['train_wall_s']:.0f} s", cost["train_with_eval_wall_s"] / cost["train_wall_s"], "info", None),
        ]
        for beam, row in sorted(speed.items()):
            rows.append(Row(f"ASR real-time factor (tiny.en, {beam}, human speech)", f"{row['rtf']:.3f}", "1.0 (real time)", row["rtf"], "info", None))
        rows.append(Row(f"WER vs upstream run_asr_wer, same files and model ({up['files']} files; {up['agree']} agree, rest explained)",
                        f"{up['ours_mean_wer']:.3f}", f"{up['upstream_mean_wer']:.3f}", None, "agree or explained",
                        all(r["why"] == "agree" or r["why"].startswith(("normalisation", "different transcripts")) for r in up["rows"])))
    rows += [Row(**row) for row in _bench_prepare_module().table_rows(results.get("prepare"))]
    if results.get("speed"):
        rows += speed_rows(results["speed"])
    if results.get("verify_asr"):
        sys.path[:0] = [str(SCRIPTS)]
        import bench_verify_asr

        rows += [Row(**row) for row in bench_verify_asr.table_rows(results["verify_asr"])]
    return rows


def markdown_table(rows: list[Row]) -> str:
    lines = ["| measure | f5app | baseline | ratio | goal | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.{1 if row.ratio >= 20 else 2 if row.ratio >= 0.1 else 4}f}x"
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.measure} | {row.ours} | {row.baseline} | {ratio} | {row.goal} | {met} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the figures came from. torch is asked in a child process: importing it here would raise
    the floor of every child's peak-RSS figure (see RSS_LAUNCHER)."""
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    memory_gib = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    gpu = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() or None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_gib, 1), "gpu": gpu,
            "python": platform.python_version(), "torch": version("torch")}


def _bench_lora(args: argparse.Namespace, sizes: Sizes, work: Path, logs: Path) -> dict[str, Any]:
    import bench_lora

    return bench_lora.bench_lora(args.lora_model, args.lora_updates, sizes.save_repeats, args.device, args.threads, work, logs)


def _bench_training(args: argparse.Namespace, sizes: Sizes, work: Path, logs: Path) -> dict[str, Any]:
    model = args.model or "tiny"
    if model == "tiny" and not args.train_variants:  # tiny with --train-variants: the real-size comparison as a smoke test
        return bench_training(sizes, args.device, args.threads, work, logs)
    import bench_train

    variants = args.train_variants.split(",") if args.train_variants else (
        list(bench_train.VARIANTS) if model == "f5tts_v1_small" else ["f5app", "upstream"])
    unknown = set(variants) - set(bench_train.VARIANTS)
    if unknown:
        raise SystemExit(f"--train-variants: unknown {', '.join(sorted(unknown))}; choose from {', '.join(bench_train.VARIANTS)}")
    train_sizes = bench_train.default_sizes(args.device)
    for key, value in (("updates", args.train_updates), ("clips", args.train_clips), ("frames", args.train_frames)):
        if value:
            train_sizes[key] = value
    return bench_train.bench_training_at_size(model, variants, args.device, args.precision, args.threads, train_sizes, work, logs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--worker" in argv:
        run_worker(argv)
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="training at a real size (scripts/bench_train.py), e.g. from a GPU check:\n"
               "  scripts/bench.py --only train --model f5tts_v1_base --device cuda --precision bf16 --json OUT\n"
               "writes OUT['training'] = {model, device, precision, dtype, sizes, updates_ratio, same_batches,\n"
               "  variants: {f5app|upstream|checkpoint_activations|adamw8bit: {updates_per_s, flops_per_s, model_flops,\n"
               "  matmul_peak_flops, mfu, peak_rss_mib, cuda_peak_allocated_mib, updates, seconds, batches}}}\n"
               "and OUT['table'] (Markdown). The sections and their method: the top of scripts/bench.py.")
    parser.add_argument("--quick", action="store_true", help="reduced sizes, no inference, evaluation, serve, lora or verify_asr section unless --only names it (under 3 minutes)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)} ('train' is 'training'; default: all but prepare; --quick: also not infer, evaluation, serve, lora, verify_asr)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in both training workers (default 1: steadier on a shared CPU; 0: torch's default)")
    parser.add_argument("--repeats", type=int, help="override every section's repetitions")
    parser.add_argument("--big-gib", type=float, help="override the size of the big checkpoints in the resolution run")
    parser.add_argument("--workdir", type=Path, help="scratch folder, kept afterwards (default: a temp folder, removed)")
    parser.add_argument("--prepare-minutes", help="prepare section: SHORT,LONG recording lengths (default 10,60; --quick 1,3)")
    parser.add_argument("--lora-model", default="f5tts_v1_small", help="model of the lora section (tiny for a smoke test)")
    parser.add_argument("--lora-updates", type=int, default=3, help="timed updates per side in the lora section (slow on CPU)")
    parser.add_argument("--model", choices=["tiny", "f5tts_v1_small", "f5tts_v1_base"],
                        help="the model of the training and speed sections (given without --only: runs just those two). "
                        "training: tiny (the default; the demo model, many repetitions) or a real size (scripts/bench_train.py; "
                        "tiny with --train-variants runs that comparison on the tiny model, a smoke test); "
                        "speed: inference at that size (default f5tts_v1_small)")
    parser.add_argument("--precision", default="no", choices=["no", "bf16", "fp16"], help="training section at a real size: trainer.mixed_precision of every variant")
    parser.add_argument("--train-variants", help="training section at a real size: comma-separated subset of "
                        "f5app,upstream,checkpoint_activations,adamw8bit (default: all four at f5tts_v1_small, f5app,upstream at f5tts_v1_base)")
    parser.add_argument("--train-updates", type=int, help="training section at a real size: timed updates per variant (default 2 on CPU, 20 on CUDA)")
    parser.add_argument("--train-clips", type=int, help="training section at a real size: demo clips trained on (default 4 on CPU, 40 on CUDA)")
    parser.add_argument("--train-frames", type=int, help="training section at a real size: mel frames per batch (default 500 on CPU, 9000 on CUDA)")
    parser.add_argument("--verify-nfe", type=int, default=32, help="sampling steps of the verify_asr section's synthesis (the product default is 32)")
    args = parser.parse_args(argv)
    if args.only:
        args.only = ",".join("training" if name == "train" else name for name in args.only.split(","))
    # prepare (an hour of audio through the recordings pipeline) runs only when named: --only prepare;
    # --quick also leaves out the sections that take minutes each on a CPU
    only = set(args.only.split(",")) if args.only else {"training", "speed"} if args.model else set(SECTIONS) - {"prepare", "speed"} - ({"infer", "evaluation", "serve", "lora", "verify_asr"} if args.quick else set())
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    host = machine()
    if args.device == "cuda" and not host["gpu"]:
        parser.error("--device cuda: no CUDA device is visible to torch here")
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats, save_repeats=args.repeats, resolve_repeats=args.repeats,
                        infer_repeats=args.repeats, cli_repeats=args.repeats, serve_repeats=args.repeats)
    if args.big_gib:
        sizes = replace(sizes, resolve_big_gib=args.big_gib)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="f5app-bench-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": " ".join(["scripts/bench.py", *argv]), "mode": "quick" if args.quick else "full", "device": args.device,
        "machine": host, "sizes": asdict(sizes), "load_average_start": load_average(),
    }
    try:
        for section, key, bench in (
            ("training", "training", lambda: _bench_training(args, sizes, work, logs)),
            ("save", "save_stall", lambda: bench_save_stall(sizes, args.device, work, logs)),
            ("resolve", "resolution", lambda: bench_resolution(sizes, work, logs)),
            ("infer", "inference", lambda: bench_inference(sizes, args.device, work, logs)),
            ("cli", "cli", lambda: bench_cli(sizes, work, logs)),
            ("verify", "verify", lambda: bench_verify(sizes, work, logs)),
            ("evaluation", "evaluation", lambda: bench_evaluation(args.quick, args.device, args.repeats or 2, work, logs)),
            ("serve", "serve", lambda: bench_serve(sizes, args.device, args.threads, work, logs)),
            ("prepare", "prepare", lambda: bench_prepare(args.quick, args.prepare_minutes, work, logs)),
            ("lora", "lora", lambda: _bench_lora(args, sizes, work, logs)),
            ("speed", "speed", lambda: bench_speed(args.model or "f5tts_v1_small", args.device, work, logs)),
            ("verify_asr", "verify_asr", lambda: bench_verify_asr(args.device, args.verify_nfe, args.repeats or 1, work, logs)),
        ):
            if section in only:
                print(f"[{time.perf_counter() - started:5.0f} s] {section} ...", file=sys.stderr)
                results[key] = bench()
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = load_average()
    results["seconds"] = time.perf_counter() - started
    rows = table_rows(results)
    results["goals"] = [asdict(row) for row in rows if row.met is not None]
    table = markdown_table(rows)
    results["table"] = table
    print(table)
    print(f"\n{results['mode']} run on {args.device}: {results['seconds']:.0f} s; load average {results['load_average_start']} -> "
          f"{results['load_average_end']} ({results['machine']['cores']} cores)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
