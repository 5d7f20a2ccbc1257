"""scripts/bench.py's prepare section, smoke-tested on two short recordings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_prepare_section_measures_every_step_memory_and_wer(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--only", "prepare", "--prepare-minutes", "0.25,0.5",
         "--json", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads(out.read_text())
    section = results["prepare"]
    assert (section["short"], section["long"]) == ("0.25", "0.5")
    for run in section["runs"].values():
        assert run["input_seconds"] >= 60 * run["minutes"] and run["clips"] >= 2
        assert 0 < run["peak_rss_mib"] < 4096 and 0 <= run["wer"] < 0.3 and run["wer_clips"] >= 1
        for step in ("read", "segment", "normalise", "transcribe", "review", "all"):
            assert run["steps"][step]["realtime"] > 0 and run["steps"][step]["cached"] == 0
    assert section["rss_growth"] == section["runs"]["0.5"]["peak_rss_mib"] / section["runs"]["0.25"]["peak_rss_mib"]
    goals = [goal["goal"] for goal in results["goals"]]
    assert goals == [">= 5x", "< 1.5 GiB", "flat (<= 1.15x)"]
    assert "| prepare data=recordings, 0.5 min recording, all steps (asr=tiny_en) |" in done.stdout
