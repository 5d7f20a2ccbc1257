"""Many voices, one base: one base model in memory and a LoRA adapter per voice, switched by name.

The main checkpoint is either an adapter checkpoint (its base found by resolution, its fingerprint
checked from the tensors read) or plain weights that voices' adapters were trained on. Each ``voices.NAME.adapter`` is
resolved like any ``ckpt.path`` (validated, its base found and checked), must record the same base
fingerprint and model as the main one, and becomes a named peft adapter on the one model, so an
extra voice costs its adapter's tensors (MiB), not another base (GiB).

The vocabularies of the voices must agree: each is the base's plus tokens appended by its
fine-tune, and they must be prefixes of one another (the embedding is grown once, to the longest).
A voice whose fine-tune added no token simply never uses the rows others added.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from f5app.ckpt import lora
from f5app.ckpt.arch import model_config_diff
from f5app.ckpt.base import short
from f5app.ckpt.fingerprint import weights_fingerprint
from f5app.ckpt.reader import AdapterSection, CheckpointReader, ResolvedCheckpoint, WeightsRead, read_base
from f5app.ckpt.resolve import ResolutionError, resolve
from f5app.config import ModelConfig
from f5app.data.vocab import read_vocab, upstream_vocab_path
from f5app.inference.errors import InferenceInputError
from f5app.inference.text import MAIN_VOICE

log = logging.getLogger(__name__)


@dataclass
class AdapterVoices:
    """The peft model holding every voice's adapter; :meth:`use` makes one voice's active."""

    model: Any  # peft PeftModel around the one base CFM
    by_voice: dict[str, Optional[str]]  # voice -> peft adapter name; None: the base without adapter
    active: Optional[str] = field(default=None)
    _switched: set = field(default_factory=set, repr=False)  # adapters peft itself has activated once
    _layers: list = field(default_factory=list, repr=False)

    def adapter_for(self, voice: str) -> Optional[str]:
        return self.by_voice.get(voice, self.by_voice.get(MAIN_VOICE))

    def use(self, voice: str) -> None:
        """Switch the model to ``voice``'s adapter (voices without one speak with the main voice's)."""
        name = self.adapter_for(voice)
        if name == self.active:
            return
        if name is not None and name not in self._switched:
            # peft's own switch walks every module and sets requires_grad (~10 ms on F5TTS_v1_Small):
            # used once per adapter, then only the active-adapter flags of the layers it touched change.
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(name, inference_mode=True)
            self._switched.add(name)
            self._layers = [m for m in self.model.modules() if hasattr(m, "_active_adapter") and hasattr(m, "_disable_adapters")]
        elif name is None and not self._layers:
            self.model.base_model.disable_adapter_layers()
        else:
            for layer in self._layers:
                layer._disable_adapters = name is None
                if name is not None:
                    layer._active_adapter = [name]
        self.active = name

    def adapter_bytes(self, name: str) -> int:
        """Memory of one adapter's tensors (what an extra voice costs)."""
        return sum(t.numel() * t.element_size() for t in lora.adapter_state(self.model, name).values())


def resolve_voice_adapters(voices: dict[str, Any], ckpt: Any) -> dict[str, "ResolvedCheckpoint"]:
    """Each ``voices.NAME.adapter`` resolved as ``ckpt=custom ckpt.path=...`` (validated, base found)."""
    found: dict[str, ResolvedCheckpoint] = {}
    for name, voice in voices.items():
        if not voice.adapter:
            continue
        path = Path(voice.adapter).expanduser()
        settings = replace(ckpt, name="custom", path=str(path), infer_chain=["custom"], fallback=False)
        try:
            chosen = resolve(settings, purpose="infer", run_dir=path.parent, model=None).chosen
        except ResolutionError as error:
            raise InferenceInputError(f"voices.{name}.adapter={path}: {error}") from None
        if chosen is None or chosen.base is None:
            raise InferenceInputError(f"voices.{name}.adapter={path} is not a LoRA adapter checkpoint (finetune=lora)")
        found[name] = chosen
    return found


@dataclass
class OneBase:
    """What serving several voices on one base reads: the base (fingerprint checked), each voice's
    adapter section (the main voice's first when the main checkpoint is an adapter), the vocabulary."""

    base: WeightsRead
    base_vocab: list[str]
    vocab: list[str]
    adapters: list[tuple[str, AdapterSection, Path]]  # (voice, section, checkpoint) in load order


