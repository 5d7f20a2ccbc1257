"""The training run, top to bottom: setup → train → cleanup (a torchtune-style recipe).

Design points worth knowing before editing:
- Data order is a pure function of (seed, epoch): every process computes the same global list
  of frame batches and takes every ``world_size``-th one. The position saved in a checkpoint is
  the number of *global* batches consumed this epoch, so a resume with another world size
  continues from the same samples.
- The learning rate is recomputed from the current config at every update (see schedule.py).
- Validation and audio samples run inside ``forked_rng`` so they never move the training RNG
  streams: an interrupted-and-resumed run draws exactly the numbers an uninterrupted one does.
- Only the main process writes checkpoints; the other processes send it their RNG states.
- ``finetune=lora`` changes the model, the EMA and what a checkpoint holds through ``self.lora``
  (training/lora.py); everything else (data, schedule, resume, signals, saving) is the same.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from ema_pytorch import EMA
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from f5app.audio.io import write_audio
from f5app.ckpt.adapt import load_into
from f5app.ckpt.arch import model_config_diff
from f5app.ckpt.reader import CheckpointReader
from f5app.ckpt.resolve import resolve_and_load
from f5app.ckpt.schema import (
    Checkpoint, CheckpointMetadata, CheckpointRef, HydraRecord, Lineage, Metrics, Progress, TrainingState, full_weights,
    new_metadata,
)
from f5app.ckpt.store import CheckpointStore, base_bound
from f5app.config import TrainConfig
from f5app.data.dataset import FrameBatches, collate, load_splits
from f5app.data.mixing import with_replay
from f5app.data.replay import check_replay, prepare_replay, union_vocab
from f5app.data.sources import prepare_data
from f5app.data.tokenizer import extend_vocab
from f5app.data.vocab import read_vocab, vocab_map
from f5app.devices import pick_device
from f5app.errors import UserError, first_line
from f5app.evaluation.sets import check_metric_sets
from f5app.model import build_cfm
from f5app.run_state import PREEMPTED_FILENAME, clear_preempted, reached_bounds, write_preempted, write_run_status
from f5app.text.normalise import training_normaliser
from f5app.training.distributed_env import export_submitit_distributed_env
from f5app.training.evaluation import TrainingEvaluation
from f5app.training.lora import LoraRun
from f5app.training.lock import RunLock
from f5app.training.optim import build_optimizer, check_precision
from f5app.training.rng import capture_rng_state, forked_rng, restore_rng_state, seed_everything
from f5app.training.samples import render_sample
from f5app.training.saver import CheckpointWriter
from f5app.training.schedule import learning_rate
from f5app.training.signals import EXIT_PREEMPTED, StopRequest
from f5app.training.trackers import build_tracker

log = logging.getLogger("f5app.train")

VALIDATION_SEED = 1234
STATUS_EVERY_SECONDS = 2.0  # run_status.json is rewritten at most this often while training (a few ms each)
#: Written into the run directory when a signal stopped the run after its checkpoint.
PREEMPTED_MARKER = PREEMPTED_FILENAME


@dataclass
class RunContext:
    """What the entry point knows about this run beyond the typed settings."""

    run_dir: Path
    resolved_config: dict[str, Any]
    hydra: HydraRecord = field(default_factory=HydraRecord)  # overrides, choices, job / sweep info


class TrainingDiverged(RuntimeError):
    """Too many consecutive updates had a non-finite loss or gradient norm; nothing NaN was saved.

    Not a UserError: nothing the user typed was refused, the run failed (exit status 1), but its
    message is one line that says what to change."""


class TrainingStopped(SystemExit):
    """Raised after a preemption checkpoint; exits the process with EXIT_PREEMPTED."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_PREEMPTED)
        self.message = message


