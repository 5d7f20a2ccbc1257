"""Preemption: SIGTERM, SIGINT and SIGUSR1 (SLURM's warning) ask the loop to checkpoint and stop.

The handler only sets a flag; the loop checks it at update boundaries, agrees on it across
processes (any process signalled stops all of them), saves once and exits with
:data:`EXIT_PREEMPTED` so schedulers and scripts can tell "stopped early, resume me" apart from
success (0) and failure (1).
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_PREEMPTED = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopRequest:
    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.signal_name = signal.Signals(signum).name

    def install(self) -> "StopRequest":
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. some launchers): leave signals alone
                pass
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
