"""Reading a checkpoint: the one owner of what its files hold (in the spirit of torchtitan's
``CheckpointManager.load`` and torchtune's ``load_checkpoint``).

Given a checkpoint resolution chose (or any path: one of our folders, an export folder, an
upstream ``.pt`` / ``.safetensors``, upstream's released EMA-only weights), :class:`CheckpointReader`
hands out typed sections, and callers only apply them:

- :meth:`~CheckpointReader.weights` (EMA or live, canonical ``transformer.*`` keys),
  :meth:`~CheckpointReader.weight_sets` (both, for export);
- :meth:`~CheckpointReader.adapter`: an adapter checkpoint's tensors, its record and base;
- :meth:`~CheckpointReader.resume_state`: model, EMA, optimizer, training state, this rank's RNG;
- :meth:`~CheckpointReader.vocab`, :attr:`~CheckpointReader.record` (metadata.json),
  :meth:`~CheckpointReader.update`.

Every ``.pt`` is read by :meth:`~CheckpointReader._load`, the one loader: the hostile-file gate and
``torch.load`` with ``weights_only=True`` (``f5app/safe_load.py``), and, for our folders, the file's
recorded checksum computed by a second thread while it is read (xxh3_128 is faster than the read
it hides behind), so a changed byte is :class:`DamagedCheckpoint`; weights read from our folders
must be finite. :func:`read_base` reads an adapter's base and checks its fingerprint against the
tensors it actually read (a cache of path, size and mtime never decides).

No caller names a payload key (``model_state_dict``…): those belong to ``schema.py`` (writing)
and this module (reading).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from f5app.ckpt.base import short
from f5app.ckpt.fingerprint import weights_fingerprint
from f5app.ckpt.keys import DuplicateWeightKeys, canonicalize
from f5app.ckpt.schema import (
    ADAPTER_FILENAME, ADAPTER_STATE, EMA_ADAPTER_STATE, EMA_COUNTERS, EMA_STATE, MODEL_FILENAME, MODEL_STATE, OPTIMIZER_STATE, TRAINING_STATE_FILENAME,
    UPDATE_KEY, AdapterRecord, BaseRef, CheckpointMetadata, DamagedCheckpoint, TrainingState, adapter_record_problem,
    read_metadata, require_finite, rng_state_filename,
)
from f5app.data.vocab import VOCAB_FILE, read_vocab
from f5app.errors import MetadataError, UserError, first_line
from f5app.files import file_digests
from f5app.safe_load import NeedsCode, Refused, load_torch

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

FOLDER_WEIGHTS_FILES = (MODEL_FILENAME, "model.safetensors")
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")


class UnreadableWeights(UserError, ValueError):
    """The input is not a weights container we understand (or it would need code to unpickle)."""


class BaseMismatch(UserError, ValueError):
    """An adapter's base is not the weights it was trained on (its fingerprint differs). Not
    damage: the adapter is fine, the base given for it is another one."""


@dataclass
class WeightSets:
    """Both weight sets a container may hold, canonical keys, before choosing one."""

    ema: Optional[dict[str, "Tensor"]]
    model: Optional[dict[str, "Tensor"]]
    vocab: Optional[list[str]]
    source_kind: str
    ema_notes: list[str] = field(default_factory=list)
    model_notes: list[str] = field(default_factory=list)
    unlabelled: bool = False  # one flat state dict whose keys do not say EMA or not


@dataclass
class WeightsRead:
    state: dict[str, "Tensor"]  # canonical keys ("transformer.…")
    vocab: Optional[list[str]]
    notes: list[str]
    source_kind: str
    weights: str = "ema"  # which set was taken: "ema" or "model"


@dataclass
class AdapterSection:
    """An adapter checkpoint's trainable tensors (peft's layout, no EMA counters) and its record."""

    state: dict[str, "Tensor"]
    record: AdapterRecord

    @property
    def base(self) -> BaseRef:
        return self.record.base


@dataclass
class ResumeState:
    """What an exact resume applies: full weights (``model``/``ema``) or an adapter's, never both."""

    metadata: Optional[CheckpointMetadata]
    optimizer: dict[str, Any]
    training_state: TrainingState
    rng: Optional[Any]  # this rank's; None when the run was saved with fewer processes
    model: Optional[dict[str, Any]] = None
    ema: Optional[dict[str, Any]] = None
    adapter: Optional[dict[str, Any]] = None
    ema_adapter: Optional[dict[str, Any]] = None


