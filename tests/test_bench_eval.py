"""scripts/bench.py's evaluation section, smoke-tested in its quick form (a 20-update demo)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_evaluation_section_measures_costs_speed_and_agreement_with_upstream(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--only", "evaluation", "--repeats", "1", "--json", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    cost = results["evaluation"]["evaluation"]
    assert cost["prompts"] == 2 and cost["train_updates"] == 20 and cost["events_per_run"] == 1
    assert set(cost["seconds_per_prompt"]) == {"synthesis", "asr", "embedding"} and all(v > 0 for v in cost["seconds_per_prompt"].values())
    assert 0 < cost["share_steady"] < cost["share_with_loading"] < 1
    assert 0 < results["evaluation"]["asr_speed"]["beam1"]["rtf"] < 5
    agreement = results["evaluation"]["upstream_wer"]
    assert agreement["files"] == 3 + cost["prompts"]  # the human recordings and the demo model's clips
    rows = {row["wav"]: row for row in agreement["rows"]}
    assert rows["basic_ref_en.wav"]["why"] == "agree" and rows["basic_ref_en.wav"]["ours_wer"] == 0.0
    # main.flac: tiny.en writes "6 spoons"; upstream keeps digits, we write them out (the documented difference)
    assert rows["main.flac"]["ours_wer"] < rows["main.flac"]["upstream_wer"] and rows["main.flac"]["why"].startswith("normalisation")
    assert all(row["why"] == "agree" or row["why"].startswith(("normalisation", "different transcripts")) for row in agreement["rows"])
    assert "evaluation share of demo training wall time" in results["table"]
