"""A real uvicorn server on a free loopback port, in a thread of the test process (used by the serve
tests and scripts/bench.py's serve section)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from f5app.config import CkptConfig, ServeConfig, ServerConfig, VocoderConfig
from f5app.inference.synthesizer import Synthesizer
from infer_fixtures import tiny_model_config, tiny_run_checkpoint
from train_fixtures import free_port  # noqa: F401  (test modules take it from here with the other serve helpers)


def tiny_serve_settings(run_dir: Path, nfe_step: int = 4, **server: Any) -> ServeConfig:
    """The tiny run behind a server with ``server`` overrides (ServerConfig fields)."""
    return ServeConfig(
        run_name=run_dir.name, run_dir=str(run_dir), model=tiny_model_config(), ckpt=CkptConfig(name="auto"),
        vocoder=VocoderConfig(name="griffinlim", n_iter=4), device="cpu", nfe_step=nfe_step, progress=False,
        server=replace(ServerConfig(), **server),
    )


@dataclass
class Running:
    url: str
    engine: Any
    server: Any  # uvicorn.Server


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run with one tiny checkpoint: what a test server loads."""
    run = tmp_path_factory.mktemp("runs") / "voice"
    tiny_run_checkpoint(run, update=2)
    return run


@pytest.fixture(scope="module")
def synth(run_dir) -> Synthesizer:
    return Synthesizer.from_config(tiny_serve_settings(run_dir), run_dir)


@contextlib.contextmanager
def running_server(settings: ServeConfig, synthesizer: Any = None, transcribe: Any = None) -> Iterator[Running]:
    """Serve ``settings``; ``synthesizer`` (shared between servers to save loading) or load one.

    Without a synthesizer the model loads in the background, as ``f5app.serve`` does.
    """
    import uvicorn

    from f5app.serve import build, load_into

    app, engine = build(settings, transcribe=transcribe)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=settings.server.shutdown_timeout)
    web = uvicorn.Server(config)
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if synthesizer is not None:
        engine.attach(synthesizer)
    else:
        threading.Thread(target=load_into, args=(engine, settings), daemon=True).start()
    deadline = time.monotonic() + 30
    while not web.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", engine, web)
    finally:
        web.should_exit = True
        thread.join(30)
        engine.close()
        sock.close()




def server_process(command: list[str], cwd: Path, env: dict[str, str], log: Path):
    """``f5app.serve`` (or a shell running it) as a real process; its output goes to ``log``."""
    import subprocess

    with open(log, "w") as sink:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)


def wait_healthy(url: str, process: Any, log: Path, timeout: float = 120) -> None:
    """Until ``url``/health answers 200; fails with the server's log if it exits or takes too long."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"the server exited {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never became healthy:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_title(url: str, profile: Path, done: tuple[str, ...], timeout: float = 90) -> str:
    """Open ``url`` in headless Chromium until its page title starts with one of ``done``; the last title.

    Pages report their outcome in ``document.title``, which the DevTools HTTP endpoint lists (no
    websocket client needed).
    """
    import httpx

    browser = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--autoplay-policy=no-user-gesture-required",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    title = ""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not title.startswith(done):
            time.sleep(0.2)
            port_file = profile / "DevToolsActivePort"
            if not port_file.is_file() or not port_file.read_text().strip():
                continue
            port = port_file.read_text().split()[0]
            try:
                pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            except (httpx.TransportError, ValueError):
                continue
            title = next((p["title"] for p in pages if p.get("url", "").startswith(url.split("?")[0].rstrip("/"))), "")
    finally:
        browser.terminate()
        browser.wait(30)
    return title
