"""Pretrained weights and vocabularies from the Hugging Face Hub, cache first.

The local cache is tried before any network call, so a cached file costs no request and works
offline; only a miss goes to the Hub (unless ``HF_HUB_OFFLINE`` is set). A file that cannot be
had is one clear line naming repo, file and revision, and how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path


class PretrainedUnavailable(RuntimeError):
    """The requested Hub file is neither cached nor downloadable right now."""


def fetch_pretrained(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Local path of ``filename`` in ``repo_id`` at ``revision`` (branch, tag or commit; default main)."""
    return fetch_hub_file(repo_id, filename, revision, cache_dir, what="pretrained weights", setting="ckpt.filename")


def fetch_vocab(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Local path of the vocabulary file that goes with pretrained weights."""
    return fetch_hub_file(repo_id, filename, revision, cache_dir, what="pretrained vocabulary", setting="ckpt.vocab_filename")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub itself reads it once, at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


LOCAL_WEIGHTS = "use local weights with ckpt=custom ckpt.path=FILE"


def fetch_hub_file(
    repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None, *,
    what: str, setting: str, alternative: str = LOCAL_WEIGHTS,
) -> Path:
    """Any file from the Hub, cache first; failures are one :class:`PretrainedUnavailable` line that
    names the file, how to fetch it, and ``alternative`` (what to use instead)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # Read at call time: huggingface_hub fixes its default cache when first imported.
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    label = f"{what} {repo_id}/{filename} (revision {revision or 'main'})"
    download = f"hf download {repo_id} {filename}" + (f" --revision {revision}" if revision else "")
    download += f" --cache-dir {cache_dir}" if cache_dir else ""
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True))
    except LocalEntryNotFoundError:
        if hub_offline():
            raise PretrainedUnavailable(
                f"{label} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                f"pre-download it with `{download}` while online, or {alternative}"
            ) from None
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except GatedRepoError as error:
        raise PretrainedUnavailable(f"{label}: the repository is gated; accept its terms on the Hub and log in with `hf auth login`") from error
    except RepositoryNotFoundError as error:
        raise PretrainedUnavailable(f"{label}: no such repository on the Hub (or it is private); check ckpt.repo_id") from error
    except RevisionNotFoundError as error:
        raise PretrainedUnavailable(f"{label}: no such revision on the Hub; check ckpt.revision") from error
    except LocalEntryNotFoundError as error:  # the Hub could not be reached and the cache has nothing
        raise PretrainedUnavailable(
            f"{label} is not cached and the Hub could not be reached: "
            f"pre-download it with `{download}` where the Hub is reachable, or {alternative}"
        ) from error
    except EntryNotFoundError as error:
        raise PretrainedUnavailable(f"{label}: the repository has no such file; check {setting}") from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", "an error")
        raise PretrainedUnavailable(f"{label}: the Hub answered {status}; try again or {alternative}") from error
