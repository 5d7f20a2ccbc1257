"""docs/serving.md's commands, run as written in a folder holding what they name.

Each fenced block is preceded by a marker saying how to run it:
``<!-- docs-test: server -->`` (started in the background; the test waits for /health and stops
it with SIGTERM, which must end it with status 0), ``client`` (bash, every command must succeed
against the servers started so far), ``python`` (a Python snippet), ``fails 2`` (must exit 2).
The only change is the port: F5APP_PORT (the server's default port) is set to a free loopback
port, and 8000 in the text becomes that port.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from infer_fixtures import tiny_run_checkpoint, upstream_ref_wav
from serve_fixtures import free_port, server_process, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "serving.md"
BLOCK = re.compile(r"<!-- docs-test: (?P<kind>[a-z0-9 ]+) -->\s*```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed (scripts/test.sh installs it)")]


def blocks() -> list[tuple[str, str]]:
    return [(m["kind"], m["body"]) for m in BLOCK.finditer(DOC.read_text())]


def test_every_command_block_is_marked_for_the_test():
    fenced = re.findall(r"```(?:bash|python)\n", DOC.read_text())
    assert len(blocks()) == len(fenced) >= 6


def test_the_commands_of_docs_serving_md_work_as_written(tmp_path):
    tiny_run_checkpoint(tmp_path / "outputs" / "runs" / "demo", update=2)
    tiny_run_checkpoint(tmp_path / "outputs" / "runs" / "my_voice", update=2)
    wav, sr = sf.read(upstream_ref_wav(), dtype="float32")
    sf.write(tmp_path / "my_voice.wav", wav, sr)
    ports = {"8000": str(free_port())}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("F5APP_API_KEY", None)
    env["F5APP_PORT"] = ports["8000"]
    servers: dict[str, subprocess.Popen] = {}

    def with_ports(text: str) -> str:
        return re.sub(r"\b8000\b", ports["8000"], text)

    def stop(port: str) -> None:
        process = servers.pop(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, (tmp_path / f"serve-{port}.log").read_text()[-3000:]

    try:
        for kind, body in blocks():
            script = with_ports(body)
            if kind == "server":
                command = script.strip()
                port = re.search(r"server\.port=(\d+)", command)
                port = port.group(1) if port else ports["8000"]
                if port in servers:
                    stop(port)
                assignments, program = re.fullmatch(r"((?:\w+=\S+\s+)*)(.*)", command, re.S).groups()
                log = tmp_path / f"serve-{port}.log"
                servers[port] = server_process(["bash", "-c", f"{assignments}exec {program}"], tmp_path, env, log)  # exec: SIGTERM reaches python
                wait_healthy(f"http://127.0.0.1:{port}", servers[port], log)
            elif kind == "client":
                done = subprocess.run(["bash", "-euo", "pipefail", "-c", script.replace("curl -s ", "curl -sSf ")],
                                      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            elif kind == "python":
                done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
                assert done.returncode == 0, done.stderr[-3000:]
            elif kind.startswith("fails "):
                done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
                assert done.returncode == int(kind.split()[1]), done.stderr[-3000:]
                assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
            else:
                pytest.fail(f"unknown docs-test marker {kind!r}")
        for port in list(servers):
            stop(port)
    finally:
        for process in servers.values():
            process.kill()

    assert sf.info(tmp_path / "hello.wav").samplerate == 24000 and sf.info(tmp_path / "mine.wav").frames > 0
    assert sf.info(tmp_path / "seeded.flac").format == "FLAC" and (tmp_path / "hello.pcm").stat().st_size > 0
    assert not (tmp_path / "outputs" / "runs" / "my_voice" / "voices" / "my_voice").exists()  # uploaded, then deleted
