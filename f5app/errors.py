"""Turning expected failures (bad input, refused checkpoints) into one clear line, not a traceback."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


class UserError(Exception):
    """Something the user can fix; its message says what and how."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError, FileNotFoundError]
    for module, name in (
        ("f5app.data.prepare", "DataError"),
        ("f5app.ckpt.resolve", "ResolutionError"),
        ("f5app.ckpt.adapt", "WeightsMismatch"),
        ("f5app.ckpt.adapt", "UnreadableWeights"),
        ("f5app.ckpt.hub", "PretrainedUnavailable"),
        ("f5app.ckpt.store", "CheckpointSaveError"),
        ("f5app.training.lock", "RunLockedError"),
        ("f5app.inference.synthesizer", "InferenceInputError"),
    ):
        found = getattr(sys.modules.get(module), name, None)
        if isinstance(found, type):
            types.append(found)
    return tuple(types)


@contextlib.contextmanager
def exit_on_user_error(log: logging.Logger, status: int = 2, *, reraise: bool = False) -> Iterator[None]:
    """Known failures print ``error: <message>`` and exit with ``status``; anything else propagates.

    ``reraise`` (Hydra multirun): print the line, then re-raise so Hydra marks this one job
    failed and goes on with the others, instead of the whole sweep exiting.
    """
    try:
        yield
    except Exception as error:
        if not isinstance(error, _user_error_types()):
            raise
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        if reraise:
            raise
        raise SystemExit(status) from None
