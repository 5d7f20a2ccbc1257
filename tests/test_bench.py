"""scripts/bench.py, smoke-tested on its cheapest section (resolution over tiny checkpoints)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench.py"


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_resolution_section_writes_the_table_and_json_with_both_resolvers_agreeing(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("--only", "resolve", "--repeats", "1", "--big-gib", "0.01", "--json", str(out), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr[-3000:]

    results = json.loads(out.read_text())
    assert {"command", "mode", "device", "machine", "load_average_start", "load_average_end", "resolution", "goals", "table"} <= set(results)
    assert "training" not in results  # --only limits the run to the sections named
    for cache in ("warm", "cold"):
        section = results["resolution"][cache]
        assert {"f5app_s", "naive_s", "speedup", "f5app_peak_growth_mib", "naive_peak_growth_mib", "same_choice", "chosen"} <= set(section)
        assert section["same_choice"] and section["chosen"] == "update_00000016"  # newest valid, past the corrupt ones
        assert section["f5app_s"] > 0 and section["speedup"] == section["naive_s"] / section["f5app_s"]
    assert results["resolution"]["checkpoints"] == 20
    assert [goal["goal"] for goal in results["goals"]] == [">= 100x faster", ">= 100x faster", "< 100 MB"]
    assert results["table"] in done.stdout and results["table"].startswith("| measure | f5app | baseline | ratio | goal | met |")


def test_an_unknown_section_is_a_one_line_usage_error():
    done = run_bench("--only", "resolve,warp")
    assert done.returncode == 2
    assert "unknown section(s) warp" in done.stderr


@pytest.mark.slow  # a server worker process and ~40 requests
def test_serve_section_measures_streaming_latency_throughput_and_batching(tmp_path):
    out = tmp_path / "bench.json"
    done = run_bench("--quick", "--only", "serve", "--repeats", "1", "--json", str(out), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr[-3000:]

    serve = json.loads(out.read_text())["serve"]
    assert 0 < serve["first_byte_s"] < serve["stream_total_s"]  # the first audio comes before the stream ends
    assert serve["first_byte_ratio"] == serve["first_byte_s"] / serve["full_response_s"]
    assert serve["server_overhead_ratio"] == serve["full_response_s"] / serve["direct_s"]
    assert sorted(serve["throughput"]) == ["1", "2", "4"]
    for clients, row in serve["throughput"].items():
        assert row["requests"] == 2 * int(clients) and row["requests_per_s"] > 0 and row["audio_seconds_per_s"] > 0
        assert row["p50_s"] <= row["p95_s"]
    assert serve["long_text"]["chunks"] >= 2
    measures = [goal["measure"] for goal in json.loads(out.read_text())["goals"]]
    assert any("first audio byte" in m for m in measures) and any("Synthesizer.generate" in m for m in measures)


@pytest.mark.slow  # two training worker processes
def test_training_at_size_compares_f5app_and_upstream_on_the_same_batches_with_mfu(tmp_path):
    # the real-size comparison (scripts/bench_train.py) run on the tiny model: the path a GPU check calls.
    # Upstream trains whole epochs, so at least the updates asked for are timed, both sides the same.
    out = tmp_path / "bench.json"
    done = run_bench("--only", "train", "--model", "tiny", "--train-variants", "f5app,upstream", "--train-updates", "1",
                     "--json", str(out), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stderr[-3000:]

    training = json.loads(out.read_text())["training"]
    assert training["same_batches"] and training["dtype"] == "float32" and training["precision"] == "no"
    ours, theirs = training["variants"]["f5app"], training["variants"]["upstream"]
    assert sorted(ours["batches"]) == sorted(theirs["batches"]) and ours["model_flops"] > 0 and theirs["model_flops"] > 0
    for row in (ours, theirs):
        assert row["updates"] >= 1 and row["mfu"] == row["flops_per_s"] / row["matmul_peak_flops"] and 0 < row["mfu"] < 1
        assert row["peak_rss_mib"] > 0
    assert training["updates_ratio"] == ours["updates_per_s"] / theirs["updates_per_s"]
    assert "training tiny (cpu, fp32) updates/s vs upstream Trainer, same batches" in done.stdout
