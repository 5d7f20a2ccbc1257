"""What one checkpoint folder holds, in both directions: file names, typed records, one writer and
one tolerant reader for each, and the format version (docs/checkpoints.md describes the same).

```
update_00000300/
  model.pt              WeightsPayload: upstream's trainer layout (model_state_dict, ema_model_state_dict,
                        optimizer_state_dict, update), so upstream tools load it unchanged
  training_state.pt     TrainingState: Progress counters, world size, grad scaler
  rng_state_<rank>.pt   one per process (training/rng.py captures them)
  vocab.txt             the vocabulary the text embedding was built with
  metadata.json         CheckpointMetadata, written last: a folder without it is never a candidate
```

An adapter checkpoint (``finetune=lora``) has the same files plus ``adapter.json``; its model.pt
holds only the trainable state (ADAPTER_STATE, EMA_ADAPTER_STATE, in peft's layout:
f5app/ckpt/lora.py) and its :class:`AdapterRecord` (in adapter.json, covered by the checksums, and
repeated in metadata.json) names the exact base weights (:class:`BaseRef`).

The trainer builds a :class:`Checkpoint` (weights through :func:`full_weights` or
:func:`adapter_weights`) and hands it to ``CheckpointStore.save``; everything that reads a
checkpoint goes through :func:`read_metadata` / :func:`parse_metadata` and ``f5app/ckpt/reader.py``
(the one reader of the files' contents). The reader accepts every layout this project has written (schema 1 kept
lineage as ``parent`` and, in some tools, Hydra overrides as ``{"task": [...]}``). No torch import
at module level: the CLI's ``list`` reads metadata without it.
"""

from __future__ import annotations

import json
import math
import platform
import secrets
import subprocess
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Literal, Optional

from f5app.ckpt.layout import METADATA_FILENAME, checkpoint_name, utc_now
from f5app.data.vocab import vocab_text
from f5app.errors import MetadataError

from f5app.errors import first_line

FORMAT = "f5app-checkpoint"
#: 1: first release (lineage ``parent``). 2: lineage ``resumed_from`` / ``finetuned_from``, typed
#: eval scores, non-finite numbers written as null.
SCHEMA_VERSION = 2

MODEL_FILENAME = "model.pt"
TRAINING_STATE_FILENAME = "training_state.pt"
VOCAB_FILENAME = "vocab.txt"
RNG_STATE_PREFIX = "rng_state_"
#: An adapter checkpoint's AdapterRecord as a file of its own, so the checkpoint's checksums cover
#: it (metadata.json holds the same record for tools that read no other file).
ADAPTER_FILENAME = "adapter.json"

#: A metadata.json is a config tree and a few counters (a few KiB); anything this large is not ours
#: and is refused before it is parsed (a 39 MB file took ~1 GiB to parse).
MAX_METADATA_BYTES = 8 * 1024 * 1024

VERSIONED_PACKAGES = ("torch", "f5-tts", "accelerate", "hydra-core", "omegaconf", "f5app")


LineageMode = Literal["scratch", "finetune", "resume"]
METRIC_NAMES = ("val_loss", "wer", "cer", "sim")
#: How each metric ranks checkpoints: lower is better except speaker similarity.
METRIC_DIRECTIONS = {"val_loss": "min", "wer": "min", "cer": "min", "sim": "max"}
#: Evaluation metrics a named prompt set (eval.sets) has: ``wer@NAME``, ``cer@NAME``, ``sim@NAME``.
SET_METRICS = ("wer", "cer", "sim")


def parse_metric(name: str) -> tuple[str, Optional[str]]:
    """``"wer"`` -> ``("wer", None)``; ``"wer@en"`` -> ``("wer", "en")``; ValueError for anything else."""
    metric, at, set_name = str(name).partition("@")
    if metric in METRIC_DIRECTIONS and not at:
        return metric, None
    if at and metric in SET_METRICS and set_name:
        return metric, set_name
    raise ValueError(f"unknown metric {name!r}; use one of {', '.join(METRIC_NAMES)}, or wer@SET, cer@SET, sim@SET for a set of eval.sets")


def metric_direction(name: str) -> str:
    """``"min"`` or ``"max"``: how ``name`` (a metric, or METRIC@SET) ranks checkpoints."""
    return METRIC_DIRECTIONS[parse_metric(name)[0]]


def rng_state_filename(rank: int) -> str:
    return f"{RNG_STATE_PREFIX}{rank}.pt"