@dataclass
class ResolvedCheckpoint:
    """What resolution (``ckpt/resolve.py``) chose, and what the reader opens."""

    source: str
    path: Path
    kind: str  # f5app | upstream_pt | safetensors
    metadata: Optional[CheckpointMetadata]  # ours, or the source's record beside an export
    vocab_path: Optional[Path]
    base: Optional[ResolvedCheckpoint] = None  # an adapter checkpoint's base (read_base checks its fingerprint)

    @property
    def model_config(self) -> Optional[dict]:
        """The model tree the checkpoint records; None for upstream files."""
        return self.metadata.model if self.metadata is not None and self.metadata.model else None


class CheckpointReader:
    """The sections of one checkpoint, each file read once through the gated, verified loader."""

    def __init__(self, path: str | Path, *, metadata: Optional[CheckpointMetadata] = None,
                 vocab_path: Optional[Path] = None, verify: bool = True) -> None:
        self.path = Path(path)
        self.is_folder = self.path.is_dir()
        self.record = metadata if metadata is not None or not self.is_folder else read_metadata(self.path)
        self.vocab_path = vocab_path
        self.verify = verify
        self._payloads: dict[str, Any] = {}

    @classmethod
    def of(cls, chosen: ResolvedCheckpoint, *, verify: bool = True) -> "CheckpointReader":
        """The reader of what resolution chose (its validated record, its vocabulary)."""
        metadata = chosen.metadata if chosen.kind == "f5app" else None
        return cls(chosen.path, metadata=metadata, vocab_path=chosen.vocab_path, verify=verify)

    # --- sections -----------------------------------------------------------------------------

    def vocab(self) -> Optional[list[str]]:
        """The vocabulary the weights were trained with: the given vocab.txt, else the one beside them."""
        if self.vocab_path is not None:
            if self.is_folder and self.vocab_path == self.path / VOCAB_FILE:
                self._check_file(VOCAB_FILE)
            return read_vocab(self.vocab_path)
        if self.is_folder and (self.path / VOCAB_FILE).is_file():
            self._check_file(VOCAB_FILE)
        candidate = (self.path if self.is_folder else self.path.parent) / VOCAB_FILE
        return read_vocab(candidate) if candidate.is_file() else None

    def weight_sets(self) -> WeightSets:
        """Both weight sets (either may be None), canonical keys."""
        file = self.weights_file()
        if file.suffix == ".safetensors":
            sets = _classify_flat(_read_safetensors(file), file, container="safetensors")
        elif file.suffix in TORCH_SUFFIXES:
            sets = _classify_torch(self._load(file.name) if self._ours(file) else _load_foreign(file), file)
            if self.is_folder and file.name == MODEL_FILENAME:
                sets.source_kind = "f5app checkpoint folder"
        else:
            raise UnreadableWeights(f"{file}: unknown weights format {file.suffix!r}; use .safetensors or .pt")
        sets.vocab = self.vocab()
        return sets

    def weights(self, *, use_ema: bool = True) -> WeightsRead:
        """Canonical-key weights; the EMA set when ``use_ema`` and present, else the model's (noted)."""
        read = choose_weights(self.weight_sets(), use_ema=use_ema, path=self.path)
        if self.verify:  # NaN weights load without error and only ever speak noise
            require_finite({MODEL_STATE: read.state})
        return read

    def adapter(self, *, use_ema: bool = True) -> AdapterSection:
        """The (EMA) adapter tensors of an adapter checkpoint and its record (checked against adapter.json)."""
        record = self._adapter_record()
        payload = self._load(MODEL_FILENAME)
        section = payload.get(EMA_ADAPTER_STATE if use_ema else ADAPTER_STATE)
        if not isinstance(section, Mapping):
            section = payload.get(ADAPTER_STATE)
        if not isinstance(section, Mapping):
            raise DamagedCheckpoint(f"{MODEL_FILENAME} holds no {ADAPTER_STATE}")
        state = {k: v.clone() for k, v in section.items() if k not in EMA_COUNTERS}
        if self.verify:
            require_finite({ADAPTER_STATE: state})
        return AdapterSection(state, record)

    def resume_state(self, rank: int) -> ResumeState:
        """Everything an exact resume applies, weights-only; every recorded file verified."""
        adapter = self.record is not None and self.record.adapter is not None
        if adapter:
            self._adapter_record()
        weights = self._load(MODEL_FILENAME)
        sections = (ADAPTER_STATE, EMA_ADAPTER_STATE) if adapter else (MODEL_STATE, EMA_STATE)
        if not isinstance(weights.get(sections[0]), dict):
            raise DamagedCheckpoint(f"{MODEL_FILENAME} holds no {sections[0]}")
        try:
            training_state = TrainingState.from_payload(self._load(TRAINING_STATE_FILENAME))
        except MetadataError as error:
            raise DamagedCheckpoint(str(error)) from None
        rng = None
        if (self.path / rng_state_filename(rank)).is_file():
            # numpy's RNG state is an ndarray: its reconstruction is allowed for this file only (it
            # rebuilds arrays and runs no other code).
            rng = self._load(rng_state_filename(rank), allow=_numpy_array_globals())
        if self.verify:
            require_finite(weights)
            self._check_file(VOCAB_FILE)
        first, second = (weights.get(name) for name in sections)
        state = ResumeState(self.record, weights.get(OPTIMIZER_STATE) or {}, training_state, rng)
        if adapter:
            state.adapter, state.ema_adapter = first, second
        else:
            state.model, state.ema = first, second
        return state

    def fingerprint(self, *, use_ema: bool = True) -> str:
        """The weights fingerprint of the tensors read: the adapter's own for an adapter checkpoint."""
        if self.record is not None and self.record.adapter is not None:
            return weights_fingerprint(self.adapter(use_ema=use_ema).state)
        return weights_fingerprint(self.weights(use_ema=use_ema).state)

    def update(self) -> Optional[int]:
        """The update a file records in itself (upstream trainer files), else the metadata's."""
        if self.record is not None:
            return self.record.update
        if self.is_folder or self.path.suffix not in TORCH_SUFFIXES:
            return None
        payload = _load_foreign(self.path)
        value = payload.get(UPDATE_KEY) if isinstance(payload, Mapping) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def weights_file(self) -> Path:
        """The weights file: the path itself, or a folder's ``model.pt`` / ``model.safetensors``."""
        if not self.is_folder:
            if not self.path.is_file():
                raise UnreadableWeights(f"weights not found: {self.path}")
            return self.path
        for name in FOLDER_WEIGHTS_FILES:
            if (self.path / name).is_file():
                return self.path / name
        raise UnreadableWeights(f"{self.path} is a folder without {' or '.join(FOLDER_WEIGHTS_FILES)}; "
                                "point at a checkpoint folder or a weights file")

    # --- the one loader -----------------------------------------------------------------------

    def _ours(self, file: Path) -> bool:
        return self.is_folder and self.record is not None and file.parent == self.path

    def _load(self, name: str, allow: tuple | list = ()) -> Any:
        """A file of our folder: gated, weights-only, its recorded checksum compared; weights finite."""
        if name in self._payloads:
            return self._payloads[name]
        file = self.path / name
        record = self.record.files.get(name) if self.record is not None else None
        check = record.load_check() if record is not None and self.verify else None
        try:
            if check is None:
                payload = load_torch(file, mmap=name == MODEL_FILENAME, allow=allow)
            else:
                algorithm, expected = check
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="f5app-verify") as pool:
                    digest = pool.submit(lambda: file_digests(file, (algorithm,))[algorithm])
                    try:
                        payload = load_torch(file, mmap=name == MODEL_FILENAME, allow=allow)
                    finally:
                        found = digest.result()
                if found != expected:
                    raise DamagedCheckpoint(f"{name} changed since it was saved ({algorithm} {found[:12]}…, metadata {expected[:12]}…)")
        except Refused as refused:
            raise DamagedCheckpoint(f"{name}: {refused}") from None
        if name == MODEL_FILENAME and not isinstance(payload, dict):
            raise DamagedCheckpoint(f"{name} holds a {type(payload).__name__}, not the weights dict")
        self._payloads[name] = payload
        return payload

    def _check_file(self, name: str) -> None:
        """A small recorded file that is not a pickle (vocab.txt, adapter.json): its checksum compared."""
        record = self.record.files.get(name) if self.record is not None else None
        check = record.load_check() if record is not None and self.verify else None
        if check is None or name in self._payloads:
            return
        algorithm, expected = check
        found = file_digests(self.path / name, (algorithm,))[algorithm]
        if found != expected:
            raise DamagedCheckpoint(f"{name} changed since it was saved ({algorithm} {found[:12]}…, metadata {expected[:12]}…)")
        self._payloads[name] = None

    def _adapter_record(self) -> AdapterRecord:
        if self.record is None or self.record.adapter is None:
            raise UserError(f"{self.path} holds no adapter weights ({ADAPTER_STATE}); it is not an adapter checkpoint")
        if ADAPTER_FILENAME not in self.record.files:
            return self.record.adapter  # older than adapter.json: resolution let it through only with ckpt.trust_base
        problem = adapter_record_problem(self.path, self.record)
        if problem is not None:
            raise DamagedCheckpoint(problem)
        self._check_file(ADAPTER_FILENAME)
        return self.record.adapter


