"""The training batches of a run with ``data.replay``: the main set's frame batches, each joined by
its share of replay clips (the sets are prepared by f5app/data/replay.py).

- A share is of a batch's mel frames, not of its clips: upstream's flow-matching loss is a mean over
  masked frames, so the frame share is the replay set's weight in every update. The main set is
  packed into ``1 - total share`` of the frame budget ``data.frames_per_gpu`` (and of
  ``data.max_samples``), and each batch is topped up with replay clips to its share, so a batch
  stays within about a replay clip of the budget.
- Replay clips come from an endless stream per set: passes over the set, each in an order seeded by
  (``data.seed``, the set's place in the list, the pass). What the first batches of a run take
  decides where the stream stands, so the stream's position is a function of (epoch, batch in
  epoch), which every checkpoint already holds: a resume continues exactly where the interrupted
  run was, with any number of processes, and needs no state of its own.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from f5app.config import DataConfig, MelConfig, ReplayConfig
from f5app.data.dataset import Clip, FrameBatches, SpeechDataset, mel_frames, read_clips
from f5app.data.prepare import PreparedData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplaySet:
    clips: list[Clip]
    share: float


class MixedBatches:
    """The main set's frame batches, each joined by clips of every replay set.

    Indices refer to one dataset: the main clips first, then each replay set's in order
    (``starts[s]`` is where source s begins; source 0 is the main set). ``len`` and ``for_epoch`` mean
    what :class:`~f5app.data.dataset.FrameBatches`' do: an epoch is one pass over the main set.

    A batch whose main clips hold M frames takes clips from replay set s's stream until they hold
    ``M * share_s / main_share`` frames, to the nearest clip; what one batch takes too few or too
    many is carried to the next, so a set's share of all frames drawn is its share, and each batch is
    within half a clip of it. A replay set's stream is its clips in passes, each pass in an order
    seeded by (``seed``, the set, the pass): every clip is drawn once before any is drawn again.
    """

    def __init__(self, main_lens: list[int], replays: list[tuple[list[int], float]], frames_per_batch: int, max_samples: int, seed: int):
        if any(not lens for lens, _ in replays):
            raise ValueError("a replay set holds no clips")
        self.main_share = 1 - sum(share for _, share in replays)
        self.seed = seed
        self.main_lens = list(main_lens)
        self.main = FrameBatches(main_lens, _part(frames_per_batch, self.main_share), _cap(max_samples, self.main_share), seed)
        self.replays = [(list(lens), share) for lens, share in replays]
        self.starts = [0]
        for lens in [main_lens, *(lens for lens, _ in replays)]:
            self.starts.append(self.starts[-1] + len(lens))
        # Where each replay stream stands when epoch e begins: [(position, frames owed)] per set.
        self._epoch_starts: list[list[tuple[int, float]]] = [[(0, 0.0)] * len(replays)]
        self._orders: dict[int, tuple[int, list[int]]] = {}  # set -> (pass, its order): the pass being drawn

    def __len__(self) -> int:
        return len(self.main)

    def for_epoch(self, epoch: int) -> list[list[int]]:
        while len(self._epoch_starts) <= epoch:  # a resumed run replays the draws of the epochs before (integers only: fast)
            self._epoch_starts.append(self._draw(len(self._epoch_starts) - 1)[1])
        return self._draw(epoch)[0]

    def _draw(self, epoch: int) -> tuple[list[list[int]], list[tuple[int, float]]]:
        state = list(self._epoch_starts[epoch])
        batches = []
        for batch in self.main.for_epoch(epoch):
            main_frames = sum(self.main_lens[i] for i in batch)
            joined = list(batch)
            for s, (lens, share) in enumerate(self.replays):
                position, owed = state[s]
                target = main_frames * share / self.main_share + owed
                taken = 0
                while True:
                    clip = self._clip_at(s, position)
                    if taken + lens[clip] / 2 >= target:
                        break
                    joined.append(self.starts[s + 1] + clip)
                    taken += lens[clip]
                    position += 1
                state[s] = (position, target - taken)
            batches.append(joined)
        return batches, state

    def _clip_at(self, s: int, position: int) -> int:
        count = len(self.replays[s][0])
        passed, k = divmod(position, count)
        cached = self._orders.get(s)
        if cached is None or cached[0] != passed:
            order = list(range(count))
            random.Random(f"{self.seed}/replay/{s}/{passed}").shuffle(order)
            self._orders[s] = cached = (passed, order)
        return cached[1][k]

    def source_of(self, index: int) -> int:
        """0 for a main clip, s + 1 for a clip of replay set s."""
        return next(s for s in range(len(self.starts) - 1) if index < self.starts[s + 1])



def _part(frames: int, share: float) -> int:
    return max(1, round(frames * share))


def _cap(max_samples: int, share: float) -> int:
    return max(1, round(max_samples * share)) if max_samples else 0


def with_replay(
    train: SpeechDataset, replayed: list[PreparedData], entries: list[ReplayConfig], mel: MelConfig, data: DataConfig
) -> tuple[SpeechDataset, FrameBatches | MixedBatches]:
    """The training dataset and its batches: the main set's alone, or joined by the replay sets."""
    if not replayed:
        return train, FrameBatches(train.frame_lens(), data.frames_per_gpu, data.max_samples, data.seed)
    sets = [ReplaySet(read_clips(prepared.dir), entry.share) for prepared, entry in zip(replayed, entries)]
    batches = MixedBatches(
        train.frame_lens(), [([mel_frames(c.duration, mel) for c in s.clips], s.share) for s in sets], data.frames_per_gpu, data.max_samples, data.seed
    )
    for i, (s, entry) in enumerate(zip(sets, entries)):
        log.info("replay %d: %d clips (%.0f s) from %s, %.0f %% of every batch's frames",
                 i, len(s.clips), sum(c.duration for c in s.clips), entry.path, 100 * s.share)
    return SpeechDataset(train.clips + [clip for s in sets for clip in s.clips], mel), batches
