"""How a server (f5app.serve, the studio) listens: the API-key rule for its address, and signals
that end it cleanly. Who may call it once it listens is serving/guard.py's.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import threading

from f5app.config import ServerConfig
from f5app.errors import UserError

log = logging.getLogger("f5app.serve")


class ServeSettingsError(UserError):
    """A server setting that cannot work as given."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine. Stricter than the guard's
    ``is_loopback_name`` for Host headers: a bound ``*.localhost`` name resolves through /etc/hosts."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def api_key_for(server: ServerConfig) -> str | None:
    """The key callers must send; refuses to listen beyond this machine without one."""
    key = server.api_key or os.environ.get(server.api_key_env) or None
    if key is not None and len(key) < 8:
        raise ServeSettingsError(f"the API key is {len(key)} characters; use at least 8 (server.api_key or ${server.api_key_env})")
    if key is None and not is_loopback(server.host):
        raise ServeSettingsError(
            f"server.host={server.host} is reachable from other machines: set an API key first "
            f"({server.api_key_env}=... or server.api_key=...), or keep server.host=127.0.0.1"
        )
    return key


@contextlib.contextmanager
def signals_end_the_server_cleanly():
    """uvicorn re-raises the SIGTERM/SIGINT it caught once its graceful shutdown is done, to the
    handler that was there before it; with Python's defaults that kills the process (status -15)
    or raises KeyboardInterrupt. This handler takes the signal instead, so a stop exits 0."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda number, frame: log.info("stopped by signal %d", number)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