# --- an adapter's base ------------------------------------------------------------------------------


def read_base(adapter: ResolvedCheckpoint) -> tuple[WeightsRead, str]:
    """The base weights of an adapter checkpoint (``adapter.base``, found by resolution) and their
    fingerprint, computed from the tensors read: :class:`BaseMismatch` when it is not the one the
    adapter records. (A record without a fingerprint got here only with ``ckpt.trust_base=true``.)"""
    assert adapter.base is not None and adapter.metadata is not None and adapter.metadata.adapter is not None
    ref = adapter.metadata.adapter.base
    weights = CheckpointReader.of(adapter.base).weights(use_ema=ref.weights != "model")
    fingerprint = weights_fingerprint(weights.state)
    if ref.fingerprint is None:
        log.warning("adapter %s records no base fingerprint; loading it onto %s (fingerprint %s) because "
                    "ckpt.trust_base=true", adapter.path, adapter.base.path, short(fingerprint))
    elif fingerprint != ref.fingerprint:
        raise BaseMismatch(
            f"refusing adapter checkpoint {adapter.path}: it was trained on {ref.describe()} (fingerprint "
            f"{short(ref.fingerprint)}), but {adapter.base.path} has fingerprint {short(fingerprint)} (other weights); "
            "point ckpt.base_path=FILE at the exact base")
    return weights, fingerprint


