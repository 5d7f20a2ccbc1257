"""The training side of the data: a seeded train/validation split, a soundfile-backed dataset
of mel spectrograms, deterministic frame-budget batching, and collation into padded tensors.

Unlike upstream's ``DynamicBatchSampler``, :class:`FrameBatches` never drops a clip: one longer
than the frame budget becomes a batch of its own, and a set smaller than one batch is one batch.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from f5app.audio.io import read_audio
from f5app.config import MelConfig
from f5app.data.prepare import PreparedData
from f5app.data.split_groups import read_groups
from f5app.files import write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    """One row of raw.arrow."""

    audio_path: str
    text: list[str]  # tokens, as upstream stores them
    duration: float  # seconds


def read_clips(prepared_dir: Path) -> list[Clip]:
    """Every row of ``raw.arrow`` (upstream's ArrowWriter stream format), in file order."""
    import pyarrow as pa  # deferred: datasets.arrow_writer costs 1.5 s (-X importtime, shared machine); only writing a prepared set needs it

    with pa.memory_map(str(prepared_dir / "raw.arrow")) as source:
        table = pa.ipc.open_stream(source).read_all()
    columns = table.to_pydict()
    return [
        Clip(path, list(text), float(duration))
        for path, text, duration in zip(columns["audio_path"], columns["text"], columns["duration"])
    ]


def mel_frames(duration: float, mel: MelConfig) -> int:
    """Mel frames for a clip of ``duration`` seconds after resampling (centred STFT: n // hop + 1)."""
    samples = math.ceil(duration * mel.target_sample_rate - 1e-6)
    return samples // mel.hop_length + 1


class SpeechDataset(Dataset):
    """Items ``{"mel": FloatTensor (n_mels, frames), "text": list[str] tokens}``.

    Audio is read with soundfile, mixed to mono, resampled to ``mel.target_sample_rate`` and
    turned into upstream's mel spectrogram. Mels are cached per instance (small data sets).
    """

    def __init__(self, clips: list[Clip], mel: MelConfig):
        self.clips = list(clips)
        self.mel = mel
        self._mel_spec: Any = None
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.clips)

    def frame_len(self, index: int) -> int:
        return mel_frames(self.clips[index].duration, self.mel)

    def frame_lens(self) -> list[int]:
        return [self.frame_len(index) for index in range(len(self))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clips[index]
        if index not in self._cache:
            self._cache[index] = self._compute_mel(clip.audio_path)
        return {"mel": self._cache[index], "text": clip.text}

    def _compute_mel(self, audio_path: str) -> torch.Tensor:
        wav, _ = read_audio(audio_path, target_sr=self.mel.target_sample_rate, mono=True)
        with torch.no_grad():
            mel = self._mel_module()(torch.from_numpy(wav).unsqueeze(0))
        return mel.squeeze(0).float()

    def _mel_module(self):  # noqa: ANN202
        if self._mel_spec is None:
            # f5_tts.model's package import costs seconds; only the first item pays it
            from f5_tts.model.modules import MelSpec

            self._mel_spec = MelSpec(
                n_fft=self.mel.n_fft,
                hop_length=self.mel.hop_length,
                win_length=self.mel.win_length,
                n_mel_channels=self.mel.n_mel_channels,
                target_sample_rate=self.mel.target_sample_rate,
                mel_spec_type=self.mel.mel_spec_type,
            )
        return self._mel_spec


def load_splits(
    prepared: PreparedData, mel: MelConfig, val_fraction: float, val_min_items: int, seed: int
) -> tuple[SpeechDataset, SpeechDataset]:
    """Split the prepared set into (train, validation) and record the split in ``split.json``.

    The split is :func:`record_split`'s; this wraps each side in a :class:`SpeechDataset`.
    """
    clips, train_indices, val_indices = record_split(prepared, val_fraction, val_min_items, seed)
    train = SpeechDataset([clips[i] for i in train_indices], mel)
    val = SpeechDataset([clips[i] for i in val_indices], mel)
    log.info("data split: %d training clips, %d validation clips (seed %d)", len(train), len(val), seed)
    return train, val


def record_split(
    prepared: PreparedData, val_fraction: float, val_min_items: int, seed: int
) -> tuple[list[Clip], list[int], list[int]]:
    """``(clips, train indices, validation indices)`` of the prepared set, recorded in ``split.json``.

    A clip's side depends only on ``seed`` and its audio path (ranked by a hash), so the split is
    reproducible and adding clips to metadata.csv moves few existing clips across. Validation gets
    ``max(val_min_items, round(n * val_fraction))`` clips, leaving at least one for training; a
    one-clip set uses that clip for both (with a warning). Preparation (data=recordings) and
    training call this alike, so the held-out clips a review lists are the ones training holds out.

    Clips that share audio (listed in ``split_groups.json`` beside the metadata.csv, which
    data=recordings writes from its duplicate search) go wholly to one side: a group is held out
    only when all of it fits, so no held-out speech is ever also trained on.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"data.val_fraction={val_fraction} must be in [0, 1)")
    if val_min_items < 0:
        raise ValueError(f"data.val_min_items={val_min_items} must be >= 0")
    clips = read_clips(prepared.dir)
    if not clips:
        raise ValueError(f"{prepared.dir / 'raw.arrow'} holds no clips; prepare the data set again")

    count = len(clips)
    if count == 1:
        warnings.warn(
            f"the data set in {prepared.dir} has a single clip: it serves as both training and validation data",
            stacklevel=2,
        )
        train_indices, val_indices = [0], [0] if val_min_items or val_fraction else []
    else:
        wanted = max(val_min_items, round(count * val_fraction))
        val_count = min(wanted, count - 1)
        if val_count < wanted:
            warnings.warn(
                f"validation wants {wanted} of {count} clips; using {val_count} so training keeps one",
                stacklevel=2,
            )
        val_indices = _held_out(clips, val_count, seed, _read_groups(prepared))
        train_indices = sorted(set(range(count)) - set(val_indices))

    _write_split(prepared.dir, clips, train_indices, val_indices, val_fraction, val_min_items, seed)
    return clips, train_indices, val_indices


def _held_out(clips: list[Clip], val_count: int, seed: int, groups: list[list[str]]) -> list[int]:
    """Validation indices: clips (or whole groups of clips that share audio) in hash order while they fit."""
    index_of = {str(Path(clip.audio_path).resolve()): i for i, clip in enumerate(clips)} if groups else {}
    unit_of: dict[int, list[int]] = {}
    for group in groups:
        members = sorted({index_of[path] for path in group if path in index_of})
        for member in members:
            unit_of[member] = members
    val: list[int] = []
    placed: set[int] = set()
    for i in sorted(range(len(clips)), key=lambda i: _rank(seed, clips[i].audio_path)):
        if len(val) >= val_count:
            break
        unit = unit_of.get(i, [i])
        if i in placed:
            continue
        placed.update(unit)
        if len(val) + len(unit) <= val_count:
            val.extend(unit)
    return sorted(val)


def _read_groups(prepared: PreparedData) -> list[list[str]]:
    return read_groups(Path(prepared.metadata_path).parent) if prepared.metadata_path is not None else []


def _rank(seed: int, audio_path: str) -> str:
    return hashlib.sha256(f"{seed}\0{audio_path}".encode()).hexdigest()


def _write_split(
    folder: Path, clips: list[Clip], train: list[int], val: list[int], val_fraction: float, val_min_items: int, seed: int
) -> None:
    record = {
        "seed": seed,
        "val_fraction": val_fraction,
        "val_min_items": val_min_items,
        "train": train,
        "val": val,
        "val_audio": [clips[i].audio_path for i in val],
    }
    # every process of a launch writes the same content; write-then-rename keeps readers safe
    write_json_atomic(folder / "split.json", record)


class FrameBatches:
    """Batches of dataset indices under a budget of mel frames, reshuffled per epoch.

    Clips are sorted by length (ties by index) and packed greedily while the batch stays within
    ``frames_per_batch`` frames and ``max_samples`` clips (0 means no cap). A clip longer than
    the budget is a batch of its own (warned once). The packing is fixed; ``for_epoch`` only
    shuffles the batch order, seeded by ``seed`` and the epoch.
    """

    def __init__(self, frame_lens: list[int], frames_per_batch: int, max_samples: int, seed: int):
        if frames_per_batch <= 0:
            raise ValueError(f"frames_per_batch={frames_per_batch} must be positive (data.frames_per_gpu)")
        if max_samples < 0:
            raise ValueError(f"max_samples={max_samples} must be >= 0 (0 means no cap; data.max_samples)")
        if not frame_lens:
            raise ValueError("cannot batch an empty data set")
        self.seed = seed
        self.batches = self._pack(list(frame_lens), frames_per_batch, max_samples)

    @staticmethod
    def _pack(frame_lens: list[int], budget: int, max_samples: int) -> list[list[int]]:
        batches: list[list[int]] = []
        batch: list[int] = []
        frames = 0
        oversized = 0
        for index in sorted(range(len(frame_lens)), key=lambda i: (frame_lens[i], i)):
            length = frame_lens[index]
            if length > budget:
                oversized += 1
                if batch:
                    batches.append(batch)
                batches.append([index])
                batch, frames = [], 0
                continue
            if batch and (frames + length > budget or (max_samples and len(batch) >= max_samples)):
                batches.append(batch)
                batch, frames = [], 0
            batch.append(index)
            frames += length
        if batch:
            batches.append(batch)
        if oversized:
            warnings.warn(
                f"{oversized} clip(s) are longer than the batch budget of {budget} mel frames; each is "
                "trained as a batch of its own (raise data.frames_per_gpu or lower data.max_duration)",
                stacklevel=3,
            )
        return batches

    def __len__(self) -> int:
        return len(self.batches)

    def for_epoch(self, epoch: int) -> list[list[int]]:
        order = list(range(len(self.batches)))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        return [list(self.batches[i]) for i in order]


def collate(items: list[dict[str, Any]], vocab_map: dict[str, int]) -> dict[str, torch.Tensor]:
    """``{"mel": (b, frames, n_mels) zero-padded, "mel_lengths": (b,), "text": (b, n) ids padded -1}``.

    Tokens missing from ``vocab_map`` become id 0 (upstream's convention: the space slot).
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    mels = [item["mel"].transpose(0, 1) for item in items]  # (frames, n_mels) each
    mel_lengths = torch.tensor([mel.shape[0] for mel in mels], dtype=torch.long)
    mel = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True, padding_value=0.0)
    token_ids = [
        torch.tensor([vocab_map.get(token, 0) for token in item["text"]], dtype=torch.long) for item in items
    ]
    text = torch.nn.utils.rnn.pad_sequence(token_ids, batch_first=True, padding_value=-1)
    return {"mel": mel.float(), "mel_lengths": mel_lengths, "text": text}
