"""LoRA on upstream's DiT through peft: the adapter's peft config, its state in peft's layout,
applying a base plus adapters, merging, and the adapter's expected shapes (torch-free, for
validation). Reading the base and the adapter from disk is ``f5app/ckpt/reader.py``'s.

An adapter's state (an adapter checkpoint's ``ADAPTER_STATE``; ``adapter_model.safetensors`` of a
peft export) is exactly ``peft.get_peft_model_state_dict`` of the wrapped CFM:

```
base_model.model.transformer.transformer_blocks.<i>.<target>.lora_A.weight    (rank, in_features)
base_model.model.transformer.transformer_blocks.<i>.<target>.lora_B.weight    (out_features, rank)
base_model.model.transformer.text_embed.text_embed.token_adapter.trainable_tokens_delta
                                                                              (new tokens, text_dim)
```

The last entry exists only when fine-tuning grew the vocabulary: peft's trainable tokens hold the
values of the embedding rows of the new tokens (row ``i + 1`` is token ``i``), so those rows train
while every row of the base vocabulary stays frozen bit for bit. The EMA section adds ``initted``
and ``step``, as ema_pytorch's does.

peft costs ~10 s to import (it pulls transformers): it is imported only by the functions that build
a model, never by validation or the CLI's listing paths.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Optional

from f5app.ckpt.adapt import load_into
from f5app.ckpt.arch import DIM_HEAD
from f5app.ckpt.keys import canonicalize
from f5app.ckpt.schema import EMA_COUNTERS, AdapterRecord, BaseRef
from f5app.config import FinetuneConfig, ModelConfig
from f5app.errors import UserError
from f5app.model import build_cfm, text_embedding_rows

if TYPE_CHECKING:
    import torch

    from f5app.ckpt.reader import WeightsRead

log = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
#: The text embedding inside the CFM (``transformer.text_embed.text_embed``), as peft's module suffix.
TOKEN_MODULE = "text_embed.text_embed"
TOKEN_KEY = f"{PEFT_PREFIX}transformer.{TOKEN_MODULE}.token_adapter.trainable_tokens_delta"
DEFAULT_ADAPTER = "default"


class LoraSettingsError(UserError, ValueError):
    """finetune.* settings that cannot be applied to the model."""


# --- what an adapter is, without torch ------------------------------------------------------------


def new_token_rows(base_vocab_size: int, vocab_size: int) -> list[int]:
    """Embedding rows of the tokens a fine-tune appended to the base vocabulary (trainable)."""
    return list(range(text_embedding_rows(base_vocab_size), text_embedding_rows(vocab_size)))


def record_for(settings: FinetuneConfig, base_vocab_size: int, base: BaseRef) -> AdapterRecord:
    return AdapterRecord("lora", int(settings.rank), float(settings.alpha), float(settings.dropout),
                         tuple(settings.target_modules), int(base_vocab_size), base)


def settings_differences(record: AdapterRecord, settings: FinetuneConfig) -> list[str]:
    """What ``settings`` change about an adapter trained with ``record`` (shape or function)."""
    pairs = (("rank", record.rank, settings.rank), ("alpha", record.alpha, float(settings.alpha)),
             ("target_modules", list(record.target_modules), list(settings.target_modules)))
    return [f"finetune.{name}: {old!r} -> {new!r}" for name, old, new in pairs if old != new]


def dit_linears(model: ModelConfig) -> dict[str, tuple[int, int]]:
    """Every ``nn.Linear`` of upstream's CFM(DiT) as module name -> (in_features, out_features).

    Mirrors f5_tts/model/backbones/dit.py and modules.py (tests/test_lora.py checks it against a
    real model); validation predicts an adapter's exact keys and shapes from it.
    """
    a, mels, td = model.arch, model.mel.n_mel_channels, model.arch.text_dim
    inner, ff = a.heads * DIM_HEAD, a.dim * a.ff_mult
    linears = {
        "transformer.time_embed.time_mlp.0": (256, a.dim),
        "transformer.time_embed.time_mlp.2": (a.dim, a.dim),
        "transformer.input_embed.proj": (2 * mels + td, a.dim),
        "transformer.norm_out.linear": (a.dim, 2 * a.dim),
        "transformer.proj_out": (a.dim, mels),
    }
    for j in range(a.conv_layers):
        linears[f"transformer.text_embed.text_blocks.{j}.pwconv1"] = (td, 2 * td)
        linears[f"transformer.text_embed.text_blocks.{j}.pwconv2"] = (2 * td, td)
    for i in range(a.depth):
        block = f"transformer.transformer_blocks.{i}."
        linears.update({
            block + "attn_norm.linear": (a.dim, 6 * a.dim),
            block + "attn.to_q": (a.dim, inner), block + "attn.to_k": (a.dim, inner), block + "attn.to_v": (a.dim, inner),
            block + "attn.to_out.0": (inner, a.dim),
            block + "ff.ff.0.0": (a.dim, ff), block + "ff.ff.2": (ff, a.dim),
        })
    return linears


def targeted_linears(model: ModelConfig, targets: tuple[str, ...] | list[str]) -> dict[str, tuple[int, int]]:
    """The linears ``targets`` name, by peft's rule: the module name is a target or ends with ``.target``."""
    return {name: features for name, features in dit_linears(model).items()
            if any(name == t or name.endswith(f".{t}") for t in targets)}