def _numpy_array_globals() -> list:
    import numpy as np  # deferred: only RNG states need numpy's array types

    try:
        reconstruct = np._core.multiarray._reconstruct  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        reconstruct = np.core.multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


# --- containers -------------------------------------------------------------------------------------


def choose_weights(sets: WeightSets, *, use_ema: bool, path: str | Path = "the file") -> WeightsRead:
    """Pick the EMA or model set from ``sets`` (falling back to the other one, noted)."""
    preferred, other = ("ema", "model") if use_ema else ("model", "ema")
    chosen = preferred if getattr(sets, preferred) is not None else other
    state = getattr(sets, chosen)
    notes = list(sets.ema_notes if chosen == "ema" else sets.model_notes)
    if chosen != preferred and not sets.unlabelled:
        wanted = "EMA" if use_ema else "model (non-EMA)"
        notes.append(f"no {wanted} weights in the file; using its {'EMA' if chosen == 'ema' else 'model'} weights")
    if not state:
        raise UnreadableWeights(f"{path} holds no model weights")
    return WeightsRead(state=state, vocab=sets.vocab, notes=notes, source_kind=sets.source_kind, weights=chosen)


def _load_foreign(path: Path) -> Any:
    """A ``.pt`` nobody recorded a checksum for (upstream's, a community export): gated, weights-only,
    memory-mapped so a trainer file's optimizer state never fills memory."""
    try:
        return load_torch(path, mmap=True)
    except NeedsCode as refused:
        raise UnreadableWeights(f"refusing to load {path}: {refused}") from None
    except Refused as refused:
        raise UnreadableWeights(f"refusing to load {path}: {refused}") from None