def read_one_base(main: ResolvedCheckpoint, voices: dict[str, ResolvedCheckpoint], model_config: ModelConfig, use_ema: bool) -> OneBase:
    """Read the one base and every adapter; a voice's adapter must record the base that was read."""
    main_record = main.metadata.adapter if main.base is not None and main.metadata is not None else None
    if main_record is not None:
        base, main_fingerprint = read_base(main)
        weights_set = main_record.base.weights
    else:  # plain weights that the voices' adapters were trained on
        weights_set = "ema" if use_ema else "model"
        base = CheckpointReader.of(main).weights(use_ema=use_ema)
        main_fingerprint = weights_fingerprint(base.state)
    main_vocab = read_vocab(main.vocab_path) if main.vocab_path is not None else read_vocab(upstream_vocab_path())
    base_vocab = main_vocab[: main_record.base_vocab_size] if main_record is not None else main_vocab
    base_name = main_record.base.describe() if main_record is not None else str(main.path)

    vocabs = {MAIN_VOICE: main_vocab}
    adapters: list[tuple[str, AdapterSection, Path]] = []
    if main_record is not None:
        adapters.append((MAIN_VOICE, CheckpointReader.of(main).adapter(use_ema=use_ema), main.path))
    for name, chosen in voices.items():
        record = chosen.metadata.adapter
        diff = model_config_diff(chosen.metadata.model, asdict(model_config))
        if diff:
            raise InferenceInputError(f"voices.{name}.adapter={chosen.path} adapts another architecture than the main model: {'; '.join(diff)}")
        if record.base.weights != weights_set or record.base.fingerprint != main_fingerprint:
            raise InferenceInputError(
                f"voices.{name}.adapter={chosen.path} was trained on {record.base.describe()} (fingerprint "
                f"{short(record.base.fingerprint)}), not on the loaded base {base_name} (fingerprint "
                f"{short(main_fingerprint)}); serve it with its own base")
        vocabs[name] = read_vocab(chosen.vocab_path)
        adapters.append((name, CheckpointReader.of(chosen).adapter(use_ema=use_ema), chosen.path))
    return OneBase(base, base_vocab, _common_vocabulary(vocabs, base_vocab), adapters)


def apply_one_base(read: OneBase, model_config: ModelConfig) -> tuple[Any, list[str], AdapterVoices]:
    """The one model (base + every adapter), the vocabulary it reads, and the voice switch."""
    cfm = lora.base_model(read.base, model_config, read.base_vocab, read.vocab)
    # Every adapter gets trainable token rows over all the rows the voices added (peft cannot mix
    # adapters with and without them): its own trained rows, and the base's rows where it has none,
    # which is exactly what the embedding would give it without a token adapter.
    union_rows = lora.new_token_rows(len(read.base_vocab), len(read.vocab))
    base_rows = cfm.transformer.text_embed.text_embed.weight.detach()[union_rows].clone() if union_rows else None
    model = None
    for name, section, path in read.adapters:
        state = dict(section.state)
        if base_rows is not None:
            own = state.get(lora.TOKEN_KEY)
            rows = base_rows.clone()
            if own is not None:
                rows[: own.shape[0]] = own.to(rows.dtype)
            state[lora.TOKEN_KEY] = rows
        if model is None:
            model = lora.attach(cfm, section.record, len(read.vocab), adapter_name=name, inference=True)
            lora.load_adapter_state(model, state, adapter_name=name)
        else:
            lora.add_adapter(model, name, section.record, len(read.vocab), state)
        log.info("voice %s: adapter %s (rank %d)", name, path, section.record.rank)
    by_voice = {name: name for name, _, _ in read.adapters}
    by_voice.setdefault(MAIN_VOICE, None)
    switch = AdapterVoices(model, by_voice)
    for name in [*by_voice, MAIN_VOICE]:  # each adapter's first activation is peft's slow one: pay it now
        switch.use(name)
    return model, read.vocab, switch


def _common_vocabulary(vocabs: dict[str, list[str]], base_vocab: list[str]) -> list[str]:
    """The longest vocabulary, when every other one is a prefix of it (they grew the same base)."""
    longest_voice = max(vocabs, key=lambda name: len(vocabs[name]))
    longest = vocabs[longest_voice]
    for name, vocab in vocabs.items():
        if vocab[: len(base_vocab)] != base_vocab:
            raise InferenceInputError(f"voice {name}'s vocabulary does not start with the base's; it was not trained on this base")
        differs = next((i for i, (a, b) in enumerate(zip(vocab, longest)) if a != b), None)
        if differs is not None:
            raise InferenceInputError(
                f"voices {name} and {longest_voice} added different tokens to the base vocabulary (token {differs + 1}: "
                f"{vocab[differs]!r} vs {longest[differs]!r}); one model cannot read both: serve them from separate processes")
    return list(longest)
