"""Files from the Hugging Face Hub (pretrained weights, vocabularies, vocoders), cache first.

The local cache is tried before any network call, so a cached file costs no request and works
offline; only a miss goes to the Hub (unless ``HF_HUB_OFFLINE`` is set). A file that cannot be
had, or a repository id, file name or revision that is not valid, is one clear line naming the
setting to fix. Every model f5app loads from the Hub comes through :func:`fetch_hub_file`.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from f5app.errors import UserError, first_line


class PretrainedUnavailable(UserError, RuntimeError):
    """The requested Hub file is neither cached nor downloadable right now, or was named wrongly."""


def fetch_pretrained(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Local path of ``filename`` in ``repo_id`` at ``revision`` (branch, tag or commit; default main)."""
    return fetch_hub_file(repo_id, filename, revision, cache_dir, what="pretrained weights", setting="ckpt.filename")


def fetch_vocab(repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Local path of the vocabulary file that goes with pretrained weights."""
    return fetch_hub_file(repo_id, filename, revision, cache_dir, what="pretrained vocabulary", setting="ckpt.vocab_filename")


def check_hub_names(
    repo_id: str, filename: str, revision: str | None = None, *,
    setting: str = "ckpt.filename", repo_setting: str = "ckpt.repo_id", revision_setting: str = "ckpt.revision",
) -> None:
    """Refuse, before any cache or network access, names that are not a Hub repository id, a
    relative file path inside a repository, or a revision (a name with ``..`` segments or an
    absolute path would be joined onto the cache folder)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # deferred: huggingface_hub's download machinery costs 0.9 s (-X importtime) and fixes its cache paths when first imported

    try:
        if not isinstance(repo_id, str):
            raise HFValidationError("no repository id given")
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PretrainedUnavailable(
            f"{repo_setting}={repo_id!r} is not a Hub repository id ({first_line(error)}); write it as ORG/NAME"
        ) from None
    if not isinstance(filename, str) or not _is_relative_path(filename):
        raise PretrainedUnavailable(
            f"{setting}={filename!r} is not a file inside a Hub repository: give a relative path such as "
            "DIR/model.safetensors, without '..' segments"
        )
    if revision is not None and (not isinstance(revision, str) or not _is_relative_path(revision)):
        raise PretrainedUnavailable(
            f"{revision_setting}={revision!r} is not a revision: give a branch, a tag or a commit hash"
        )


def _is_relative_path(name: str) -> bool:
    """Non-empty, no '..' segment, and anchored under neither POSIX nor Windows rules."""
    parts = name.replace("\\", "/").split("/")
    if not name.strip() or ".." in parts or "\0" in name:
        return False
    return not any(p.drive or p.root for p in (PurePosixPath(name), *(PureWindowsPath(part) for part in parts)))


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub itself reads it once, at import)."""
    from huggingface_hub import constants  # deferred: huggingface_hub's download machinery costs 0.9 s (-X importtime) and fixes its cache paths when first imported

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in {"1", "ON", "YES", "TRUE"}


LOCAL_WEIGHTS = "use local weights with ckpt=custom ckpt.path=FILE"


def fetch_hub_file(
    repo_id: str, filename: str, revision: str | None = None, cache_dir: str | None = None, *,
    what: str, setting: str, alternative: str = LOCAL_WEIGHTS, repo_setting: str = "ckpt.repo_id",
) -> Path:
    """Any file from the Hub, cache first; failures are one :class:`PretrainedUnavailable` line that
    names the file, how to fetch it, and ``alternative`` (what to use instead). ``setting`` and
    ``repo_setting`` are the config keys that name the file and the repository."""
    from huggingface_hub import hf_hub_download  # deferred: huggingface_hub's download machinery costs 0.9 s (-X importtime) and fixes its cache paths when first imported
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    check_hub_names(repo_id, filename, revision, setting=setting, repo_setting=repo_setting)
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
        raise PretrainedUnavailable(f"{label}: no such repository on the Hub (or it is private); check {repo_setting}") from error
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
