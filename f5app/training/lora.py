"""What ``finetune=lora`` changes in a training run (the Trainer calls these at a few points).

- The model: the base weights (fine-tune source, or on resume the base the checkpoint records,
  resolved and fingerprint-checked) are loaded and frozen; peft adds the adapters and the
  trainable rows of new tokens (f5app/ckpt/lora.py). The optimizer sees only those.
- The EMA policy: an exponential moving average of the trainable tensors only, with exactly
  ema_pytorch's schedule (``trainer.ema_decay``, ``trainer.ema_update_after``, warm-up power 2/3),
  because the frozen base's average is the base itself; copying the base as ema_pytorch would
  doubles the memory LoRA saves. Validation and samples swap the averaged adapter into the live
  model for their duration and back, bit for bit.
- Checkpoints: model.pt holds the live adapter, the averaged one (what inference uses), the
  optimizer and the update (``schema.adapter_weights``); adapter.json and metadata.json record an
  AdapterRecord with the base and the fingerprint of the base tensors the run loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Iterator, Optional

import torch

from f5app.ckpt import lora
from f5app.ckpt.adapt import load_into
from f5app.ckpt.base import base_ref
from f5app.ckpt.fingerprint import weights_fingerprint
from f5app.ckpt.reader import ResolvedCheckpoint, ResumeState, WeightsRead, read_base
from f5app.ckpt.schema import AdapterRecord, adapter_weights
from f5app.config import TrainConfig, TrainerConfig
from f5app.errors import UserError

log = logging.getLogger("f5app.train")


class AdapterEMA:
    """ema_pytorch.EMA's arithmetic over a peft model's trainable tensors, keyed as the adapter state."""

    def __init__(self, model: Any, beta: float, update_after_step: int = 0, power: float = 2 / 3, inv_gamma: float = 1.0, min_value: float = 0.0):
        by_storage = {p.data_ptr(): p for p in model.parameters() if p.requires_grad}
        self.model = model
        self.targets: dict[str, torch.nn.Parameter] = {}
        for key, tensor in lora.adapter_state(model).items():
            if tensor.data_ptr() not in by_storage:
                raise RuntimeError(f"adapter tensor {key} is not a trainable parameter of the model")
            self.targets[key] = by_storage[tensor.data_ptr()]
        self.shadow = {key: p.detach().clone() for key, p in self.targets.items()}
        self.beta, self.update_after_step, self.power, self.inv_gamma, self.min_value = beta, update_after_step, power, inv_gamma, min_value
        self.step = torch.tensor(0)
        self.initted = torch.tensor(False)

    def current_decay(self) -> float:
        epoch = (self.step - self.update_after_step - 1).clamp(min=0.0)
        value = 1 - (1 + epoch / self.inv_gamma) ** -self.power
        if epoch.item() <= 0:
            return 0.0
        return value.clamp(min=self.min_value, max=self.beta).item()

    @torch.no_grad()
    def update(self) -> None:
        step = self.step.item()
        self.step += 1
        if not self.initted.item() or step <= self.update_after_step:
            self._copy_from_model()
            self.initted.fill_(True)
            return
        weight = 1.0 - self.current_decay()
        for key, param in self.targets.items():
            self.shadow[key].lerp_(param.detach(), weight)

    def _copy_from_model(self) -> None:
        for key, param in self.targets.items():
            self.shadow[key].copy_(param.detach())

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[Any]:
        """The live model with the averaged adapter in it; the live values come back exactly afterwards."""
        with torch.no_grad():
            live = {key: param.detach().clone() for key, param in self.targets.items()}
            for key, param in self.targets.items():
                param.copy_(self.shadow[key])
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for key, param in self.targets.items():
                    param.copy_(live[key])

    def to(self, device: Any) -> "AdapterEMA":
        self.shadow = {key: tensor.to(device) for key, tensor in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.shadow, "initted": self.initted, "step": self.step}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        if missing:
            raise UserError(f"the checkpoint's averaged adapter lacks {len(missing)} tensors ({', '.join(missing[:3])})")
        for key in self.shadow:
            self.shadow[key].copy_(state[key])
        self.initted.copy_(state["initted"])
        self.step.copy_(state["step"])


class LoraRun:
    """One LoRA training run: its adapter record and the model, EMA and checkpoint pieces for it."""

    def __init__(self, cfg: TrainConfig, record: Optional[AdapterRecord] = None) -> None:
        self.cfg = cfg
        self.record = record

    @classmethod
    def for_run(cls, cfg: TrainConfig, resolution: Any) -> Optional["LoraRun"]:
        """None for full fine-tuning; refuses a method that does not fit the resolved checkpoint."""
        method, mode, chosen = cfg.finetune.name, resolution.mode, resolution.chosen
        adapter = chosen.metadata.adapter if chosen is not None and chosen.metadata is not None else None
        if method not in ("full", "lora"):
            raise UserError(f"finetune={method} is not a fine-tuning method; use finetune=full or finetune=lora")
        if mode == "resume" and method == "full" and adapter is not None:
            raise UserError(f"refusing to resume {chosen.path}: this run trains LoRA adapters; resume it with finetune=lora, or start a new run_name")
        if method == "full":
            if mode == "finetune" and adapter is not None:
                raise _adapter_source(chosen.path)
            return None
        if mode == "scratch":
            raise UserError("finetune=lora adapts existing weights, but the checkpoint chain chose scratch: "
                            "give the base with ckpt.path=FILE_OR_DIR or ckpt=pretrained")
        if mode == "resume" and adapter is None:
            raise UserError(f"refusing to resume {chosen.path} with finetune=lora: this run's checkpoints are full "
                            "fine-tuning; resume it with finetune=full, or start a new run_name")
        if mode == "finetune" and adapter is not None:
            raise _adapter_source(chosen.path)
        if mode == "resume":
            changed = lora.settings_differences(adapter, cfg.finetune)
            if changed:
                raise UserError("refusing to resume: the LoRA settings differ from the checkpoint's (start a new run_name): " + "; ".join(changed))
            if adapter.dropout != cfg.finetune.dropout:
                log.warning("finetune.dropout changed since the checkpoint (%s -> %s); the new value applies from here", adapter.dropout, cfg.finetune.dropout)
            return cls(cfg, adapter)
        return cls(cfg)

    # --- the model ----------------------------------------------------------------------------

    def start(self, cfm: Any, chosen: ResolvedCheckpoint, weights: WeightsRead, vocab: list[str]) -> Any:
        """A fine-tune's first model: ``cfm`` already holds the base (``weights``, read from ``chosen``),
        whose fingerprint is computed from exactly those tensors."""
        ckpt = self.cfg.ckpt
        if weights.vocab is None:
            raise UserError(f"checkpoint {chosen.path} has no vocab.txt beside it; put the vocabulary it was trained with there")
        base = base_ref(chosen.source, chosen.path, ckpt, weights_fingerprint(weights.state))
        self.record = lora.record_for(self.cfg.finetune, len(weights.vocab), base)
        return self._attach(cfm, vocab)

    def resume(self, cfm: Any, chosen: ResolvedCheckpoint, resumed: ResumeState, vocab: list[str]) -> Any:
        """A resumed run's model: the recorded base (found by resolution, its fingerprint checked
        from the tensors read) plus the saved adapter."""
        assert self.record is not None and chosen.base is not None, "resolution resolves an adapter's base"
        base, _ = read_base(chosen)
        report = load_into(cfm, base.state, old_vocab=vocab[: self.record.base_vocab_size], new_vocab=vocab)
        for note in [*base.notes, *report.notes]:
            log.info("base weights: %s", note)
        model = self._attach(cfm, vocab)
        lora.load_adapter_state(model, resumed.adapter)
        return model

    def _attach(self, cfm: Any, vocab: list[str]) -> Any:
        assert self.record is not None
        settings = self.cfg.finetune
        record = self.record = dataclasses.replace(self.record, dropout=float(settings.dropout))
        model = lora.attach(cfm, record, len(vocab))
        trainable, total = lora.trainable_summary(model)
        rows = len(lora.new_token_rows(record.base_vocab_size or len(vocab), len(vocab)))
        log.info("LoRA rank %d, alpha %g on %d linears%s: %.3f M trainable parameters (%.2f %% of %.2f M); base %s",
                 record.rank, record.alpha, len(lora.targeted_linears(self.cfg.model, record.target_modules)),
                 f" + {rows} new token rows" if rows else "", trainable / 1e6, 100 * trainable / total, total / 1e6, record.base.describe())
        return model

    # --- EMA and checkpoints ------------------------------------------------------------------

    def ema(self, model: Any, trainer: TrainerConfig, resumed: Optional[ResumeState]) -> AdapterEMA:
        ema = AdapterEMA(model, beta=trainer.ema_decay, update_after_step=trainer.ema_update_after)
        if resumed is not None:
            ema.load_state_dict(resumed.ema_adapter)
        return ema

    def weights(self, model: Any, ema: AdapterEMA, optimizer: Any, update: int) -> dict[str, Any]:
        """model.pt of an adapter checkpoint (live tensors; the writer copies them)."""
        return adapter_weights(adapter=lora.adapter_state(model), ema_adapter=ema.state_dict(),
                               optimizer=optimizer.state_dict(), update=update)


def _adapter_source(path: Any) -> UserError:
    return UserError(f"ckpt.path={path} is a LoRA adapter checkpoint, not full weights: merge it first "
                     f"(python -m f5app.ckpt export {path} merged.safetensors --merge) and fine-tune from that")