def is_plain_file_name(name: str) -> bool:
    """A name that can only mean a direct child of the checkpoint folder."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


# --- small records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: Optional[str] = None
    xxh3_128: Optional[str] = None  # the fast checksum verify-on-load compares (files.DIGESTS); older checkpoints lack it

    def digests(self) -> dict[str, Optional[str]]:
        """The digests this record holds, by algorithm: sha256 always (None on a record that lacks
        it), xxh3_128 when recorded."""
        return {"sha256": self.sha256, **({"xxh3_128": self.xxh3_128} if self.xxh3_128 is not None else {})}

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, **self.digests()}

    def load_check(self) -> Optional[tuple[str, str]]:
        """(algorithm, hex digest) verify-on-load compares: the fast checksum when recorded, else sha256."""
        if self.xxh3_128 is not None:
            return "xxh3_128", self.xxh3_128
        return ("sha256", self.sha256) if self.sha256 is not None else None


@dataclass(frozen=True)
class CheckpointRef:
    """Where weights came from: one of our checkpoints (id, update) or any file (source, path)."""

    source: Optional[str] = None  # resume | best | last | latest | custom | pretrained
    path: Optional[str] = None
    id: Optional[str] = None
    update: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Any) -> Optional["CheckpointRef"]:
        if not isinstance(data, dict):
            return None
        return cls(_str(data.get("source")), _str(data.get("path")), _str(data.get("id")), _int(data.get("update")))


@dataclass(frozen=True)
class Lineage:
    mode: LineageMode = "scratch"
    resumed_from: Optional[CheckpointRef] = None  # the checkpoint this run continued from
    finetuned_from: Optional[CheckpointRef] = None  # the weights the run's first update started from

    @classmethod
    def from_dict(cls, data: Any) -> "Lineage":
        if not isinstance(data, dict):
            return cls()
        mode = data.get("mode") if data.get("mode") in ("scratch", "finetune", "resume") else "scratch"
        resumed = CheckpointRef.from_dict(data.get("resumed_from"))
        finetuned = CheckpointRef.from_dict(data.get("finetuned_from"))
        parent = CheckpointRef.from_dict(data.get("parent"))  # schema 1
        if parent is not None:
            if mode == "resume" and resumed is None:
                resumed = parent
            elif mode == "finetune" and finetuned is None:
                finetuned = parent
        return cls(mode, resumed, finetuned)

    def continued(self, parent: CheckpointRef) -> "Lineage":
        """The lineage of a run resumed from ``parent`` (whose own lineage is ``self``)."""
        return Lineage("resume", parent, self.finetuned_from)


@dataclass(frozen=True)
class BaseRef:
    """The exact weights an adapter was trained on: where they came from and their fingerprint
    (f5app/ckpt/fingerprint.py), so an adapter can never be loaded onto other weights."""

    source: Optional[str] = None  # pretrained | custom
    path: Optional[str] = None  # the file or checkpoint folder loaded at training time
    repo_id: Optional[str] = None  # pretrained: the Hub file
    revision: Optional[str] = None  # the Hub commit the cache held (exact), else the revision asked for
    filename: Optional[str] = None
    vocab_filename: Optional[str] = None
    weights: str = "ema"  # which set of the file was loaded: ema | model
    fingerprint: Optional[str] = None

    @classmethod
    def from_dict(cls, data: Any) -> Optional["BaseRef"]:
        if not isinstance(data, dict):
            return None
        return cls(
            _str(data.get("source")), _str(data.get("path")), _str(data.get("repo_id")), _str(data.get("revision")),
            _str(data.get("filename")), _str(data.get("vocab_filename")), _str(data.get("weights")) or "ema",
            _str(data.get("fingerprint")),
        )

    def describe(self) -> str:
        """One line naming the base: the Hub file (and commit) or the path."""
        if self.source == "pretrained" and self.repo_id and self.filename:
            return f"{self.repo_id}/{self.filename}" + (f"@{self.revision[:12]}" if self.revision else "")
        return self.path or "an unrecorded base"


@dataclass(frozen=True)
class AdapterRecord:
    """What an adapter checkpoint adapts and how (``finetune=lora``; docs/lora.md)."""

    method: str = "lora"
    rank: int = 0
    alpha: float = 0.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()
    #: tokens of the base's vocabulary; the embedding rows after them are the trainable new tokens
    base_vocab_size: Optional[int] = None
    base: BaseRef = field(default_factory=BaseRef)

    @classmethod
    def from_dict(cls, data: Any) -> Optional["AdapterRecord"]:
        if not isinstance(data, dict):
            return None
        targets = data.get("target_modules")
        return cls(
            _str(data.get("method")) or "lora",
            _int(data.get("rank")) or 0,
            _float(data.get("alpha")) or 0.0,
            _float(data.get("dropout")) or 0.0,
            tuple(str(t) for t in targets) if isinstance(targets, (list, tuple)) else (),
            _int(data.get("base_vocab_size")),
            BaseRef.from_dict(data.get("base")) or BaseRef(),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_modules": list(self.target_modules)}


@dataclass(frozen=True)
class HydraRecord:
    """What Hydra knew about the job: command-line overrides, group choices, sweep position."""

    overrides: tuple[str, ...] = ()
    choices: dict[str, str] = field(default_factory=dict)
    mode: Optional[str] = None  # RUN | MULTIRUN
    output_dir: Optional[str] = None
    sweep: Optional[dict[str, Any]] = None  # dir, subdir, job_num, override_dirname

    @classmethod
    def from_dict(cls, data: Any) -> "HydraRecord":
        if not isinstance(data, dict):
            return cls()
        overrides = data.get("overrides")
        if isinstance(overrides, dict):  # the shape of Hydra's own hydra.overrides node
            overrides = overrides.get("task")
        choices = data.get("choices") if isinstance(data.get("choices"), dict) else {}
        sweep = data.get("sweep") if isinstance(data.get("sweep"), dict) else None
        return cls(
            tuple(str(o) for o in overrides) if isinstance(overrides, (list, tuple)) else (),
            {str(k): str(v) for k, v in choices.items()},
            _str(data.get("mode")),
            _str(data.get("output_dir")),
            sweep,
        )

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"overrides": list(self.overrides), "choices": dict(self.choices), "mode": self.mode, "output_dir": self.output_dir}
        if self.sweep is not None:
            record["sweep"] = dict(self.sweep)
        return record


@dataclass(frozen=True)
class EvalScores:
    """Measured speech quality of a checkpoint's EMA weights on the held-out prompts."""

    wer: Optional[float] = None
    cer: Optional[float] = None
    sim: Optional[float] = None
    num_prompts: int = 0
    models: dict[str, Any] = field(default_factory=dict)  # which ASR / speaker model, with versions
    #: each named prompt set's own scores (eval.sets), by set name; the numbers above are then over
    #: every set's prompts together. Empty without eval.sets (and in checkpoints older than sets).
    sets: dict[str, "EvalScores"] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any) -> Optional["EvalScores"]:
        if not isinstance(data, dict):
            return None
        models = data.get("models") if isinstance(data.get("models"), dict) else {}
        raw_sets = data.get("sets") if isinstance(data.get("sets"), dict) else {}
        sets = {str(name): scores for name, value in raw_sets.items() if (scores := cls.from_dict(value)) is not None}
        return cls(_float(data.get("wer")), _float(data.get("cer")), _float(data.get("sim")), _int(data.get("num_prompts")) or 0, models, sets)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "wer": _json_number(self.wer), "cer": _json_number(self.cer), "sim": _json_number(self.sim),
            "num_prompts": self.num_prompts, "models": dict(self.models),
        }
        if self.sets:
            record["sets"] = {name: scores.to_dict() for name, scores in self.sets.items()}
        return record

    def value(self, metric: str, set_name: Optional[str] = None) -> Optional[float]:
        """wer, cer or sim, of one set when ``set_name`` is given (None when that set was not scored)."""
        scores = self if set_name is None else self.sets.get(set_name)
        return getattr(scores, metric) if scores is not None else None


