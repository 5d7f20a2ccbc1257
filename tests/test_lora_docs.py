"""docs/lora.md's tested walk-through, run exactly as written, command by command, as a user runs it.

The commands are taken from the document itself (the ```bash block after the ``<!-- tested``
marker, and the ```python block after the next one), so the documentation cannot drift from what
works. They run from a scratch folder standing in for the repository root: ``f5app`` there is a
link to the package (the commands name ``f5app/assets/demo/...``), and ``outputs/`` is the scratch's.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "lora.md"


def doc_blocks(language: str) -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    return re.findall(r"<!-- tested[^>]*-->\n```" + language + r"\n(.*?)```", text, flags=re.S)


def test_the_walk_through_is_marked_and_complete():
    [commands] = doc_blocks("bash")
    lines = [line for line in commands.splitlines() if line.strip()]
    assert [shlex.split(line)[2] for line in lines] == [
        "f5app.train", "f5app.train", "f5app.ckpt", "f5app.infer", "f5app.ckpt", "f5app.ckpt", "f5app.infer"]
    assert len(doc_blocks("python")) == 1


@pytest.mark.slow
def test_docs_lora_commands_work_exactly_as_written(tmp_path):
    [commands] = doc_blocks("bash")
    [snippet] = doc_blocks("python")
    (tmp_path / "f5app").symlink_to(REPO / "f5app", target_is_directory=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO),
           "F5APP_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    outputs = {}
    for line in (line for line in commands.splitlines() if line.strip()):
        argv = shlex.split(line)
        assert argv[0] == "python"
        done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"`{line}` exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        outputs[line] = done.stdout + done.stderr

    resolve_line = next(line for line in outputs if "ckpt resolve" in line)
    assert re.search(r"base:custom\s+chosen\s+.*fingerprint [0-9a-f]{16}… matches the adapter's", outputs[resolve_line])
    out = tmp_path / "outputs"
    assert (out / "lora_voice.wav").is_file() and (out / "two_voices.wav").is_file()
    assert (out / "lora_voice_merged.safetensors").is_file() and (out / "lora_voice_merged.safetensors.metadata.json").is_file()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "lora_voice_adapter").iterdir()}

    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