class Trainer:
    def __init__(self, settings: TrainConfig, context: RunContext) -> None:
        self.cfg = settings
        self.ctx = context
        self.run_dir = Path(context.run_dir)
        self.progress = Progress()
        self.lineage = Lineage()
        self.nonfinite_streak = 0  # consecutive skipped updates (non-finite loss or gradient norm)
        self.nonfinite_total = 0
        self._status_written_at = float("-inf")
        self.stop = StopRequest()
        self._lock = None
        self._writer: CheckpointWriter | None = None
        self._loaded = None  # the checkpoint the main process read (verified) while resolving
        self.tracker = None
        self.evaluation = None  # TrainingEvaluation on the main process when eval.every > 0
        self._eval_scores = None  # (update, EvalScores) of the newest evaluation, for the next checkpoint
        self.lora = None  # training/lora.py's LoraRun when finetune=lora

    # ------------------------------------------------------------------ life cycle
    def run(self) -> float | None:
        """Train to the configured bound; return the best value of ``objective`` over the run (the
        sweep objective: the best validation loss by default, or the best WER, CER or SIM)."""
        self.stop.install()  # before setup: a signal during start-up must not kill the process half-way
        try:
            self.setup()
            result = self.train()
            self._record_status("finished")
            return result
        except TrainingStopped:
            raise  # _stopped recorded it
        except BaseException as error:
            self._record_status("failed", message=f"{type(error).__name__}: {first_line(error, default='')}")
            raise
        finally:
            self.cleanup()

    def _record_status(self, state: str, message: str = "") -> None:
        """run_status.json: what the sweep report reads instead of the log. Only the lock holder writes it."""
        if self._lock is None:
            return
        p, t = self.progress, self.cfg.trainer
        self._status_written_at = time.monotonic()
        try:
            write_run_status(self.run_dir, state, update=p.update, epoch=p.epoch, max_updates=t.max_updates, epochs=t.epochs, message=message)
        except OSError as error:  # a status file must never hide the real outcome
            log.warning("could not write %s status: %s", state, error)

    def setup(self) -> None:
        export_submitit_distributed_env()  # before Accelerator(): a multi-task submitit job becomes N ranks
        cfg = self.cfg
        _check_objective(cfg)
        check_replay(cfg.data.replay)
        on_cpu = cfg.trainer.cpu or pick_device("auto") == "cpu"  # no GPU here: accelerate's CPU mode
        check_precision(cfg.trainer.mixed_precision, on_cpu)
        self.accelerator = Accelerator(
            # accelerate only forms a multi-process CPU group (gloo) when told it is on CPU.
            cpu=on_cpu,
            mixed_precision=cfg.trainer.mixed_precision,
            gradient_accumulation_steps=cfg.optim.grad_accumulation_steps,
        )
        acc = self.accelerator
        self.is_main = acc.is_main_process
        self.world_size = acc.num_processes
        self.rank = acc.process_index
        if not self.is_main:  # one voice in the shared train.log; other ranks only warn
            logging.getLogger("f5app").setLevel(logging.WARNING)
        if cfg.trainer.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            self._lock = RunLock(self.run_dir).acquire()
            clear_preempted(self.run_dir)
            if self._lock.took_over_from:
                log.warning("took over the run lock left by %s (no longer running)", self._lock.took_over_from)
            self._record_status("running")
        self.store = CheckpointStore(self.run_dir / "checkpoints", keep_last=cfg.ckpt.keep_last, best_metric=cfg.ckpt.best_metric,
                                     bound=base_bound(cfg.ckpt.base_set, cfg.ckpt.max_base_wer_rise))
        if self.is_main:
            for leftover in self.store.cleanup_partials():
                log.warning("removed a partial checkpoint left by an interrupted save: %s", leftover)
        self._writer = CheckpointWriter(self.store.save, background=cfg.trainer.async_save)

        self.resolution = self._resolve_checkpoint()
        if self._finished_at_resolved_checkpoint():
            return  # train() reports it; no data, model or tracker is needed for that
        self.prepared, self.replayed = self._prepare_data()
        self.vocab = self._choose_vocab()
        model = self._build_model()
        self._build_ema(model)
        self._build_optimizer(model)
        log.info("model %s: %.2f M parameters, vocabulary %d, %s on %d process(es), device %s",
                 cfg.model.name, sum(p.numel() for p in model.parameters()) / 1e6, len(self.vocab),
                 self.resolution.mode, self.world_size, self.accelerator.device)
        self._build_data()
        self._restore_counters_and_rng()
        self._build_evaluation()

        self.tracker = build_tracker(
            cfg.logger, run_dir=self.run_dir, run_name=cfg.run_name, config=self.ctx.resolved_config, is_main=self.is_main
        )

    def cleanup(self) -> None:
        self.stop.uninstall()
        try:
            if self._writer is not None:
                self._writer.close()
        finally:
            if self.tracker is not None:
                self.tracker.close()
            if self._lock is not None:
                self._lock.release()

    # ------------------------------------------------------------------ setup pieces
    def _resolve_checkpoint(self):
        """Main process resolves (it may quarantine files) and, for a resume, reads and verifies the
        checkpoint; everyone gets the same answer."""
        def read_for_resume(chosen):
            own = chosen.source in ("resume", "best", "last", "latest")
            return CheckpointReader.of(chosen).resume_state(self.rank) if own else None

        payload: list[Any] = [None]
        if self.is_main:
            # resolve logs its table and decision itself
            resolution, self._loaded = resolve_and_load(self.cfg.ckpt, purpose="train", run_dir=self.run_dir, model=self.cfg.model, load=read_for_resume)
            payload = [resolution]
        if self.world_size > 1:
            broadcast_object_list(payload, from_process=0)
        return payload[0]

    def _finished_at_resolved_checkpoint(self) -> bool:
        """A resumed run that already reached its bounds: read the counters from the (validated) metadata."""
        chosen = self.resolution.chosen
        meta = chosen.metadata if chosen is not None and self.resolution.mode == "resume" else None
        if meta is None or not reached_bounds(meta.update, meta.epoch, self.cfg.trainer.max_updates, self.cfg.trainer.epochs):
            return False
        self.progress = Progress(
            update=meta.update, epoch=meta.epoch, samples_seen=meta.samples_seen, best_val_loss=meta.metrics.best_val_loss,
            val_history=list(meta.metrics.val_history), eval_history=list(meta.metrics.eval_history),  # type: ignore[arg-type]
            eval_set_history=list(meta.metrics.eval_set_history),  # type: ignore[arg-type]
        ).copy()
        return True

    def _prepare_data(self):
        normaliser = training_normaliser(self.cfg.text_norm, self.cfg.eval.language or self.cfg.asr.language)
        progress = self.is_main and self.cfg.trainer.progress_bar
        with self.accelerator.main_process_first():
            prepared = prepare_data(self.cfg.data, progress=progress, normaliser=normaliser)
            return prepared, prepare_replay(self.cfg.data, self.cfg.text_norm, progress=progress)

    def _choose_vocab(self) -> list[str]:
        """Scratch: the data's vocab. Fine-tune: the weights' vocab grown by the data's new tokens.
        Resume: exactly the checkpoint's vocab (changing it mid-run is refused). The data's vocab is
        the main set's grown by the replay sets' tokens."""

        chosen = self.resolution.chosen
        data_vocab, replay_added = union_vocab(list(self.prepared.vocab), self.replayed)
        if replay_added:
            log.info("the replay sets add %d tokens to the data's vocabulary: %s", len(replay_added), "".join(replay_added[:60]))
        if self.resolution.mode == "scratch" or chosen is None:
            return data_vocab
        if chosen.vocab_path is None:
            raise UserError(f"checkpoint {chosen.path} has no vocab.txt beside it; put the vocabulary it was trained with there")
        base = read_vocab(chosen.vocab_path)
        if self.resolution.mode == "resume":
            unknown = sorted(set(data_vocab) - set(base))
            if unknown:
                log.warning("the data has %d tokens the resumed model's vocabulary lacks (they map to unknown): %s", len(unknown), "".join(unknown[:40]))
            return base
        vocab, added = extend_vocab(base, data_vocab)
        if added:
            log.info("fine-tuning grows the vocabulary by %d tokens: %s", len(added), "".join(added[:60]))
        return vocab

    def _build_model(self) -> torch.nn.Module:
        """The CFM with the resolved weights in it: fresh (scratch), fine-tuned from, or resumed."""

        cfg = self.cfg
        seed_everything(cfg.trainer.seed)
        model = build_cfm(cfg.model, self.vocab)
        self.resumed = None
        mode, chosen = self.resolution.mode, self.resolution.chosen
        self.lora = LoraRun.for_run(cfg, self.resolution)
        if mode == "finetune":
            weights = CheckpointReader.of(chosen).weights(use_ema=cfg.ckpt.use_ema)
            report = load_into(model, weights.state, old_vocab=weights.vocab, new_vocab=self.vocab)
            for note in [*weights.notes, *report.notes]:
                log.info("weights: %s", note)
            self.lineage = Lineage("finetune", finetuned_from=_reference(chosen))
            if self.lora is not None:
                model = self.lora.start(model, chosen, weights, self.vocab)
        elif mode == "resume":
            self._check_config_changes(chosen.metadata)
            # the main process read it verified during resolution; the others read the same files
            self.resumed = self._loaded or CheckpointReader.of(chosen, verify=False).resume_state(self.rank)
            if self.lora is not None:
                model = self.lora.resume(model, chosen, self.resumed, self.vocab)
            else:
                model.load_state_dict(self.resumed.model)
            parent_lineage = chosen.metadata.lineage if chosen.metadata is not None else Lineage()
            self.lineage = parent_lineage.continued(_reference(chosen))
        return model

    def _build_ema(self, model: torch.nn.Module) -> None:
        """The EMA copy lives on the main process only (it alone validates, samples and saves)."""
        self.ema = None
        if not self.is_main:
            return
        t = self.cfg.trainer
        if self.lora is not None:
            self.ema = self.lora.ema(model, t, self.resumed)  # the trainable tensors only
            return
        self.ema = EMA(model, include_online_model=False, beta=t.ema_decay, update_after_step=t.ema_update_after, update_every=1)
        if self.resumed is not None:
            self.ema.load_state_dict(self.resumed.ema)

    def _build_optimizer(self, model: torch.nn.Module) -> None:
        trainable = [p for p in model.parameters() if p.requires_grad]  # all of them, unless finetune=lora
        optimizer = build_optimizer(trainable, self.cfg.optim)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if self.resumed is not None:
            _check_same_optimizer(self.resolution.chosen.metadata, self.cfg.optim.name)
            self.optimizer.load_state_dict(self.resumed.optimizer)
            scaler_state = self.resumed.training_state.grad_scaler
            if scaler_state and self.accelerator.scaler is not None:
                self.accelerator.scaler.load_state_dict(scaler_state)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)

    def _check_config_changes(self, metadata: CheckpointMetadata | None) -> None:
        recorded = metadata.config if metadata is not None else {}
        if not recorded:
            log.warning("the checkpoint records no config; cannot check what changed since it was written")
            return
        current = self.ctx.resolved_config
        diff = model_config_diff(recorded.get("model", {}), current.get("model", {}))
        if diff:
            raise UserError(
                "refusing to resume: the model architecture differs from the checkpoint's "
                "(start a new run_name, or fine-tune with ckpt=custom):\n  " + "\n  ".join(diff)
            )
        for section, verdict in (("optim", "the schedule is rebuilt from the new values"), ("trainer", "new values apply from here"), ("data", "the data changed; training continues on the new data")):
            changes = _dict_diff(recorded.get(section, {}), current.get(section, {}), prefix=section)
            if changes:
                log.warning("config changed since the checkpoint (%s):\n  %s", verdict, "\n  ".join(changes))

    def _build_data(self) -> None:
        d = self.cfg.data
        main_train, self.val_set = load_splits(self.prepared, self.cfg.model.mel, d.val_fraction, d.val_min_items, d.seed)
        self.vocab_index = vocab_map(self.vocab)
        # with data.replay, train_set holds the replay clips after the main set's (f5app/data/mixing.py)
        self.train_set, self.train_batches = with_replay(main_train, self.replayed, d.replay, self.cfg.model.mel, d)
        if len(self.val_set):
            self.val_batches = FrameBatches(self.val_set.frame_lens(), d.frames_per_gpu, d.max_samples, d.seed).for_epoch(0)
        else:  # e.g. data.val_fraction=0, or every clip shares audio with another (split_groups.json keeps groups whole)
            self.val_batches = []
            log.warning("no validation clips (data.val_fraction=%s, data.val_min_items=%s): the validation loss is not measured", d.val_fraction, d.val_min_items)
        log.info("data: %d training clips, %d validation clips, %d batches per epoch", len(self.train_set), len(self.val_set), len(self.train_batches.for_epoch(0)))

    def _restore_counters_and_rng(self) -> None:
        if self.resumed is None:
            seed_everything(self.cfg.trainer.seed + self.rank)
            return
        saved = self.resumed.training_state
        self.progress = saved.progress.copy()
        if saved.world_size != self.world_size:
            log.warning(
                "resuming a %d-process run with %d processes: the data continues from %d samples seen",
                saved.world_size, self.world_size, self.progress.samples_seen,
            )
        if self.resumed.rng is not None:
            restore_rng_state(self.resumed.rng)
        else:
            seed = self.cfg.trainer.seed + self.rank + 1_000_003 * self.progress.update
            log.warning("process %d has no saved RNG state in the checkpoint; re-seeded deterministically with %d", self.rank, seed)
            seed_everything(seed)
        log.info("resumed at update %d (epoch %d, %d samples seen)", self.progress.update, self.progress.epoch, self.progress.samples_seen)

    # ------------------------------------------------------------------ training
    def _total_updates(self) -> int:
        per_epoch = math.ceil(len(self.train_batches.for_epoch(0)) / self.world_size / self.cfg.optim.grad_accumulation_steps)
        return max(1, min(self.cfg.trainer.max_updates, per_epoch * self.cfg.trainer.epochs))

    def _finished(self) -> bool:
        return reached_bounds(self.progress.update, self.progress.epoch, self.cfg.trainer.max_updates, self.cfg.trainer.epochs)

    def train(self) -> float | None:
        cfg, acc, p = self.cfg, self.accelerator, self.progress
        if self._finished():
            log.info(
                "run already finished at update %d, epoch %d (trainer.max_updates=%d, trainer.epochs=%d): nothing to do; raise a bound to train further",
                p.update, p.epoch, cfg.trainer.max_updates, cfg.trainer.epochs,
            )
            return self.objective()
        if self._stop_requested():
            self._stopped(f"stopped by {self.stop.signal_name or 'a signal on another process'} during start-up at update {p.update}; nothing was trained since the last checkpoint")
        total = self._total_updates()
        bar = self._progress_bar(total)
        window_start, window_updates, window_frames = time.perf_counter(), 0, 0
        last_loss = float("nan")
        self.model.train()
        while not self._finished():
            batches = self.train_batches.for_epoch(p.epoch)
            steps, loader = self._epoch_loader(batches, p.epoch, start=p.batch_in_epoch)
            for indices, batch in zip(steps, loader):
                if self._finished():
                    break
                batch = {key: value.to(acc.device, non_blocking=True) for key, value in batch.items()}
                with acc.accumulate(self.model):
                    for group in self.optimizer.param_groups:
                        group["lr"] = learning_rate(p.update, cfg.optim, total)
                    loss, _, _ = self.model(batch["mel"], text=batch["text"], lens=batch["mel_lengths"])
                    acc.backward(loss)
                    grad_norm = self._grad_norm() if acc.sync_gradients else None
                    skipped = acc.sync_gradients and self._nonfinite(loss, grad_norm)
                    if skipped and acc.scaler is None:
                        self.optimizer.zero_grad()  # as a grad scaler does: this update does not happen
                    else:
                        self.optimizer.step()  # with fp16 the scaler skips an overflowing step itself
                        self.optimizer.zero_grad()
                p.samples_seen += sum(len(batches[(p.batch_in_epoch + r) % len(batches)]) for r in range(self.world_size))
                p.batch_in_epoch = min(len(batches), p.batch_in_epoch + self.world_size)
                window_frames += int(batch["mel_lengths"].sum()) * self.world_size
                if not acc.sync_gradients:
                    continue
                if skipped:
                    self._skip_update(loss, grad_norm, indices)
                    continue
                self.nonfinite_streak = 0
                p.update += 1
                window_updates += 1
                last_loss = float(loss.detach())
                if self.ema is not None:
                    self.ema.update()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", epoch=p.epoch)
                if p.update % cfg.trainer.log_every == 0:
                    elapsed = max(1e-9, time.perf_counter() - window_start)
                    self.tracker.scalars({
                        "train/loss": last_loss,
                        "train/lr": self.optimizer.param_groups[0]["lr"],
                        "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                        "train/updates_per_s": window_updates / elapsed,
                        "train/frames_per_s": window_frames / elapsed,
                        "train/skipped_updates": self.nonfinite_total,
                    }, p.update)
                    window_start, window_updates, window_frames = time.perf_counter(), 0, 0
                    if time.monotonic() - self._status_written_at >= STATUS_EVERY_SECONDS:
                        self._record_status("running")  # the studio's and the report's progress of a live run
                last_of_run = p.batch_in_epoch >= len(batches) and p.epoch + 1 >= cfg.trainer.epochs
                self._after_update(last_loss, final=self._finished() or last_of_run)
            if p.batch_in_epoch >= len(batches):
                p.epoch += 1
                p.batch_in_epoch = 0
        if bar is not None:
            bar.close()
        if not self._saved_at(p.update):
            self.save_checkpoint(last_loss, val_loss=self._validate_if_due(force=True))
        self._wait_for_save()
        log.info("finished at update %d, epoch %d; best validation loss %s", p.update, p.epoch, _fmt(p.best_val_loss))
        return self.objective()

    def objective(self) -> float | None:
        """The best value of ``cfg.objective`` over the run so far (None before it is measured)."""
        p = self.progress
        return Metrics(best_val_loss=p.best_val_loss, **p.histories()).best(self.cfg.objective)

    # ------------------------------------------------------------------ divergence guard
    def _grad_norm(self) -> torch.Tensor:
        """The total gradient norm (clipped to ``optim.max_grad_norm`` when that is > 0)."""
        limit = self.cfg.optim.max_grad_norm
        return self.accelerator.clip_grad_norm_(self.model.parameters(), limit if limit > 0 else float("inf"))

    def _nonfinite(self, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> bool:
        """Whether any process saw a non-finite loss or gradient norm (all must skip together)."""
        bad = not bool(torch.isfinite(loss.detach()).all()) or (grad_norm is not None and not bool(torch.isfinite(grad_norm)))
        if self.world_size > 1:
            flag = self.accelerator.reduce(torch.tensor([1.0 if bad else 0.0], device=self.accelerator.device), reduction="sum")
            bad = bool(flag.item() > 0)
        return bad

    def _skip_update(self, loss: torch.Tensor, grad_norm: torch.Tensor | None, indices: list[int]) -> None:
        self.nonfinite_streak += 1
        self.nonfinite_total += 1
        clips = ", ".join(Path(self.train_set.clips[i].audio_path).name for i in indices[:8]) + (" …" if len(indices) > 8 else "")
        limit = self.cfg.trainer.max_nonfinite
        log.warning(
            "update %d skipped: loss %s, gradient norm %s (%d in a row, %d in all; stop after %d in a row); clips: %s",
            self.progress.update + 1, _fmt(float(loss.detach())), "n/a" if grad_norm is None else _fmt(float(grad_norm)),
            self.nonfinite_streak, self.nonfinite_total, limit, clips,
        )
        if limit > 0 and self.nonfinite_streak >= limit:
            raise TrainingDiverged(
                f"training diverged: {self.nonfinite_streak} updates in a row had a non-finite loss or gradient norm "
                f"(last at update {self.progress.update + 1}); nothing non-finite was saved. Lower optim.lr, keep "
                f"optim.max_grad_norm > 0, check the clips named above, or raise trainer.max_nonfinite"
            )

    def _after_update(self, train_loss: float, final: bool = False) -> None:
        cfg, p = self.cfg.trainer, self.progress
        val_loss = self._validate_if_due()
        evaluated = self._evaluate_if_due(final)
        if cfg.sample_every > 0 and p.update % cfg.sample_every == 0:
            self._log_sample()
        if self._stop_requested():
            self.save_checkpoint(train_loss, val_loss=val_loss)
            self._wait_for_save()
            self._stopped(f"stopped by {self.stop.signal_name or 'a signal on another process'} at update {p.update}; checkpoint saved, run the same command to resume")
        # An evaluated update is saved too, so ckpt=best by wer/cer/sim can choose those weights.
        due = cfg.save_every > 0 and p.update % cfg.save_every == 0
        if evaluated and final and not due and val_loss is None:
            val_loss = self._validate_if_due(force=True)  # as the end-of-run save this one replaces would
        if due or evaluated:
            self.save_checkpoint(train_loss, val_loss=val_loss)

    def _stopped(self, message: str) -> None:
        """Leave ``preempted.json`` for schedulers: under ``accelerate launch`` the launcher turns
        the ranks' exit status 3 into its own failure status, so the file is what a requeue
        script can rely on. A run that starts again removes it."""
        log.warning(message)
        if self.is_main:
            write_preempted(self.run_dir, signal=self.stop.signal_name, update=self.progress.update, message=message)
            self._record_status("stopped", message=message)
        raise TrainingStopped(message)

    def _stop_requested(self) -> bool:
        flag = torch.tensor([1.0 if self.stop.requested else 0.0], device=self.accelerator.device)
        if self.world_size > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)

    # ------------------------------------------------------------------ validation and samples
    def _validate_if_due(self, force: bool = False) -> float | None:
        every = self.cfg.trainer.val_every
        if not self.val_batches or (not force and (every <= 0 or self.progress.update % every != 0)):
            return None
        loss = self.validation_loss() if self.is_main else None
        self.accelerator.wait_for_everyone()
        if loss is None:
            return None
        p = self.progress
        p.val_history.append([p.update, loss])
        self.tracker.scalars({"val/loss": loss}, p.update)
        log.info("update %d: validation loss %.4f (best %s)", p.update, loss, _fmt(p.best_val_loss))
        return loss

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean flow-matching loss over the validation set with fixed noise, times and masks."""
        with self._averaged_model() as model:
            return self._validation_loss(model)

    def _validation_loss(self, model: torch.nn.Module) -> float:
        was_training = model.training
        model.eval()
        total, weight = 0.0, 0
        with forked_rng():
            for i, indices in enumerate(self.val_batches):
                seed_everything(VALIDATION_SEED + i)
                batch = self._collate(indices, dataset=self.val_set)
                loss, _, _ = model(batch["mel"], text=batch["text"], lens=batch["mel_lengths"])
                total += float(loss) * len(indices)
                weight += len(indices)
        model.train(was_training)
        return total / max(1, weight)

    def _build_evaluation(self) -> None:
        """Load the ASR and speaker models (main process) before the first update: a model that
        cannot be had stops the run here, in one line."""
        if self.cfg.eval.every <= 0 or not self.is_main:
            return

        with forked_rng():  # building the models initialises layers from the global RNG before loading weights
            self.evaluation = TrainingEvaluation(self.cfg, self.val_set.clips, self.vocab, str(self.accelerator.device), self.run_dir,
                                                 metadata_path=self.prepared.metadata_path)

    def _evaluate_if_due(self, final: bool) -> bool:
        """Every ``eval.every`` updates and at the last one (the same answer on every process)."""
        every, p = self.cfg.eval.every, self.progress
        if every <= 0 or not (p.update % every == 0 or final):
            return False
        if self.evaluation is not None and self.ema is not None:
            try:
                with self._averaged_model() as model:  # under LoRA the averaged adapter, swapped in
                    scores, result = self.evaluation.run(model, p.update)
            except Exception as error:  # a failed evaluation must never stop training
                log.warning("could not evaluate at update %d: %s", p.update, error)
            else:
                self._eval_scores = (p.update, scores)
                p.eval_history.append([p.update, scores.wer, scores.cer, scores.sim])
                p.eval_set_history += [[p.update, name, one.wer, one.cer, one.sim] for name, one in scores.sets.items()]
                try:
                    self.evaluation.track(self.tracker, result, p.update)
                except Exception as error:
                    log.warning("could not log the evaluation at update %d to the tracker: %s", p.update, error)
        self.accelerator.wait_for_everyone()
        return True

    def _log_sample(self) -> None:
        if not self.is_main or self.ema is None:
            return
        try:
            with forked_rng(), self._averaged_model() as model:
                item = self.val_set[0]
                wav, sample_rate, figure = render_sample(model, item, self.cfg.model, self.cfg.vocoder, self.vocab_index)
            out = self.run_dir / "samples" / f"update_{self.progress.update:08d}.wav"

            write_audio(out, wav, sample_rate, overwrite=True)
            self.tracker.audio("sample/audio", wav, sample_rate, self.progress.update)
            self.tracker.image("sample/mel", figure, self.progress.update)
        except Exception as error:  # a failed sample must never stop training
            log.warning("could not render an audio sample at update %d: %s", self.progress.update, error)

    def _averaged_model(self):
        """The EMA weights as a model: ema_pytorch's copy, or (LoRA) the live model with the
        averaged adapter swapped in for the duration."""
        if self.lora is not None and self.ema is not None:
            return self.ema.swapped_in()
        return nullcontext(self.ema.ema_model if self.ema is not None else self.accelerator.unwrap_model(self.model))

    # ------------------------------------------------------------------ checkpoints
    @property
    def writer(self) -> CheckpointWriter:
        """The checkpoint writer (its ``blocked_seconds`` is the training time saves cost)."""
        assert self._writer is not None, "setup() creates the writer"
        return self._writer

    def _saved_at(self, update: int) -> bool:
        return getattr(self, "_last_saved_update", None) == update

    def save_checkpoint(self, train_loss: float, val_loss: float | None) -> None:
        """Everyone sends RNG states to the main process, which hands the checkpoint to the writer."""
        rng_states = gather_object([capture_rng_state()]) if self.world_size > 1 else [capture_rng_state()]
        self._last_saved_update = self.progress.update
        if not self.is_main:
            return
        checkpoint = self.checkpoint_record(train_loss, val_loss, rng_states)
        self._wait_for_save()  # the previous save's failure is reported before this one is queued
        try:
            self._writer.submit(checkpoint, before_step=self.optimizer)
        except Exception as error:
            self._on_save_error(error)

    def checkpoint_record(self, train_loss: float, val_loss: float | None, rng_states: list[Any]) -> Checkpoint:
        """The checkpoint of the current state (main process). Its weights are live tensors: the
        writer copies them before the next optimizer step writes to them."""
        p = self.progress
        if val_loss is not None and math.isfinite(val_loss) and (p.best_val_loss is None or val_loss < p.best_val_loss):
            p.best_val_loss = val_loss
        scaler = self.accelerator.scaler
        metrics = Metrics(
            train_loss=train_loss,
            val_loss=val_loss,
            lr=self.optimizer.param_groups[0]["lr"],
            best_val_loss=p.best_val_loss,
            eval=self._eval_scores[1] if self._eval_scores is not None and self._eval_scores[0] == p.update else None,
            **p.histories(),
        )
        metadata = new_metadata(
            run_name=self.cfg.run_name,
            update=p.update,
            epoch=p.epoch,
            samples_seen=p.samples_seen,
            metrics=metrics,
            world_size=self.world_size,
            precision=self.cfg.trainer.mixed_precision,
            model=asdict(self.cfg.model),
            vocab_size=len(self.vocab),
            config=self.ctx.resolved_config,
            hydra=self.ctx.hydra,
            lineage=self.lineage,
            adapter=self.lora.record if self.lora is not None else None,
        )
        if self.lora is not None:
            weights = self.lora.weights(self.accelerator.unwrap_model(self.model), self.ema, self.optimizer, p.update)
        else:
            weights = full_weights(model=self.accelerator.unwrap_model(self.model).state_dict(), ema=self.ema.state_dict(),
                                   optimizer=self.optimizer.state_dict(), update=p.update)
        state = TrainingState(
            p.copy(),
            world_size=self.world_size,
            grad_scaler=scaler.state_dict() if scaler is not None else None,
        )
        return Checkpoint(metadata, weights, state, list(rng_states), list(self.vocab))

    def _wait_for_save(self) -> None:
        if not self.is_main:
            return
        try:
            self._writer.wait()
        except Exception as error:
            self._on_save_error(error)

    def _on_save_error(self, error: Exception) -> None:
        if self.cfg.trainer.on_save_error == "warn":
            log.warning("could not save a checkpoint (training continues, trainer.on_save_error=warn): %s", error)
            return
        raise error

    # ------------------------------------------------------------------ helpers
    def _epoch_loader(self, batches: list[list[int]], epoch: int, start: int):
        """This process's share of the epoch from global batch ``start`` on: every world_size-th batch,
        as (the clip indices of each step, a DataLoader yielding those steps' batches).

        A short tail wraps around to the epoch's first batches so every process takes the same
        number of steps (collectives must match). The loader gets its own generator: a
        DataLoader draws its worker base seed from the global RNG otherwise, which would make a
        resumed run draw different numbers from an uninterrupted one.
        """

        steps = math.ceil(max(0, len(batches) - start) / self.world_size)
        mine = [batches[(start + k * self.world_size + self.rank) % len(batches)] for k in range(steps)]
        workers = self.cfg.data.num_workers
        return mine, DataLoader(
            self.train_set,
            batch_sampler=mine,
            collate_fn=partial(collate, vocab_map=self.vocab_index),
            num_workers=workers,
            persistent_workers=False,
            pin_memory=self.accelerator.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.data.seed + epoch),
        )

    def _collate(self, indices: list[int], dataset=None) -> dict[str, torch.Tensor]:
        dataset = dataset if dataset is not None else self.train_set
        batch = collate([dataset[i] for i in indices], self.vocab_index)
        device = self.accelerator.device
        return {key: value.to(device) for key, value in batch.items()}

    def _progress_bar(self, total: int):
        if not (self.is_main and self.cfg.trainer.progress_bar):
            return None

        return tqdm(total=total, initial=min(self.progress.update, total), desc="train", unit="update", dynamic_ncols=True)


def _check_objective(cfg: TrainConfig) -> None:
    check_metric_sets(cfg.eval, cfg.ckpt.best_metric, cfg.objective, cfg.ckpt.base_set)
    if cfg.objective != "val_loss" and cfg.eval.every <= 0:
        raise UserError(f"objective={cfg.objective} is measured by evaluation, which eval.every=0 switches off; set eval.every=N")
    if cfg.eval.every < 0:
        raise UserError(f"eval.every={cfg.eval.every} must be 0 (off) or a number of updates")


def _check_same_optimizer(metadata: CheckpointMetadata | None, name: str) -> None:
    """AdamW's and AdamW8bit's states are not interchangeable: loading one into the other fails deep
    in the optimizer, or later at its first step."""
    recorded = ((metadata.config if metadata is not None else None) or {}).get("optim", {}).get("name", "adamw")
    if recorded != name:
        raise UserError(f"refusing to resume: the checkpoint's optimizer state is optim={recorded}, the config asks for optim={name}; "
                        f"resume with optim={recorded}, or start a new run_name (ckpt=custom fine-tunes from its weights)")


def _dict_diff(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in sorted(set(old) | set(new)):
            lines += _dict_diff(old.get(key), new.get(key), f"{prefix}.{key}")
        return lines
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def _reference(chosen) -> CheckpointRef:
    meta = chosen.metadata
    return CheckpointRef(chosen.source, str(chosen.path), meta.id if meta else None, meta.update if meta else None)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