@dataclass(frozen=True)
class Metrics:
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    lr: Optional[float] = None
    best_val_loss: Optional[float] = None
    val_history: tuple[tuple[int, float], ...] = ()  # (update, validation loss), oldest first
    eval: Optional[EvalScores] = None
    #: names of the numbers above that were NaN or infinite when saved (JSON then holds null)
    nonfinite: tuple[str, ...] = ()
    #: every evaluation of the run so far, oldest first: (update, wer, cer, sim)
    eval_history: tuple[tuple[int, Optional[float], Optional[float], Optional[float]], ...] = ()
    #: every evaluation of each named prompt set so far, oldest first: (update, set, wer, cer, sim)
    eval_set_history: tuple[tuple[int, str, Optional[float], Optional[float], Optional[float]], ...] = ()

    def best(self, name: str) -> Optional[float]:
        """The best value of a ranking metric over the run's history (min, or max for sim); None if never measured."""
        metric, set_name = parse_metric(name)
        if metric == "val_loss":
            values = [loss for _, loss in self.val_history if _finite(loss)] + ([self.best_val_loss] if _finite(self.best_val_loss) else [])
        elif set_name is None:
            column = {"wer": 1, "cer": 2, "sim": 3}[metric]
            values = [point[column] for point in self.eval_history if _finite(point[column])]
        else:
            column = {"wer": 2, "cer": 3, "sim": 4}[metric]
            values = [point[column] for point in self.eval_set_history if point[1] == set_name and _finite(point[column])]
        if not values:
            return None
        return max(values) if METRIC_DIRECTIONS[metric] == "max" else min(values)

    def first_set_scores(self, set_name: str) -> Optional[tuple[int, Optional[float], Optional[float], Optional[float]]]:
        """(update, wer, cer, sim) of the run's first evaluation of ``set_name``; None if never scored."""
        return next(((update, *scores) for update, name, *scores in self.eval_set_history if name == set_name), None)  # type: ignore[return-value]

    def not_finite(self) -> tuple[str, ...]:
        """Every metric that is, or was when saved, NaN or infinite."""
        now = [name for name in ("train_loss", "val_loss", "lr", "best_val_loss") if _is_number(getattr(self, name)) and not _finite(getattr(self, name))]
        if self.eval is not None:
            now += [name for name in ("wer", "cer", "sim") if _is_number(getattr(self.eval, name)) and not _finite(getattr(self.eval, name))]
        return tuple(sorted(set(self.nonfinite) | set(now)))

    def value(self, name: str) -> Optional[float]:
        """A ranking metric (:data:`METRIC_NAMES`); None when not measured or not finite."""
        metric, set_name = parse_metric(name)
        raw = self.val_loss if metric == "val_loss" else self.eval.value(metric, set_name) if self.eval else None
        return raw if _finite(raw) else None

    @classmethod
    def from_dict(cls, data: Any, top_level_history: Any = None) -> "Metrics":
        data = data if isinstance(data, dict) else {}
        history = data.get("val_history", top_level_history)
        points = tuple(
            (int(point[0]), float(point[1]))
            for point in (history if isinstance(history, (list, tuple)) else ())
            if isinstance(point, (list, tuple)) and len(point) == 2 and all(_is_number(x) for x in point)
        )
        return cls(
            _float(data.get("train_loss")), _float(data.get("val_loss")), _float(data.get("lr")),
            _float(data.get("best_val_loss")), points, EvalScores.from_dict(data.get("eval")),
            tuple(str(n) for n in data.get("nonfinite") or () if isinstance(n, str)) if isinstance(data.get("nonfinite"), list) else (),
            eval_history_from(data.get("eval_history")),
            eval_set_history_from(data.get("eval_set_history")),
        )

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "train_loss": _json_number(self.train_loss),
            "val_loss": _json_number(self.val_loss),
            "lr": _json_number(self.lr),
            "best_val_loss": _json_number(self.best_val_loss),
            "val_history": [[update, _json_number(loss)] for update, loss in self.val_history],
            "nonfinite": list(self.not_finite()),
            "eval_history": [[update, *(_json_number(v) for v in scores)] for update, *scores in self.eval_history],
        }
        if self.eval_set_history:
            record["eval_set_history"] = [[update, name, *(_json_number(v) for v in scores)] for update, name, *scores in self.eval_set_history]
        if self.eval is not None:
            record["eval"] = self.eval.to_dict()
        return record