def expected_adapter_shapes(model: ModelConfig, record: AdapterRecord, vocab_size: Optional[int]) -> dict[str, tuple[int, ...]]:
    """The exact keys and shapes of an adapter state for ``record`` on ``model`` (vocab: the adapter's)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, (fan_in, fan_out) in targeted_linears(model, record.target_modules).items():
        shapes[f"{PEFT_PREFIX}{name}.lora_A.weight"] = (record.rank, fan_in)
        shapes[f"{PEFT_PREFIX}{name}.lora_B.weight"] = (fan_out, record.rank)
    if vocab_size is not None and record.base_vocab_size is not None and vocab_size > record.base_vocab_size:
        shapes[TOKEN_KEY] = (vocab_size - record.base_vocab_size, model.arch.text_dim)
    return shapes


def adapter_problem(shapes: Mapping[str, tuple[int, ...]], model: ModelConfig, record: AdapterRecord,
                    vocab_size: Optional[int]) -> Optional[str]:
    """Why ``shapes`` (one section of an adapter's model.pt) is not the adapter ``record`` describes; None when it is."""
    if record.method != "lora":
        return f"adapter method {record.method!r} is not one this f5app knows (lora)"
    found = {k: tuple(v) for k, v in shapes.items() if k not in EMA_COUNTERS}
    expected = expected_adapter_shapes(model, record, vocab_size)
    if not expected:
        return f"its target_modules {list(record.target_modules)} name no linear layer of the model"
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    if missing or unexpected:
        parts = ([f"{len(missing)} missing ({_few(missing)})"] if missing else []) + (
            [f"{len(unexpected)} unexpected ({_few(unexpected)})"] if unexpected else [])
        return "adapter keys differ from its recorded settings: " + "; ".join(parts)
    wrong = [f"{k}: {found[k]} vs {expected[k]}" for k in sorted(expected) if found[k] != expected[k]]
    if wrong:
        return f"adapter tensors have other shapes than rank {record.rank} on this model: {_few(wrong, 2)}"
    return None


def _few(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (", …" if len(items) > limit else "")


# --- peft ---------------------------------------------------------------------------------------


def peft_config(record: AdapterRecord, vocab_size: int, *, inference: bool = False) -> Any:
    """peft's LoraConfig for ``record``; new token rows train through peft's trainable tokens."""
    from peft import LoraConfig  # deferred: peft loads torch and transformers (seconds); only LoRA runs need it

    rows = new_token_rows(record.base_vocab_size or vocab_size, vocab_size)
    return LoraConfig(
        r=record.rank, lora_alpha=record.alpha, lora_dropout=record.dropout, target_modules=list(record.target_modules),
        trainable_token_indices={TOKEN_MODULE: rows} if rows else None, bias="none", inference_mode=inference,
    )


def attach(cfm: Any, record: AdapterRecord, vocab_size: int, *, adapter_name: str = DEFAULT_ADAPTER, inference: bool = False) -> Any:
    """Wrap ``cfm`` (base weights loaded, embedding grown to ``vocab_size``) in a peft model with one
    fresh adapter: the base is frozen, the adapter and the new token rows are trainable."""
    from peft import get_peft_model  # deferred: peft loads torch and transformers (seconds); only LoRA runs need it

    _check_targets(cfm, record)
    return get_peft_model(cfm, peft_config(record, vocab_size, inference=inference), adapter_name=adapter_name)


def add_adapter(model: Any, name: str, record: AdapterRecord, vocab_size: int, state: Mapping[str, "torch.Tensor"]) -> None:
    """Another named adapter on the same peft model (the same base in memory), its weights loaded."""
    model.add_adapter(name, peft_config(record, vocab_size, inference=True))
    load_adapter_state(model, state, adapter_name=name)


def _check_targets(cfm: Any, record: AdapterRecord) -> None:
    """Refuse targets peft would silently treat differently from validation: only the DiT's linears."""
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    def named(name: str) -> bool:
        return any(name == t or name.endswith(f".{t}") for t in record.target_modules)

    linears = {name for name, module in cfm.named_modules() if isinstance(module, torch.nn.Linear)}
    hit = {name for name in linears if named(name)}
    other = {name for name, _ in cfm.named_modules() if name not in linears and named(name)}
    unmatched = [t for t in record.target_modules if not any(n == t or n.endswith(f".{t}") for n in hit)]
    if other or unmatched:
        what = f"{sorted(other)[:3]} are not linear layers" if other else f"{unmatched} match no linear layer"
        raise LoraSettingsError(
            f"finetune.target_modules={list(record.target_modules)}: {what}; name linears of the DiT such as "
            "to_q, to_k, to_v, to_out.0, ff.ff.0.0, ff.ff.2 (docs/lora.md)")


def adapter_state(model: Any, adapter_name: str = DEFAULT_ADAPTER) -> dict[str, "torch.Tensor"]:
    """The adapter's tensors in peft's saved layout (live views: copy before they change)."""
    from peft import get_peft_model_state_dict  # deferred: peft loads torch and transformers (seconds); only LoRA runs need it

    return get_peft_model_state_dict(model, adapter_name=adapter_name)


def load_adapter_state(model: Any, state: Mapping[str, "torch.Tensor"], adapter_name: str = DEFAULT_ADAPTER) -> None:
    """Set the adapter's tensors; every tensor of the adapter must be given, nothing else."""
    from peft import set_peft_model_state_dict  # deferred: peft loads torch and transformers (seconds); only LoRA runs need it

    weights = {k: v for k, v in state.items() if k not in EMA_COUNTERS}
    expected = set(adapter_state(model, adapter_name))
    if set(weights) != expected:
        missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise UserError(f"adapter weights do not fit the model: missing {_few(missing)}; unexpected {_few(unexpected)}")
    result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    if result.unexpected_keys:
        raise UserError(f"adapter weights do not fit the model: unexpected {_few(list(result.unexpected_keys))}")


def merged(model: Any) -> Any:
    """The plain CFM with the active adapter folded into the base weights (peft's merge_and_unload)."""
    return model.merge_and_unload(safe_merge=True)


def trainable_summary(model: Any) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# --- base and adapter, applied ----------------------------------------------------------------------


def base_model(base: "WeightsRead", model: ModelConfig, base_vocab: list[str], vocab: list[str]) -> Any:
    """A CFM for ``vocab`` holding the base weights ``base`` (read and fingerprint-checked by
    ``reader.read_base``), its text embedding grown from ``base_vocab``."""
    cfm = build_cfm(model, vocab)
    report = load_into(cfm, base.state, old_vocab=base_vocab, new_vocab=vocab)
    for note in [*base.notes, *report.notes]:
        log.info("base weights: %s", note)
    return cfm


def merged_state(cfm: Any, record: AdapterRecord, vocab: list[str], adapter: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Canonical-key weights (``transformer.*``) of ``cfm`` (the base, from :func:`base_model`) with
    ``adapter`` folded in: upstream's layout."""
    model_with_adapter = attach(cfm, record, len(vocab), inference=True)
    load_adapter_state(model_with_adapter, adapter)
    state, _ = canonicalize({k: v.detach().clone() for k, v in merged(model_with_adapter).state_dict().items()})
    return state
