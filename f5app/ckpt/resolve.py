"""Which weights load: walk the configured chain, validate each candidate, explain the choice.

``resolve(ckpt, purpose=…, run_dir=…, model=…)`` is what ``f5app.train``, ``f5app.infer`` and
``python -m f5app.ckpt resolve`` all call, so the three always agree. Sources (docs/checkpoints.md):

- ``resume``  this run's complete checkpoints, newest first (training: mode ``resume``)
- ``best`` / ``last`` / ``pinned``  the run's pointers (pinned: the one a person chose to keep);
  ``latest``  newest valid numbered checkpoint
- ``custom``  ``ckpt.path``: our folder, a run/checkpoints folder, an upstream ``.pt`` or
  ``.safetensors``, or a folder of upstream files (``model_last.pt``, ``model_<N>.pt``)
- ``pretrained``  the Hub, cache first;  ``scratch``  random init (training, ``allow_scratch``)

An adapter checkpoint (finetune=lora) that is chosen brings its base: the base its metadata records
is resolved through the same sources (``custom`` or ``pretrained``, or ``ckpt.base_path``) and its
fingerprint compared; both appear in the table, and a missing or different base is refused.

Only this run's own checkpoints are ever quarantined (renamed ``.corrupted``): a user's
``ckpt.path`` and the Hub cache are reported, never renamed. A checkpoint that is readable but
does not fit the configured model or vocabulary is never quarantined either: resuming it is
refused with the difference, other sources just reject it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Literal, Optional, TypeVar

from f5app import hub
from f5app.ckpt import layout
from f5app.ckpt.arch import matching_presets
from f5app.ckpt.base import base_ckpt_config, is_commit, short
from f5app.ckpt.reader import BaseMismatch, ResolvedCheckpoint, read_base
from f5app.ckpt.schema import (
    METADATA_FILENAME, MODEL_FILENAME, VOCAB_FILENAME, CheckpointMetadata, DamagedCheckpoint,
    read_export_record,
)
from f5app.ckpt.store import base_bound, best_by_metric
from f5app.ckpt.validate import ValidationResult, detect_kind, validate
from f5app.config import CkptConfig, ModelConfig, model_presets, to_settings
from f5app.data.vocab import VocabError, count_vocab
from f5app.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
Purpose = Literal["train", "infer"]
Mode = Literal["resume", "finetune", "scratch", "infer"]
Status = Literal["chosen", "rejected", "missing", "skipped", "quarantined"]
SOURCES = ("resume", "best", "last", "pinned", "latest", "custom", "pretrained", "scratch")
HF_SCHEME = "hf://"
_UPSTREAM_NUMBERED = re.compile(r"^model_(\d+)\.(pt|safetensors)$")


@dataclass
class Candidate:
    source: str
    path: Optional[str]
    status: Status
    reason: str

    def to_dict(self) -> dict:
        return {"source": self.source, "path": self.path, "status": self.status, "reason": self.reason}


@dataclass
class Resolution:
    mode: Mode
    chosen: Optional[ResolvedCheckpoint]
    candidates: list[Candidate] = field(default_factory=list)
    purpose: Purpose = "train"
    chain: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = {s: sum(c.status == s for c in self.candidates) for s in ("quarantined", "rejected")}
        tail = f" [{counts['quarantined']} quarantined, {counts['rejected']} rejected]"
        if self.chosen is None:
            return f"{self.purpose}: train from scratch (random weights; ckpt.allow_scratch=true)" + tail
        verb = {"resume": "resume from", "finetune": "fine-tune from", "infer": "infer with"}[self.mode]
        base = f" on base {self.chosen.base.path}" if self.chosen.base is not None else ""
        return f"{self.purpose}: {verb} {self.chosen.path} (source {self.chosen.source}, {self.chosen.kind}){base}" + tail

    def table(self) -> str:
        return format_table(self.candidates, self.purpose, self.chain)

    def to_dict(self) -> dict:
        return {
            "purpose": self.purpose,
            "mode": self.mode,
            "chosen": None if self.chosen is None else str(self.chosen.path),
            "source": None if self.chosen is None else self.chosen.source,
            "kind": None if self.chosen is None else self.chosen.kind,
            "base": None if self.chosen is None or self.chosen.base is None else str(self.chosen.base.path),
            "chain": list(self.chain),
            "summary": self.summary(),
            "candidates": [c.to_dict() for c in self.candidates],
        }


class ResolutionError(UserError, RuntimeError):
    """Nothing acceptable to load, or a refusal (all checkpoints invalid, architecture changed…)."""

    def __init__(self, message: str, candidates: list[Candidate], purpose: Purpose, chain: list[str]):
        super().__init__(message)
        self.candidates = candidates
        self.purpose = purpose
        self.chain = chain

    def table(self) -> str:
        return format_table(self.candidates, self.purpose, self.chain)

    def to_dict(self) -> dict:
        return {
            "purpose": self.purpose,
            "mode": None,
            "chosen": None,
            "chain": list(self.chain),
            "error": str(self),
            "candidates": [c.to_dict() for c in self.candidates],
        }


def format_table(candidates: list[Candidate], purpose: str, chain: list[str]) -> str:
    rows = [("source", "status", "path", "reason")] + [
        (c.source, c.status, c.path or "-", c.reason) for c in candidates
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"checkpoint resolution for {purpose} (chain: {' -> '.join(chain)})"]
    for row in rows:
        lines.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    return "\n".join(lines)


def resolve(
    ckpt: CkptConfig,
    *,
    purpose: Purpose,
    run_dir: Path,
    model: Optional[ModelConfig],
    vocab_size: Optional[int] = None,
    dry_run: bool = False,
) -> Resolution:
    """Walk ``ckpt.train_chain`` or ``ckpt.infer_chain``; the first valid candidate wins.

    ``dry_run`` (the CLI's ``resolve``) renames nothing: what would be quarantined is reported.
    Raises :class:`ResolutionError` when the chain ends without a choice or must stop early.
    """
    return resolve_and_load(ckpt, purpose=purpose, run_dir=run_dir, model=model, vocab_size=vocab_size, dry_run=dry_run)[0]


def resolve_and_load(
    ckpt: CkptConfig,
    *,
    purpose: Purpose,
    run_dir: Path,
    model: Optional[ModelConfig],
    load: Optional[Callable[[ResolvedCheckpoint], T]] = None,
    vocab_size: Optional[int] = None,
    dry_run: bool = False,
) -> tuple[Resolution, Optional[T]]:
    """Resolve, then ``load`` the choice; a checkpoint whose load finds damage
    (:class:`~f5app.ckpt.schema.DamagedCheckpoint`) is quarantined when it is this run's and the
    chain is walked again, so damage the fast checks cannot see still costs only that checkpoint."""
    if purpose not in ("train", "infer"):
        raise ValueError(f"purpose must be 'train' or 'infer', not {purpose!r}")
    chain = list(ckpt.train_chain if purpose == "train" else ckpt.infer_chain)
    earlier: list[Candidate] = []
    while True:
        walker = _ChainWalker(ckpt, purpose, Path(ckpt.run_dir or run_dir), model, vocab_size, dry_run, chain)
        try:
            resolution = walker.run()
        except ResolutionError as error:
            error.candidates[:0] = earlier
            log.warning("%s\n%s", error.table(), error)
            raise
        resolution.candidates[:0] = earlier
        chosen = resolution.chosen
        if load is None or chosen is None:
            log.info("%s\n%s", resolution.table(), resolution.summary())
            return resolution, None
        try:
            loaded = load(chosen)
        except BaseMismatch as mismatch:  # other weights at the base's place: not damage, nothing renamed
            rows = [i for i, c in enumerate(resolution.candidates) if c.source.startswith("base:") and c.status == "chosen"]
            if rows:
                entry = resolution.candidates[rows[-1]]
                resolution.candidates[rows[-1]] = Candidate(entry.source, entry.path, "rejected", str(mismatch).split(": ", 1)[-1])
            error = ResolutionError(str(mismatch), resolution.candidates, purpose, chain)
            log.warning("%s\n%s", error.table(), error)
            raise error from None
        except DamagedCheckpoint as damage:
            reason = f"damaged, found while loading: {damage}"
            entry = next(c for c in reversed(resolution.candidates) if c.status == "chosen" and not c.source.startswith("base:"))
            if chosen.source in _OWN_SOURCES and ckpt.quarantine and not dry_run:
                target = layout.quarantine(chosen.path, reason)
                log.warning("quarantined %s -> %s: %s", chosen.path, target.name, reason)
                earlier = [*resolution.candidates[:-1], Candidate(entry.source, str(target), "quarantined", reason)]
                continue
            earlier = [*resolution.candidates[:-1], Candidate(entry.source, entry.path, "rejected", reason)]
            error = ResolutionError(f"cannot load {chosen.path}: {damage}", earlier, purpose, chain)
            log.warning("%s\n%s", error.table(), error)
            raise error from None
        log.info("%s\n%s", resolution.table(), resolution.summary())
        return resolution, loaded


_OWN_SOURCES = ("resume", "best", "last", "pinned", "latest")


class _ChainWalker:
    def __init__(self, ckpt, purpose, run_dir, model, vocab_size, dry_run, chain):
        self.ckpt: CkptConfig = ckpt
        self.purpose: Purpose = purpose
        self.run_dir = run_dir
        self.ckpt_dir = layout.checkpoints_dir(run_dir)
        self.model: Optional[ModelConfig] = model
        self.vocab_size: Optional[int] = vocab_size
        self.dry_run = dry_run
        self.chain = chain
        self.candidates: list[Candidate] = []
        self.seen: dict[Path, Candidate] = {}

    def run(self) -> Resolution:
        unknown = [s for s in self.chain if s not in SOURCES]
        if unknown:
            self._fail(f"unknown checkpoint source(s) {unknown} in the chain; use: {', '.join(SOURCES)}")
        self._note_leftovers()
        for source in self.chain:
            outcome = getattr(self, f"_try_{source}")()
            if outcome is not None:
                return outcome
        tried = ", ".join(f"{c.source}: {c.reason}" for c in self.candidates if c.status != "skipped") or "nothing"
        self._fail(f"no usable checkpoint for {self.purpose} (chain {' -> '.join(self.chain)}); tried {tried}")

    # --- sources --------------------------------------------------------------------------------

    def _try_resume(self):
        if self.purpose == "infer":
            return self._try_latest(source="resume")
        found = layout.scan(self.ckpt_dir)
        if not found.numbered and not found.quarantined:
            self._add("resume", self.ckpt_dir, "missing", "no checkpoints in this run yet")
            return None
        for entry in found.numbered:
            chosen = self._consider("resume", entry.path, own=True)
            if chosen is not None:
                return chosen
        invalid = len(found.numbered) + len(found.quarantined)
        quarantined = [e.name for e in layout.scan(self.ckpt_dir).quarantined]
        where = f"see quarantined {', '.join(quarantined)}" if quarantined else "see the reasons above (nothing renamed)"
        self._fail(
            f"refusing to restart: {invalid} checkpoints in {self.ckpt_dir}, all invalid; {where}. "
            "Move them away to start over, or choose weights explicitly (ckpt=custom ckpt.path=...)"
        )

    def _try_best(self):
        """``best.json`` when it ranks by ``ckpt.best_metric``; asked for another metric
        (``ckpt=best ckpt.best_metric=wer`` after a run ranked by val_loss), the run's checkpoints
        are ranked by that metric here, with the store's rule, and best.json is left alone. So are
        they when there is no best.json at all (a short run that evaluated but never validated)."""
        pointer_file = layout.pointer_path(self.ckpt_dir, "best")
        pointer = layout.read_pointer(self.ckpt_dir, "best")
        metric = self.ckpt.best_metric
        bound = base_bound(self.ckpt.base_set, self.ckpt.max_base_wer_rise)
        if bound is None and ((pointer is not None and pointer.metric == metric) or (pointer is None and pointer_file.exists())):
            return self._try_pointer("best")  # the pointer, or why it is damaged
        winner = best_by_metric(self.ckpt_dir, metric, bound)
        if winner is None:
            why = (f"no checkpoint of this run records {metric} (best.json ranks by {pointer.metric}; evaluation records wer/cer/sim)"
                   if pointer is not None else f"no best.json in this run, and no checkpoint of it records {metric}")
            if bound is not None:
                why += f" with wer@{bound.set_name} within ckpt.max_base_wer_rise={bound.max_rise:g} of the run's first evaluation"
            self._add("best", self.ckpt_dir, "missing", why)
            return None
        metadata, _ = winner
        return self._consider("best", self.ckpt_dir / (metadata.name or layout.checkpoint_name(metadata.update)), own=True)

    def _try_last(self):
        return self._try_pointer("last")

    def _try_pinned(self):
        return self._try_pointer("pinned")

    def _try_pointer(self, which: layout.PointerName):
        pointer_file = layout.pointer_path(self.ckpt_dir, which)
        try:
            pointer = layout.load_pointer(self.ckpt_dir, which)
        except layout.PointerError as error:
            self._add(which, pointer_file, "missing", f"{error} (ignored; nothing it names is touched)")
            return None
        if pointer is None:
            self._add(which, pointer_file, "missing", f"no {which}.json in this run")
            return None
        target = self.ckpt_dir / pointer.name
        if not target.exists():
            self._add(which, target, "missing", f"{which}.json names {pointer.name}, which is not there (quarantined or deleted)")
            return None
        return self._consider(which, target, own=True)

    def _try_latest(self, source: str = "latest"):
        numbered = layout.scan(self.ckpt_dir).numbered
        if not numbered:
            self._add(source, self.ckpt_dir, "missing", "no numbered checkpoints")
            return None
        for entry in numbered:
            chosen = self._consider(source, entry.path, own=True)
            if chosen is not None:
                return chosen
        return None

    def _try_custom(self):
        if not self.ckpt.path:
            self._add("custom", None, "skipped", "ckpt.path is not set")
            if self.ckpt.name == "custom":
                self._fail("ckpt=custom needs ckpt.path=FILE_OR_DIR (a checkpoint folder, .pt or .safetensors)")
            return None
        if self.ckpt.path.startswith(HF_SCHEME):
            return self._try_hub_path(self.ckpt.path)
        path = Path(self.ckpt.path).expanduser()
        if not path.exists():
            self._add("custom", path, "missing", "ckpt.path does not exist")
            return self._explicit_failed(f"ckpt.path={path} does not exist")
        for candidate_path in _expand_custom(path):
            chosen = self._consider("custom", candidate_path, own=False)
            if chosen is not None:
                return chosen
        if not _expand_custom(path):
            self._add("custom", path, "rejected", "folder holds no checkpoint (no metadata.json, update_*, *.pt or *.safetensors)")
        last = self.candidates[-1]
        return self._explicit_failed(f"ckpt.path={path} is not usable: {last.reason}")

    def _try_hub_path(self, url: str):
        """``ckpt.path=hf://OWNER/REPO/FILE``, as upstream's CLI writes it; the vocabulary beside
        FILE in the same repository (``DIR/vocab.txt``) comes too when the repository has one."""
        parts = url[len(HF_SCHEME):].split("/", 2)
        if len(parts) < 3 or not all(parts):
            self._add("custom", url, "rejected", "not hf://OWNER/REPO/FILE")
            self._fail(f"ckpt.path={url} is not a Hub file: write it as hf://OWNER/REPO/PATH/IN/REPO")
        repo_id, filename = "/".join(parts[:2]), parts[2]
        try:
            weights = hub.fetch_hub_file(
                repo_id, filename, self.ckpt.revision, self.ckpt.cache_dir,
                what="checkpoint", setting="ckpt.path", repo_setting="ckpt.path",
            )
        except hub.PretrainedUnavailable as error:
            self._add("custom", url, "missing", str(error))
            return self._explicit_failed(str(error))
        vocab_name = str(PurePosixPath(filename).with_name(VOCAB_FILENAME))
        try:
            vocab_path = hub.fetch_vocab(repo_id, vocab_name, self.ckpt.revision, self.ckpt.cache_dir)
        except hub.PretrainedUnavailable:
            vocab_path = None  # no vocab.txt beside it: the configured vocabulary decides
        chosen = self._consider("custom", weights, own=False, vocab_path=vocab_path)
        if chosen is None:
            return self._explicit_failed(f"ckpt.path={url} is not usable: {self.candidates[-1].reason}")
        return chosen

    def _try_pretrained(self):
        label = f"{self.ckpt.repo_id}/{self.ckpt.filename}"
        try:
            weights = hub.fetch_pretrained(self.ckpt.repo_id, self.ckpt.filename, self.ckpt.revision, self.ckpt.cache_dir)
        except hub.PretrainedUnavailable as error:
            self._add("pretrained", label, "missing", str(error))
            return None
        vocab_path = None
        if self.ckpt.vocab_filename:
            try:
                vocab_path = hub.fetch_vocab(self.ckpt.repo_id, self.ckpt.vocab_filename, self.ckpt.revision, self.ckpt.cache_dir)
            except hub.PretrainedUnavailable as error:
                self._add("pretrained", weights, "missing", f"weights cached but vocabulary unavailable: {error}")
                return None
        return self._consider("pretrained", weights, own=False, vocab_path=vocab_path)

    def _try_scratch(self):
        if self.purpose == "infer":
            self._add("scratch", None, "skipped", "scratch is for training only")
            return None
        if not self.ckpt.allow_scratch:
            self._add("scratch", None, "skipped", "ckpt.allow_scratch=false")
            return None
        self._add("scratch", None, "chosen", "random initialisation (ckpt.allow_scratch=true)")
        return Resolution("scratch", None, self.candidates, self.purpose, self.chain)

    # --- one candidate --------------------------------------------------------------------------

    def _consider(self, source: str, path: Path, *, own: bool, vocab_path: Optional[Path] = None):
        """Validate one path; returns a Resolution when it is chosen, else records why not."""
        path = Path(path)
        if path in self.seen:
            earlier = self.seen[path]
            self._add(source, path, "skipped", f"same checkpoint as {earlier.source} above ({earlier.status})")
            return None
        kind = detect_kind(path)
        vocab_path = vocab_path or _vocab_beside(path, kind)
        result = self._validate(source, path, kind, vocab_path)
        if result.ok:
            mode: Mode = "infer" if self.purpose == "infer" else ("finetune" if source in ("custom", "pretrained") else "resume")
            metadata = result.metadata if kind == "f5app" else _sidecar_metadata(path)
            reason = _chosen_reason(result, metadata, self.ckpt.best_metric if source == "best" else None)
            if metadata is None and result.shapes:
                reason += _family_note(result.shapes, self.model)
            self._add(source, path, "chosen", reason)
            chosen = ResolvedCheckpoint(source, path, result.kind or kind, metadata, vocab_path)
            if metadata is not None and metadata.adapter is not None and kind == "f5app":
                chosen.base = self._resolve_base(chosen)
            return Resolution(mode, chosen, self.candidates, self.purpose, self.chain)

        if result.incompatible and self.purpose == "train" and source in ("resume", "best", "last", "latest"):
            self._add(source, path, "rejected", result.reason)
            hint = (
                "fix its permissions or storage, or move it away"
                if result.reason.startswith("cannot read")
                else "the architecture and vocabulary of a run cannot change; restore the model settings, "
                "or start a new run_name and fine-tune from it with ckpt=custom"
            )
            self._fail(f"refusing to resume {path}: {result.reason}. {hint[0].upper()}{hint[1:]}")
        if own and not result.incompatible and self.ckpt.quarantine:
            self._quarantine(source, path, result.reason)
        else:
            self._add(source, path, "rejected", result.reason)
        return None

    def _resolve_base(self, adapter: ResolvedCheckpoint) -> ResolvedCheckpoint:
        """The base an adapter checkpoint records, found through the usual sources. Whether it holds
        the weights the adapter was trained on is decided where its tensors are read
        (``reader.read_base``); the dry run (``ckpt resolve``) reads them here to show it."""
        assert adapter.metadata is not None and adapter.metadata.adapter is not None
        record = adapter.metadata.adapter
        ref = record.base
        expected = f"{ref.describe()} (fingerprint {short(ref.fingerprint)})"
        if ref.fingerprint is None and not self.ckpt.trust_base:
            self._fail(f"refusing adapter checkpoint {adapter.path}: it records no fingerprint of its base {ref.describe()}, "
                       "so nothing proves a base is the one it was trained on; set ckpt.trust_base=true to load it anyway")
        if ref.source == "pretrained" and not self.ckpt.base_path and not is_commit(ref.revision) and not self.ckpt.trust_base:
            self._fail(f"refusing adapter checkpoint {adapter.path}: its Hub base {ref.describe()} is recorded at revision "
                       f"{ref.revision or 'main'}, not at a commit, and a branch can move; point ckpt.base_path=FILE at the base, "
                       "or set ckpt.trust_base=true")
        base_cfg = base_ckpt_config(ref, self.ckpt)
        model = _model_or(adapter.metadata.model or None, self.model)
        walker = _ChainWalker(base_cfg, "train", self.run_dir, model, record.base_vocab_size, self.dry_run, list(base_cfg.train_chain))
        try:
            found = walker.run().chosen
            reason = ""
        except ResolutionError:
            found, reason = None, walker.candidates[-1].reason if walker.candidates else "not found"
        self.candidates += [Candidate(f"base:{c.source}", c.path, c.status, c.reason) for c in walker.candidates]
        if found is None:
            self._fail(f"adapter checkpoint {adapter.path} needs its base {expected}, which is not available ({reason}); "
                       "put it back, or point ckpt.base_path=FILE at it")
        assert found is not None
        adapter.base = found
        entry = self.candidates[-1]
        if not self.dry_run:
            self.candidates[-1] = Candidate(entry.source, entry.path, "chosen", f"{entry.reason}; its fingerprint is checked against the adapter's when read")
            return found
        try:
            _, actual = read_base(adapter)
        except BaseMismatch as mismatch:
            self.candidates[-1] = Candidate(entry.source, entry.path, "rejected", str(mismatch).split(": ", 1)[-1])
            self._fail(str(mismatch))
        except (UserError, DamagedCheckpoint) as error:
            self.candidates[-1] = Candidate(entry.source, entry.path, "rejected", str(error))
            self._fail(f"adapter checkpoint {adapter.path} needs its base {expected}; {found.path} cannot be read: {error}")
        verdict = "the adapter records none (ckpt.trust_base=true)" if ref.fingerprint is None else "matches the adapter's"
        self.candidates[-1] = Candidate(entry.source, entry.path, "chosen", f"{entry.reason}, fingerprint {short(actual)} {verdict}")
        return found

    def _validate(self, source, path, kind, vocab_path) -> ValidationResult:
        finetune = self.purpose == "train" and source in ("custom", "pretrained")
        if self.purpose == "infer" and kind == "f5app":
            # Our checkpoints carry their model config and vocabulary: check against those.
            model, vocab = None, None
        elif self.purpose == "infer":
            # An export carries its source's model config beside it; otherwise use the configured one.
            sidecar = _sidecar_metadata(path)
            model = _model_or(sidecar.model if sidecar is not None and sidecar.model else None, self.model)
            try:
                file_vocab = count_vocab(vocab_path) if vocab_path is not None and vocab_path.is_file() else None
            except VocabError as error:
                return ValidationResult(ok=False, reason=str(error), kind=kind)
            vocab = file_vocab if file_vocab is not None else self.vocab_size
        else:
            model, vocab = self.model, self.vocab_size
        return validate(
            path, model=model, vocab_size=vocab, full=False,
            min_size_bytes=self.ckpt.min_size_bytes, allow_vocab_growth=finetune, trust_base=self.ckpt.trust_base,
        )

    def _quarantine(self, source: str, path: Path, reason: str) -> None:
        if self.dry_run:
            self._add(source, path, "rejected", f"{reason} (would be quarantined)")
            return
        try:
            target = layout.quarantine(path, reason)
        except OSError as error:
            self._add(source, path, "rejected", f"{reason} (could not quarantine: {error.strerror or error})")
            return
        log.warning("quarantined %s -> %s: %s", path, target.name, reason)
        self._add(source, target, "quarantined", reason)
        self.seen[path] = self.candidates[-1]

    def _note_leftovers(self) -> None:
        uses_run = any(s in self.chain for s in ("resume", "best", "last", "latest"))
        if not uses_run:
            return
        for entry in layout.scan(self.ckpt_dir).temporary:
            self._add("resume" if "resume" in self.chain else "latest", entry.path, "skipped",
                      "temporary folder of an unfinished save (never a candidate)")

    # --- bookkeeping ----------------------------------------------------------------------------

    def _add(self, source: str, path, status: Status, reason: str) -> None:
        candidate = Candidate(source, None if path is None else str(path), status, reason)
        self.candidates.append(candidate)
        if path is not None and status in ("rejected", "quarantined") and isinstance(path, Path):
            self.seen.setdefault(path, candidate)

    def _explicit_failed(self, message: str):
        if self.ckpt.fallback:
            return None
        self._fail(f"{message} (set ckpt.fallback=true to continue down the chain instead)")

    def _fail(self, message: str):
        raise ResolutionError(message, self.candidates, self.purpose, self.chain)


def _expand_custom(path: Path) -> list[Path]:
    """The checkpoint(s) a ``ckpt.path`` names, in the order to try them."""
    if path.is_file():
        if path.name == MODEL_FILENAME and (path.parent / METADATA_FILENAME).is_file():
            return [path.parent]  # model.pt of one of our checkpoints: validate the whole folder
        return [path]
    if (path / METADATA_FILENAME).exists() or path.name.startswith(layout.TEMP_PREFIX):
        return [path]
    found = layout.scan(layout.checkpoints_dir(path))
    if found.numbered:
        return [entry.path for entry in found.numbered]
    if (path / MODEL_FILENAME).is_file():
        return [path]  # our layout without metadata.json: validation says it is incomplete
    files = [p for p in path.iterdir() if p.is_file() and p.suffix in (".pt", ".safetensors", ".pth", ".ckpt")]

    def order(p: Path):
        numbered = _UPSTREAM_NUMBERED.match(p.name)
        if p.stem == "model_last":
            return (2, 0, "")
        if numbered:
            return (1, int(numbered.group(1)), "")
        return (0, p.stat().st_mtime, p.name)

    return sorted(files, key=order, reverse=True)


def _vocab_beside(path: Path, kind: str) -> Optional[Path]:
    vocab = path / VOCAB_FILENAME if kind == "f5app" else path.with_name(VOCAB_FILENAME)
    return vocab if vocab.is_file() else None


def _sidecar_metadata(path: Path) -> Optional[CheckpointMetadata]:
    """Exports carry the source's metadata beside the weights as ``<file>.metadata.json``."""
    record = read_export_record(path) if path.is_file() else None
    return record.source if record is not None else None


def _model_or(recorded, default: Optional[ModelConfig]) -> Optional[ModelConfig]:
    if not isinstance(recorded, dict):
        return default
    try:
        return to_settings(recorded, ModelConfig)
    except Exception:  # an older or hand-edited record: the configured model decides
        return default


def _family_note(shapes, model: Optional[ModelConfig]) -> str:
    """For a file that records no model: which presets its shapes fit, when more than the one used.

    F5TTS_Base (v0) and F5TTS_v1_Base have the same shapes, so the configured ``model=`` decides
    and a wrong one raises nothing and just sounds worse (NOTES.md): say so where it is chosen."""
    names = matching_presets(shapes, model_presets())
    if len(names) < 2:
        return ""
    used = f"model={model.name}" if model is not None else "the configured model"
    note = f"; shapes fit {' and '.join(f'model={n}' for n in names)} alike (v0 and v1 share shapes), loaded as {used}"
    log.warning("%s", note[2:])
    return note


def _chosen_reason(result: ValidationResult, metadata: Optional[CheckpointMetadata], best_metric: Optional[str] = None) -> str:
    parts = [f"valid ({', '.join(result.checks)})"]
    if metadata is not None:
        parts.append(f"update {metadata.update}")
        val_loss = metadata.metrics.value("val_loss")
        if val_loss is not None:
            parts.append(f"val_loss {val_loss:.4g}")
        if best_metric is not None:
            value = metadata.metrics.value(best_metric)
            parts.append(f"best by {best_metric}" + (f" {value:.4g}" if value is not None else ""))
    return ", ".join(parts)