def _read_safetensors(path: Path) -> dict[str, "Tensor"]:
    from safetensors import SafetensorError  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it
    from safetensors.torch import load_file  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise UnreadableWeights(f"{path} is not a readable safetensors file ({first_line(error)})") from error


def _classify_torch(obj: Any, path: Path) -> WeightSets:
    if not isinstance(obj, Mapping):
        raise UnreadableWeights(f"{path} holds a {type(obj).__name__}, not a state dict or trainer checkpoint")
    if EMA_STATE in obj or MODEL_STATE in obj:
        ema, ema_notes = _canonical(obj.get(EMA_STATE), path, EMA_STATE)
        model, model_notes = _canonical(obj.get(MODEL_STATE), path, MODEL_STATE)
        return WeightSets(ema, model, None, "upstream trainer checkpoint (.pt)", ema_notes, model_notes)
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return _classify_flat(obj["state_dict"], path, container="'state_dict' entry")
    if ADAPTER_STATE in obj:
        raise UnreadableWeights(f"{path} holds LoRA adapter weights, not full weights: load its checkpoint folder "
                                "(its base comes with it) or export it merged")
    return _classify_flat(obj, path, container="torch state dict")


def _classify_flat(raw: Mapping[str, Any], path: Path, container: str) -> WeightSets:
    """A single flat mapping: EMA weights when its keys say so (``ema_model.`` / ``ema.``), else model weights."""
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    not_tensors = [k for k, v in raw.items() if not isinstance(v, torch.Tensor) and k not in ("step", "update", "initted")]
    if not_tensors:
        raise UnreadableWeights(f"{path}: entries that are not tensors ({_first_few(not_tensors)}); not a state dict")
    is_ema = any(k.startswith(("ema_model.", "ema.")) for k in raw)
    state, notes = _canonical(raw, path, container)
    if is_ema:
        kind = "EMA-only safetensors (upstream release layout)" if container == "safetensors" else f"EMA {container}"
        return WeightSets(state, None, None, kind, ema_notes=notes)
    return WeightSets(None, state, None, f"plain {container}", model_notes=notes, unlabelled=True)


def _canonical(section: Any, path: Path, name: str) -> tuple[Optional[dict], list[str]]:
    if section is None:
        return None, []
    if not isinstance(section, Mapping):
        raise UnreadableWeights(f"{path}: {name} is a {type(section).__name__}, not a state dict")
    # ema_pytorch with include_online_model=True also saves the online copy; it is not the EMA.
    online = [k for k in section if k.startswith("online_model.")]
    section = {k: v for k, v in section.items() if not k.startswith("online_model.")}
    try:
        state, notes = canonicalize(section)
    except DuplicateWeightKeys as error:
        raise UnreadableWeights(f"{path}: {name}: {error}") from error
    if online:
        notes.append(f"dropped {len(online)} 'online_model.' entries (ema_pytorch's copy of the live model)")
    return state, notes


def _first_few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, …"