def eval_set_history_from(data: Any) -> tuple[tuple[int, str, Optional[float], Optional[float], Optional[float]], ...]:
    """``[[update, set, wer, cer, sim], ...]`` as written (values may be null); malformed points are dropped."""
    points = []
    for point in data if isinstance(data, (list, tuple)) else ():
        if isinstance(point, (list, tuple)) and len(point) == 5 and _is_number(point[0]) and isinstance(point[1], str):
            points.append((int(point[0]), point[1], *(_float(v) for v in point[2:])))
    return tuple(points)


def eval_history_from(data: Any) -> tuple[tuple[int, Optional[float], Optional[float], Optional[float]], ...]:
    """``[[update, wer, cer, sim], ...]`` as written (values may be null); malformed points are dropped."""
    points = []
    for point in data if isinstance(data, (list, tuple)) else ():
        if isinstance(point, (list, tuple)) and len(point) == 4 and _is_number(point[0]):
            points.append((int(point[0]), *(_float(v) for v in point[1:])))
    return tuple(points)


# --- metadata.json ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointMetadata:
    """``metadata.json``: what made a checkpoint. ``files`` is filled in by the store when it saves."""

    id: str
    name: str
    run_name: str
    update: int
    epoch: int = 0
    samples_seen: int = 0
    created_at: str = ""
    metrics: Metrics = field(default_factory=Metrics)
    world_size: int = 1
    precision: str = "no"
    model: dict[str, Any] = field(default_factory=dict)  # the ModelConfig tree
    vocab_size: Optional[int] = None
    config: dict[str, Any] = field(default_factory=dict)  # the fully resolved Hydra config tree
    hydra: HydraRecord = field(default_factory=HydraRecord)
    lineage: Lineage = field(default_factory=Lineage)
    versions: dict[str, Optional[str]] = field(default_factory=dict)
    git_commit: Optional[str] = None
    files: dict[str, FileRecord] = field(default_factory=dict)
    weights_fingerprint: Optional[str] = None
    adapter: Optional[AdapterRecord] = None  # set for adapter checkpoints (finetune=lora) only
    schema_version: int = SCHEMA_VERSION
    #: keys a newer f5app wrote that this one does not know; kept so nothing is lost on rewrite
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record = {
            **self.extra,
            "schema_version": self.schema_version,
            "format": FORMAT,
            "id": self.id,
            "name": self.name,
            "run_name": self.run_name,
            "created_at": self.created_at,
            "update": self.update,
            "epoch": self.epoch,
            "samples_seen": self.samples_seen,
            "metrics": self.metrics.to_dict(),
            "world_size": self.world_size,
            "precision": self.precision,
            "model": self.model,
            "vocab_size": self.vocab_size,
            "config": self.config,
            "hydra": self.hydra.to_dict(),
            "lineage": _lineage_dict(self.lineage),
            "versions": dict(self.versions),
            "git_commit": self.git_commit,
            "files": {name: record.to_dict() for name, record in self.files.items()},
            "weights_fingerprint": self.weights_fingerprint,
        }
        if self.adapter is not None:
            record["adapter"] = self.adapter.to_dict()
        return _without_non_finite(record)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> "CheckpointMetadata":
        """Read any layout this project has written; :class:`MetadataError` when it is not ours."""
        if not isinstance(data, dict):
            raise MetadataError(f"{METADATA_FILENAME} holds {type(data).__name__}, not an object")
        if data.get("format") != FORMAT:
            raise MetadataError(f"{METADATA_FILENAME} is not an f5app checkpoint's (format {data.get('format')!r})")
        update = _int(data.get("update"))
        if update is None or update < 0:
            raise MetadataError(f"{METADATA_FILENAME} records no valid update (got {data.get('update')!r})")
        known = {f.name for f in fields(cls)} | {"format", "val_history"}
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        config = data.get("config") if isinstance(data.get("config"), dict) else {}
        versions = data.get("versions") if isinstance(data.get("versions"), dict) else {}
        return cls(
            id=_str(data.get("id")) or "",
            name=_str(data.get("name")) or "",
            run_name=_str(data.get("run_name")) or "",
            update=update,
            epoch=_int(data.get("epoch")) or 0,
            samples_seen=_int(data.get("samples_seen")) or 0,
            created_at=_str(data.get("created_at")) or "",
            metrics=Metrics.from_dict(data.get("metrics"), data.get("val_history")),
            world_size=_int(data.get("world_size")) or 1,
            precision=_str(data.get("precision")) or "no",
            model=model,
            vocab_size=_int(data.get("vocab_size")),
            config=config,
            hydra=HydraRecord.from_dict(data.get("hydra")),
            lineage=Lineage.from_dict(data.get("lineage")),
            versions={str(k): _str(v) for k, v in versions.items()},
            git_commit=_str(data.get("git_commit")),
            files=_files_from(data.get("files")),
            weights_fingerprint=_str(data.get("weights_fingerprint")),
            adapter=AdapterRecord.from_dict(data.get("adapter")),
            schema_version=_int(data.get("schema_version")) or 1,
            extra={k: v for k, v in data.items() if k not in known},
        )

    # What readers ask of a checkpoint, so no caller digs through the config tree.
    def config_section(self, name: str) -> dict[str, Any]:
        section = self.config.get(name)
        return section if isinstance(section, dict) else {}


