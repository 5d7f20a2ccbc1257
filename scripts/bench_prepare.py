"""The ``prepare`` section of scripts/bench.py: ``data=recordings`` on a short and a long recording.

Both recordings are made by ``f5app.data.recordings.example`` (f5-tts's human speech over and over,
with pauses, noise and level changes, 44.1 kHz stereo FLAC), written block by block to disk. Each
is prepared from scratch by ``python -m f5app.prepare data=recordings ... asr=tiny_en`` in a child
process whose peak RSS is its own (bench.py's RSS launcher). The pipeline's own timings
(``review.json``) give each step's speed in seconds of recording per wall second; the transcripts are
scored against the words the recordings are known to hold.

Goals (issue 13): at least 5x real time over all steps with the tiny ASR on two cores; peak memory
under 1.5 GiB on an hour, flat in the length (10 min vs 60 min).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

MINUTES = {"quick": (1.0, 3.0), "full": (10.0, 60.0)}
STEPS = ("read", "segment", "normalise", "transcribe", "review")
GIB = 1024.0


def bench_prepare(quick: bool, minutes: str | None, work: Path, logs: Path, with_rss_report: Callable, run_timed: Callable,
                  env: dict[str, str]) -> dict[str, Any]:
    """``minutes``: "SHORT,LONG" (e.g. "0.25,0.5" for a smoke test); default by ``quick``."""
    from f5app.data.recordings import example

    root = Path(__file__).resolve().parent.parent
    short, long = (float(x) for x in minutes.split(",")) if minutes else MINUTES["quick" if quick else "full"]
    runs: dict[str, Any] = {}
    for minutes in (short, long):  # noqa: B020
        folder = work / "prepare" / f"{minutes:g}min"
        started = time.perf_counter()
        utterances = example.write(folder / "recording.flac", example.looped(minutes, seed=int(minutes)), sample_rate=44100, channels=2)
        made_s = time.perf_counter() - started
        report = work / "prepare" / f"{minutes:g}min.rss"
        # data.speaker=all: the recording is four of f5-tts's voices, and the benchmark times every clip's path
        command = [sys.executable, "-m", "f5app.prepare", "data=recordings", f"data.path={folder}", "asr=tiny_en", "data.speaker=all",
                   "progress=false"]
        wall, status = run_timed(with_rss_report(command, report), cwd=root, env=env, log=logs / "prepare.log")
        if status != 0:
            raise RuntimeError(f"prepare of the {minutes:g}-minute recording failed (status {status}); see {logs / 'prepare.log'}")
        review = json.loads((folder / "f5app_clips" / "review.json").read_text(encoding="utf-8"))
        runs[f"{minutes:g}"] = {
            "minutes": minutes,
            "input_seconds": review["summary"]["input_seconds"],
            "made_in_s": made_s,
            "process_wall_s": wall,
            "process_realtime": review["summary"]["input_seconds"] / wall,
            "peak_rss_mib": int(report.read_text()) / 1024,
            "clips": review["summary"]["clips"],
            "dropped": review["summary"]["dropped_by_reason"],
            "steps": {name: {key: review["steps"][name][key] for key in ("seconds", "cpu_seconds", "realtime", "realtime_cpu", "items", "cached")}
                      for name in (*STEPS, "all")},
            **word_error_rate(review["clips"], utterances),
        }
        print(f"  prepare {minutes:g} min: {runs[f'{minutes:g}']['steps']['all']['realtime']:.1f}x real time, "
              f"peak {runs[f'{minutes:g}']['peak_rss_mib']:.0f} MiB, WER {runs[f'{minutes:g}']['wer']:.3f}", file=sys.stderr)
    small, big = runs[f"{short:g}"], runs[f"{long:g}"]
    return {"runs": runs, "short": f"{short:g}", "long": f"{long:g}", "rss_growth": big["peak_rss_mib"] / small["peak_rss_mib"]}


def word_error_rate(clips: list[dict[str, Any]], utterances: list) -> dict[str, Any]:  # noqa: ANN001 (example.Utterance)
    """Corpus WER of the clips whose every utterance has known words (the clip's text against them, in order)."""
    from f5app.speech.text import score

    errors = words = scored = 0
    for clip in clips:
        inside = [u for u in utterances if min(clip["end"], u.end) - max(clip["start"], u.start) > 0.5 * (u.end - u.start)]
        if not inside or any(u.text is None for u in inside):
            continue
        result = score(" ".join(u.text for u in inside), clip["text"], "en")
        errors += result.substitutions + result.deletions + result.insertions
        words += result.reference_words
        scored += 1
    return {"wer": errors / words if words else float("nan"), "wer_clips": scored, "wer_words": words}


def table_rows(results: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Rows for bench.py's table, as the fields of its ``Row``."""
    if not results:
        return []
    long = results["runs"][results["long"]]
    short = results["runs"][results["short"]]
    realtime = long["steps"]["all"]["realtime"]
    rows = [
        {"measure": f"prepare data=recordings, {results['long']} min recording, all steps (asr=tiny_en)", "ours": f"{realtime:.1f}x real time",
         "baseline": "1x (real time)", "ratio": realtime, "goal": ">= 5x", "met": realtime >= 5},
    ]
    cpu = long["steps"]["all"]["realtime_cpu"]
    rows.append({"measure": "  same, per second of CPU time (what a busy shared machine does not inflate)", "ours": f"{cpu:.1f}x real time",
                 "baseline": f"{long['steps']['all']['cpu_seconds']:.0f} CPU s", "ratio": None, "goal": "info", "met": None})
    for name in STEPS:
        step = long["steps"][name]
        speed = f"{step['realtime']:.1f}x (CPU {step['realtime_cpu']:.1f}x)" if step["realtime"] and step["realtime_cpu"] else "-"
        rows.append({"measure": f"  step {name}: real time, wall (per CPU second)", "ours": speed,
                     "baseline": f"{step['seconds']:.1f} s", "ratio": None, "goal": "info", "met": None})
    rows += [
        {"measure": "  whole process (start, imports, model loads included)", "ours": f"{long['process_realtime']:.1f}x real time",
         "baseline": f"{long['process_wall_s']:.0f} s", "ratio": None, "goal": "info", "met": None},
        {"measure": f"prepare peak RSS, {results['long']} min recording (MiB)", "ours": f"{long['peak_rss_mib']:.0f}",
         "baseline": f"{1.5 * GIB:.0f} (1.5 GiB)", "ratio": long["peak_rss_mib"] / (1.5 * GIB), "goal": "< 1.5 GiB",
         "met": long["peak_rss_mib"] < 1.5 * GIB},
        {"measure": f"  peak RSS {results['long']} min vs {results['short']} min", "ours": f"{long['peak_rss_mib']:.0f} MiB",
         "baseline": f"{short['peak_rss_mib']:.0f} MiB", "ratio": results["rss_growth"], "goal": "flat (<= 1.15x)",
         "met": results["rss_growth"] <= 1.15},
        {"measure": f"  WER of the transcripts vs the known words ({long['wer_clips']} clips, {long['wer_words']} words)",
         "ours": f"{long['wer']:.3f}", "baseline": "", "ratio": None, "goal": "info", "met": None},
    ]
    return rows
