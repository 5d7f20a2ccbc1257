"""scripts/bench.py's lora section, smoke-tested on the tiny model (the real run uses f5tts_v1_small)."""

from __future__ import annotations

import json

import pytest

from tests.test_bench import run_bench


@pytest.mark.slow
def test_lora_section_measures_both_methods_and_the_voices_and_fills_its_rows(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("--only", "lora", "--lora-model", "tiny", "--lora-updates", "1", "--repeats", "1",
                     "--json", str(out), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads(out.read_text())
    lora = results["lora"]
    assert "training" not in results and lora["model"] == "tiny"
    assert 0 < lora["trainable"]["lora"] < lora["trainable"]["full"] == lora["parameters"]
    assert lora["checkpoint_bytes"]["lora"] < lora["checkpoint_bytes"]["full"]
    assert lora["updates_ratio"] == lora["updates_per_s"]["lora"] / lora["updates_per_s"]["full"]
    voices = lora["voices"]
    assert voices["one"]["voices"] == 1 and voices["many"]["voices"] == 3
    assert voices["many"]["adapter_mib"][0] < voices["many"]["base_mib"] and voices["switch_ms"] > 0
    goals = {goal["measure"].split(":")[-1].strip(): goal["goal"] for goal in results["goals"]}
    assert {"peak RSS (tiny)": "<= 0.6x", "checkpoint size": "<= 0.05x"}.items() <= goals.items()
    assert results["table"] in done.stdout