def new_metadata(
    *,
    run_name: str,
    update: int,
    epoch: int,
    samples_seen: int,
    metrics: Metrics,
    world_size: int,
    precision: str,
    model: dict[str, Any],
    vocab_size: int,
    config: dict[str, Any],
    hydra: HydraRecord,
    lineage: Lineage,
    adapter: Optional[AdapterRecord] = None,
) -> CheckpointMetadata:
    """The metadata of a checkpoint about to be saved: the writer's one constructor."""
    name = checkpoint_name(update)
    return CheckpointMetadata(
        id=f"{run_name}/{name}/{secrets.token_hex(4)}",
        name=name,
        run_name=run_name,
        update=int(update),
        epoch=int(epoch),
        samples_seen=int(samples_seen),
        created_at=utc_now(),
        metrics=metrics,
        world_size=int(world_size),
        precision=precision,
        model=model,
        vocab_size=int(vocab_size),
        config=config,
        hydra=hydra,
        lineage=lineage,
        versions=library_versions(),
        git_commit=project_git_commit(),
        adapter=adapter,
    )


def parse_metadata(text: bytes | str) -> CheckpointMetadata:
    """The record in a metadata.json's bytes; :class:`MetadataError` with the reason otherwise."""
    if len(text) > MAX_METADATA_BYTES:
        raise MetadataError(f"{METADATA_FILENAME} is {len(text)} bytes, over the {MAX_METADATA_BYTES} a checkpoint record can be")
    try:
        data = json.loads(text)
    except UnicodeDecodeError as error:
        raise MetadataError(f"damaged {METADATA_FILENAME}: not UTF-8 (byte {error.start})") from None
    except (ValueError, RecursionError) as error:
        raise MetadataError(f"damaged {METADATA_FILENAME}: not valid JSON ({first_line(error, 80)})") from None
    return CheckpointMetadata.from_dict(data)


