"""A weights fingerprint: the same hash for the same weights whatever the file format or key prefix.

sha256 over, for each canonical name in sorted order: the name, the dtype, the shape and the
tensor's bytes in C order. Casting to another dtype changes it (the weights are not the same
numbers any more); renaming keys, changing container or storage layout does not.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping

from f5app.ckpt.keys import canonicalize

if TYPE_CHECKING:
    from torch import Tensor


def weights_fingerprint(state: Mapping[str, "Tensor"]) -> str:
    """64 hex characters; ``state`` may use any known key layout (it is canonicalised first)."""
    import torch  # deferred: torch costs 1.9 s (NOTES.md); the ckpt CLI's fast paths never load it

    canonical, _ = canonicalize(state)
    digest = hashlib.sha256()
    for name in sorted(canonical):
        tensor = canonical[name].detach().cpu().contiguous()
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{tuple(tensor.shape)}\0"
        digest.update(header.encode("utf-8"))
        # Raw bytes through a uint8 view: works for every dtype, including bfloat16 that numpy lacks.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
