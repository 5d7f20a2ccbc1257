#!/usr/bin/env python
"""Duration benchmark: our rule against upstream's on held-out human speech of known length.

    .venv/bin/python scripts/bench_duration.py [--json out.json]

f5-tts ships four English recordings by four speakers (``basic/basic_ref_en.wav``,
``multi/{main,town,country}.flac``). Each is transcribed once with the bundled tiny.en Whisper
(word timestamps) and cut, at the gaps between words, into held-out targets:

- phrases: runs of words between punctuation or a pause of 0.2 s or more;
- single words (two or more letters): the one-word texts that fail upstream (#1155, #460, #811).

A target's true length is its audio, cut half-way into the gaps around it, with edge silence
trimmed as references are (``f5app.inference.reference.trim_silence_edges``). Its reference is
the longer stretch of the same recording that does not contain it (at least 3 words and 1.5 s),
prepared as inference prepares a reference (trimmed, 50 ms of silence added). Three predictions
of the generated length (the total minus the reference):

- upstream: ``ref_len / ref_bytes * gen_bytes / speed`` with UTF-8 bytes, ``speed=0.3`` under 10
  bytes, on the texts as transcribed (upstream normalises nothing);
- ours, rate from word timestamps (the reference transcribed by tiny.en, as ``speaking_rate=asr``);
- ours, rate from the reference's duration (no ASR: ``speaking_rate=duration``);
  both of ours count the texts after ``text_norm`` (English), as the Synthesizer does ("6" is "six").

Printed: mean absolute error (seconds) per group and ours/upstream ratios (goal <= 0.6), and the
shortest length each rule gives a one-word text (goal >= 0.4 s).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from f5app.audio.io import read_audio  # noqa: E402
from f5app.config import AsrConfig, TextNormConfig  # noqa: E402
from f5app.inference.duration import (  # noqa: E402
    TimedWord,
    rate_from_duration,
    rate_from_words,
    speakable_chars,
    upstream_generated_seconds,
)
from f5app.inference.reference import trim_silence_edges  # noqa: E402
from f5app.inference.text import normalize_ref_text  # noqa: E402
from f5app.text.normalise import build_normaliser  # noqa: E402

RECORDINGS = ("basic/basic_ref_en.wav", "multi/main.flac", "multi/town.flac", "multi/country.flac")
SAMPLE_RATE = 24000
PHRASE_PAUSE = 0.2
TAIL_SECONDS = 0.05  # the silence load_reference appends to a reference
_ENDS_CLAUSE = re.compile(r"[,;:.!?]$")


@dataclass
class Target:
    recording: str
    kind: str  # phrase | word
    text: str
    seconds: float  # true length
    ref_text: str
    ref_wav: np.ndarray  # prepared as load_reference does


def example_path(name: str) -> Path:
    import f5_tts

    return Path(f5_tts.__path__[0]) / "infer/examples" / name


def cut(wav: np.ndarray, start: float, end: float) -> np.ndarray:
    return trim_silence_edges(wav[max(0, int(start * SAMPLE_RATE)) : int(end * SAMPLE_RATE)], SAMPLE_RATE)


def boundaries(words: list[TimedWord], total: float) -> list[float]:
    """Cut points: before word 0, between each pair (half-way into the gap), after the last."""
    return [0.0] + [(a.end + b.start) / 2 for a, b in zip(words, words[1:])] + [total]


def targets_of(name: str, transcriber) -> list[Target]:  # noqa: ANN001
    wav, _ = read_audio(example_path(name), target_sr=SAMPLE_RATE)
    wav = trim_silence_edges(wav, SAMPLE_RATE)
    total = len(wav) / SAMPLE_RATE
    words = [TimedWord(w.text, w.start, w.end) for w in transcriber.transcribe(wav, SAMPLE_RATE, word_timestamps=True).words]
    cuts = boundaries(words, total)
    spans = []  # (first word, last word + 1, kind)
    start = 0
    for index, word in enumerate(words):
        pause_after = index + 1 < len(words) and words[index + 1].start - word.end >= PHRASE_PAUSE
        if _ENDS_CLAUSE.search(word.text) or pause_after or index + 1 == len(words):
            spans.append((start, index + 1, "phrase"))
            start = index + 1
    spans += [(i, i + 1, "word") for i, w in enumerate(words) if speakable_chars(w.text) >= 2]
    found = []
    for first, last, kind in spans:
        before, after = (0, first), (last, len(words))
        ref_first, ref_last = max(before, after, key=lambda s: cuts[s[1]] - cuts[s[0]])
        if ref_last - ref_first < 3 or cuts[ref_last] - cuts[ref_first] < 1.5:
            continue
        ref = cut(wav, cuts[ref_first], cuts[ref_last])
        ref = np.concatenate([ref, np.zeros(int(TAIL_SECONDS * SAMPLE_RATE), dtype=np.float32)])
        target = cut(wav, cuts[first], cuts[last])
        found.append(Target(
            recording=name, kind=kind, text=" ".join(w.text for w in words[first:last]),
            seconds=len(target) / SAMPLE_RATE, ref_text=" ".join(w.text for w in words[ref_first:ref_last]), ref_wav=ref,
        ))
    return found


def predict(target: Target, transcriber, say) -> dict[str, float]:  # noqa: ANN001
    """Upstream counts the text as given; ours counts it as f5app hands it to the model (text_norm=auto)."""
    ref_seconds = len(target.ref_wav) / SAMPLE_RATE
    speech_seconds = ref_seconds - TAIL_SECONDS
    by_duration = rate_from_duration(say(target.ref_text), speech_seconds)
    ref_words = [TimedWord(say(w.text), w.start, w.end)
                 for w in transcriber.transcribe(target.ref_wav, SAMPLE_RATE, word_timestamps=True).words]
    by_words = rate_from_words(ref_words, fallback=by_duration)
    return {
        "upstream": upstream_generated_seconds(ref_seconds, normalize_ref_text(target.ref_text), target.text),
        "ours_asr": by_words.seconds_for(say(target.text)),
        "ours_duration": by_duration.seconds_for(say(target.text)),
    }


RULES = ("upstream", "ours_asr", "ours_duration")


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for group in ("phrase", "word", "all"):
        chosen = [r for r in rows if group == "all" or r["kind"] == group]
        if not chosen:
            continue
        errors = {rule: float(np.mean([abs(r[rule] - r["seconds"]) for r in chosen])) for rule in RULES}
        summary[group] = {
            "clips": len(chosen),
            "mean_seconds": float(np.mean([r["seconds"] for r in chosen])),
            **{f"mae_{rule}": errors[rule] for rule in RULES},
            "ratio_ours_asr": errors["ours_asr"] / errors["upstream"],
            "ratio_ours_duration": errors["ours_duration"] / errors["upstream"],
        }
    words = [r for r in rows if r["kind"] == "word"]
    summary["shortest_one_word"] = {rule: min(r[rule] for r in words) for rule in RULES} if words else {}
    summary["shortest_one_word"]["true"] = min(r["seconds"] for r in words) if words else None
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write every clip's numbers and the summary here")
    args = parser.parse_args()
    from f5app.speech.asr import build_transcriber

    transcriber = build_transcriber(AsrConfig(name="tiny_en", model="bundled", language="en", beam_size=1,
                                              temperature_fallback=False))
    say = build_normaliser(TextNormConfig(language="en")).normalise
    rows = []
    for name in RECORDINGS:
        for target in targets_of(name, transcriber):
            rows.append({"recording": name, "kind": target.kind, "text": target.text, "seconds": target.seconds,
                         "ref_text": target.ref_text, **predict(target, transcriber, say)})
    summary = summarise(rows)
    print(f"{'clips':<8}{'n':>4}{'true s':>8}{'upstream':>10}{'ours asr':>10}{'ours dur':>10}{'asr/up':>8}{'dur/up':>8}")
    for group in ("phrase", "word", "all"):
        s = summary[group]
        print(f"{group:<8}{s['clips']:>4}{s['mean_seconds']:>8.2f}{s['mae_upstream']:>10.3f}{s['mae_ours_asr']:>10.3f}"
              f"{s['mae_ours_duration']:>10.3f}{s['ratio_ours_asr']:>8.2f}{s['ratio_ours_duration']:>8.2f}")
    shortest = summary["shortest_one_word"]
    print("shortest one-word length (s): " + ", ".join(f"{k} {v:.2f}" for k, v in shortest.items()))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "clips": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
