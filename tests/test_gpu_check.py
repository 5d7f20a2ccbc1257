"""scripts/gpu_check.sh runs on the CPU at tiny size, so the one prepared GPU run cannot rot before a GPU is lent."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_writes_its_json_and_table_and_resume_is_bit_identical(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "scripts/gpu_check.sh"), "--device", "cpu", "--model", "tiny", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["resume"]["bit_identical"] and report["resume"]["tensors"] > 10
    row = report["inference"]["nfe"]["7"]
    assert set(row) >= {"upstream", "fp32", "bf16", "bf16+compile"}
    assert row["fp32"]["mel_rel_diff_vs_fp32"] == 0.0 and 0 < row["bf16"]["mel_rel_diff_vs_fp32"] < 0.1
    assert all(math.isfinite(row[k]["rtf"]) and row[k]["rtf"] > 0 for k in ("upstream", "fp32", "bf16"))
    assert 0 < report["inference"]["ttfa"]["ratio"] < 1 and report["inference"]["long_text"]["chunks"] > 1
    training = report["training"]["training"]
    assert training["same_batches"] and set(training["variants"]) == {"f5app", "upstream"}
    table = (tmp_path / "gpu_check.md").read_text()
    assert "exact resume on cpu" in table and "upstream infer_process" in table and table.strip() in done.stdout