def read_metadata_file(file: Path) -> CheckpointMetadata:
    """Parse ``file`` (bounded in size before reading); OSError when it cannot be read."""
    file = Path(file)
    size = file.stat().st_size
    if size > MAX_METADATA_BYTES:
        raise MetadataError(f"{METADATA_FILENAME} is {size} bytes, over the {MAX_METADATA_BYTES} a checkpoint record can be")
    return parse_metadata(file.read_bytes())


def read_metadata(folder: Path) -> Optional[CheckpointMetadata]:
    """The metadata of a checkpoint folder (or a metadata.json path); None when absent or unreadable."""
    folder = Path(folder)
    file = folder if folder.suffix == ".json" else folder / METADATA_FILENAME
    try:
        return read_metadata_file(file)
    except (OSError, MetadataError):
        return None


@dataclass(frozen=True)
class ExportRecord:
    """``OUT.metadata.json`` beside exported weights: the source checkpoint's record and the export's facts."""

    source: Optional[CheckpointMetadata]
    export: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Any) -> Optional["ExportRecord"]:
        if not isinstance(data, dict):
            return None
        source = None
        for candidate in (data.get("source_metadata"), data):
            try:
                source = CheckpointMetadata.from_dict(candidate)
                break
            except MetadataError:
                continue
        export = data.get("export") if isinstance(data.get("export"), dict) else {}
        return cls(source, export)

    def to_json(self) -> str:
        """The sidecar's text: the source's record as written (``source_metadata``) and the export's facts."""
        record = {"source_metadata": None if self.source is None else self.source.to_dict(), "export": self.export}
        return json.dumps(_without_non_finite(record), indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"


def export_sidecar_path(weights_file: Path) -> Path:
    weights_file = Path(weights_file)
    return weights_file.with_name(weights_file.name + ".metadata.json")


def read_export_record(weights_file: Path) -> Optional[ExportRecord]:
    """The record an export left beside a weights file, or None."""
    file = export_sidecar_path(weights_file)
    try:
        if file.stat().st_size > MAX_METADATA_BYTES:
            return None
        return ExportRecord.from_dict(json.loads(file.read_bytes()))
    except (OSError, ValueError, RecursionError):
        return None


# --- training_state.pt -----------------------------------------------------------------------


@dataclass
class Progress:
    """Counters that locate a run; saved in training_state.pt."""

    update: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches consumed in this epoch (independent of world size)
    samples_seen: int = 0
    best_val_loss: Optional[float] = None
    val_history: list[list[float]] = field(default_factory=list)
    eval_history: list[list[Optional[float]]] = field(default_factory=list)  # [update, wer, cer, sim]
    eval_set_history: list[list[Any]] = field(default_factory=list)  # [update, set, wer, cer, sim] (eval.sets)

    def copy(self) -> "Progress":
        """A copy whose histories are lists of their own: the trainer appends to the live one."""
        return replace(self, val_history=[list(point) for point in self.val_history],
                       eval_history=[list(point) for point in self.eval_history],
                       eval_set_history=[list(point) for point in self.eval_set_history])

    def histories(self) -> dict[str, tuple]:
        """The histories as :class:`Metrics` holds them (tuples), by field name."""
        return {"val_history": tuple((int(update), float(loss)) for update, loss in self.val_history),
                "eval_history": tuple(tuple(point) for point in self.eval_history),
                "eval_set_history": tuple(tuple(point) for point in self.eval_set_history)}


@dataclass
class TrainingState:
    progress: Progress
    world_size: int
    grad_scaler: Optional[dict[str, Any]] = None

    def to_payload(self) -> dict[str, Any]:
        return {**asdict(self.progress), "world_size": self.world_size, "grad_scaler": self.grad_scaler}

    @classmethod
    def from_payload(cls, payload: Any) -> "TrainingState":
        if not isinstance(payload, dict):
            raise MetadataError(f"{TRAINING_STATE_FILENAME} holds {type(payload).__name__}, not the training-state dict")
        try:
            progress = Progress(
                update=int(payload["update"]),
                epoch=int(payload["epoch"]),
                batch_in_epoch=int(payload["batch_in_epoch"]),
                samples_seen=int(payload["samples_seen"]),
                best_val_loss=_float(payload.get("best_val_loss")),
                val_history=[[int(u), float(v)] for u, v in payload.get("val_history") or []],
                eval_history=[list(point) for point in eval_history_from(payload.get("eval_history"))],
                eval_set_history=[list(point) for point in eval_set_history_from(payload.get("eval_set_history"))],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise MetadataError(f"{TRAINING_STATE_FILENAME} lacks a usable counter ({type(error).__name__}: {error})") from None
        scaler = payload.get("grad_scaler")
        return cls(progress, _int(payload.get("world_size")) or 1, scaler if isinstance(scaler, dict) else None)


# --- a whole checkpoint ------------------------------------------------------------------------


#: Keys of model.pt (upstream's trainer layout).
MODEL_STATE, EMA_STATE, OPTIMIZER_STATE, UPDATE_KEY = "model_state_dict", "ema_model_state_dict", "optimizer_state_dict", "update"
#: Keys of an adapter checkpoint's model.pt in place of MODEL_STATE / EMA_STATE (the trainable state only).
ADAPTER_STATE, EMA_ADAPTER_STATE = "adapter_state_dict", "ema_adapter_state_dict"
WEIGHT_SECTIONS = (MODEL_STATE, EMA_STATE, ADAPTER_STATE, EMA_ADAPTER_STATE)
#: ema_pytorch's bookkeeping entries of an EMA section (kept in an adapter checkpoint's EMA section too).
EMA_COUNTERS = ("initted", "step")


@dataclass
class Checkpoint:
    """Everything one save writes; the trainer builds it, the store writes it.

    ``weights`` holds live tensors when built by the trainer (the saver copies them before the next
    optimizer step changes them).
    """

    metadata: CheckpointMetadata
    weights: dict[str, Any]  # model.pt: MODEL_STATE, EMA_STATE (or the ADAPTER_ pair), OPTIMIZER_STATE, UPDATE_KEY
    training_state: TrainingState
    rng_states: list[Any]  # one per process, rank order
    vocab: list[str]

    def payloads(self) -> dict[str, Any]:
        """File name -> what is written there (objects are torch.saved, text is written as UTF-8)."""
        files: dict[str, Any] = {
            MODEL_FILENAME: self.weights,
            TRAINING_STATE_FILENAME: self.training_state.to_payload(),
            VOCAB_FILENAME: vocab_text(self.vocab),
        }
        for rank, state in enumerate(self.rng_states):
            files[rng_state_filename(rank)] = state
        if self.metadata.adapter is not None:
            files[ADAPTER_FILENAME] = json.dumps(self.metadata.adapter.to_dict(), indent=2, sort_keys=True) + "\n"
        return files


class DamagedCheckpoint(ValueError):
    """Reading a checkpoint found damage the fast checks cannot see (changed bytes, NaN weights)."""


def full_weights(*, model: dict[str, Any], ema: dict[str, Any], optimizer: dict[str, Any], update: int) -> dict[str, Any]:
    """model.pt of a full fine-tune (upstream's trainer layout): the writer's constructor."""
    return {MODEL_STATE: model, EMA_STATE: ema, OPTIMIZER_STATE: optimizer, UPDATE_KEY: update}


def adapter_weights(*, adapter: dict[str, Any], ema_adapter: dict[str, Any], optimizer: dict[str, Any], update: int) -> dict[str, Any]:
    """model.pt of an adapter checkpoint (finetune=lora): the trainable state only."""
    return {ADAPTER_STATE: adapter, EMA_ADAPTER_STATE: ema_adapter, OPTIMIZER_STATE: optimizer, UPDATE_KEY: update}


def adapter_record_problem(folder: Path, metadata: CheckpointMetadata) -> Optional[str]:
    """Why the adapter record of an adapter checkpoint folder cannot be trusted; None when
    ``adapter.json`` is recorded in metadata.json's files and says what metadata.json says.
    (Its bytes are then covered by the recorded checksums, which the loaders and
    ``validate --full`` compare.)"""
    assert metadata.adapter is not None
    if ADAPTER_FILENAME not in metadata.files:
        return (f"its adapter record is not covered by the checkpoint's checksums (no {ADAPTER_FILENAME}: "
                "written by an older f5app)")
    try:
        recorded = AdapterRecord.from_dict(json.loads((Path(folder) / ADAPTER_FILENAME).read_bytes()))
    except (OSError, ValueError, RecursionError) as error:
        return f"{ADAPTER_FILENAME} cannot be read ({type(error).__name__})"
    if recorded != metadata.adapter:
        return f"the adapter record in {METADATA_FILENAME} differs from {ADAPTER_FILENAME} (edited after it was saved)"
    return None


def require_finite(weights: dict[str, Any]) -> None:
    """:class:`DamagedCheckpoint` unless every floating tensor of the model and EMA weights (or adapters) is finite."""
    for section in WEIGHT_SECTIONS:
        for key, tensor in (weights.get(section) or {}).items():
            if not tensor_is_finite(tensor):
                raise DamagedCheckpoint(f"non-finite weights (NaN/Inf) in {section}.{key}")


def tensor_is_finite(tensor: Any) -> bool:
    """One min/max pass, no temporary tensor (NaN and ±inf show in the extremes): 13x faster than
    ``isfinite().all()`` on a 256 MiB tensor here."""
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor.detach())
    return math.isfinite(float(low)) and math.isfinite(float(high))


# --- facts recorded with every checkpoint ----------------------------------------------------------


def library_versions() -> dict[str, Optional[str]]:
    versions: dict[str, Optional[str]] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def project_git_commit() -> Optional[str]:
    """HEAD of the repository holding f5app's source, or None (installed wheel, no git, …)."""
    source_dir = Path(__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source_dir, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and len(commit) == 40 else None


# --- tolerant coercion -----------------------------------------------------------------------------


def _files_from(data: Any) -> dict[str, FileRecord]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MetadataError(f"{METADATA_FILENAME} 'files' is {type(data).__name__}, not an object")
    records = {}
    for name, info in data.items():
        if not isinstance(name, str) or not is_plain_file_name(name) or name == METADATA_FILENAME:
            raise MetadataError(f"{METADATA_FILENAME} lists {name!r}, which is not a file of this folder")
        size = _int(info.get("size")) if isinstance(info, dict) else None
        if size is None or size < 0:
            raise MetadataError(f"{METADATA_FILENAME} records no valid size for {name}")
        records[name] = FileRecord(size, _str(info.get("sha256")), _str(info.get("xxh3_128")))
    return records


def _lineage_dict(lineage: Lineage) -> dict[str, Any]:
    return {
        "mode": lineage.mode,
        "resumed_from": None if lineage.resumed_from is None else asdict(lineage.resumed_from),
        "finetuned_from": None if lineage.finetuned_from is None else asdict(lineage.finetuned_from),
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> Optional[float]:
    return float(value) if _is_number(value) else None


def _str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _json_number(value: Optional[float]) -> Optional[float]:
    return value if value is None or _finite(value) else None


def _without_non_finite(tree: Any) -> Any:
    """Strict JSON has no NaN or infinity: a diverged loss is recorded as null, never as ``NaN``."""
    if isinstance(tree, float):
        return tree if math.isfinite(tree) else None
    if isinstance(tree, dict):
        return {k: _without_non_finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_without_non_finite(v) for v in tree]
    return tree
