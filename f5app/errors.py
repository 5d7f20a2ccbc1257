"""Expected failures end in one line and a documented exit status, never a traceback.

Every entry point exits with:
  0  done
  1  error: something went wrong that the user did not cause (a traceback says where)
  2  bad input or a refused checkpoint: a :class:`UserError`, whose message says what to fix
  3  stopped by a signal (SIGTERM, Ctrl-C); training saves a checkpoint first, so running the
     same command again resumes
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Optional

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_STOPPED = 0, 1, 2, 3


class UserError(Exception):
    """Something the user can fix; its message says what and how."""


def first_line(error: BaseException, limit: int | None = None, default: str | None = None) -> str:
    """The first non-empty line of ``error``'s message (at most ``limit`` characters), or
    ``default`` (its type's name unless given) when the message is empty.

    Libraries put a summary on the first line and details (stack dumps, hints) after it; one line
    is what fits a log line, a table cell or an HTTP error body. Never raises, whatever the message.
    """
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(error).__name__ if default is None else default


class MetadataError(ValueError):
    """A metadata file that cannot be used as a whole: a checkpoint's ``metadata.json`` that is not
    an f5app record, or a data set's ``metadata.csv`` that is missing or has the wrong header (not
    a single bad row). The message names the file and why."""


#: What counts as bad input: a UserError, or a file the user named that does not exist.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)


class StopSignal(KeyboardInterrupt):
    """SIGTERM outside training (which handles its own signals): code that cleans up after
    Ctrl-C cleans up after it too."""


@contextlib.contextmanager
def exit_on_user_error(log: logging.Logger, status: int = EXIT_BAD_INPUT, *, reraise: bool = False) -> Iterator[None]:
    """Known failures print ``error: <message>`` and exit with ``status``; anything else propagates.

    ``reraise`` (Hydra multirun): print the line, then re-raise so Hydra marks this one job
    failed and goes on with the others, instead of the whole sweep exiting.
    """
    try:
        yield
    except USER_ERRORS as error:
        log.error("%s", error)
        print(f"error: {error}", file=sys.stderr)
        if reraise:
            raise
        raise SystemExit(status) from None


def run_entry_point(prog: str, body: Callable[[], Optional[int]], bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run an entry point's ``body`` and return its exit status (see the module docstring).

    ``body`` returns a status or None (0). UserErrors (and ``bad_input``, e.g. a config error)
    become one line and 2; Ctrl-C and SIGTERM become 3; anything else propagates (a traceback, 1).
    """
    restore = _raise_on_sigterm()
    try:
        status = body()
    except KeyboardInterrupt:
        print(f"{prog}: stopped by a signal", file=sys.stderr)
        return EXIT_STOPPED
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except bad_input as error:
        cause = error.__cause__  # Hydra wraps the OmegaConf error that names the key
        detail = f"\n{cause}" if cause is not None and str(cause) not in str(error) else ""
        print(f"error: {error}{detail}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        restore()
    return EXIT_OK if status is None else status


def _raise_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM raise :class:`StopSignal`; returns what puts the previous handler back."""

    def _stop(signum: int, frame: Optional[FrameType]) -> None:
        raise StopSignal()

    try:
        previous = signal.signal(signal.SIGTERM, _stop)
    except ValueError:  # not the main thread: leave signals alone
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
