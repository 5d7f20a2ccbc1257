"""Who speaks when, measured: many seeded conversations made of f5-tts's shipped voices.

    python scripts/bench_speakers.py --mixtures 40

Each mixture (f5app.data.recordings.example.write_conversation) is 2 or 3 of f5-tts's five
shipped voices taking 7-11 turns (the first two of every three) in a random order, each turn at its own level (0 to -9 dB),
with white noise at 30, 20 or 15 dB SNR, half of them with 3 s of two voices at once. The
speaker step runs as data=recordings runs it (silero-vad regions -> window embeddings ->
clustering -> turns -> clips), without transcription. Prints, per condition and overall:
clip-time accuracy, the share of mixtures whose main speaker's clips hold no other voice,
the share of overlapping speech left out, the speakers found against the truth, and the
speaker step's speed (x real time: recording seconds per second of embedding and clustering).
Then the window scores behind the thresholds (f5app/data/recordings/speakers.py): each window's
cosine with its own voice's centroid and with the nearest other, for one voice and for two at once.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from f5app.config import SpeakerConfig  # noqa: E402
from f5app.data.recordings import example, segment, speakers  # noqa: E402
from f5app.speech.speaker import build_embedder  # noqa: E402

VOICES = ["nature", "stella", "rainbow", "country", "chinese"]
SNRS = [30.0, 20.0, 15.0]
SETTINGS = segment.Settings(min_seconds=2.0, max_seconds=15.0, max_pause_seconds=1.0, pad_seconds=0.25, threshold=0.5)


def diarise(path: Path, vad: segment.Vad, embedder) -> tuple[list[tuple[float, float, str]], float, speakers.Windows, np.ndarray, int]:  # noqa: ANN001
    """The clips of ``path`` with their speaker ids, and the speaker step's seconds."""
    rate = soundfile.info(str(path)).samplerate
    seconds = soundfile.info(str(path)).frames / rate
    probabilities = segment.speech_probabilities(vad, path, rate)
    regions = segment.speech_regions(probabilities, seconds, SETTINGS.threshold)
    started = time.perf_counter()
    windows = speakers.embed_regions(embedder, path, rate, regions)
    found, (found_turns,), (labels,) = speakers.diarise([speakers.Heard(windows, regions, probabilities)])
    elapsed = time.perf_counter() - started
    planned = speakers.plan_turns(found_turns, SETTINGS)
    spans = segment.spans([piece for piece, _ in planned], seconds, SETTINGS)
    clips = [(span.start, span.end, label) for span, (_, label) in zip(spans, planned) if span.dropped is None]
    return clips, elapsed, windows, labels, len(found.centroids)


def window_scores(conversation: example.Conversation, windows: speakers.Windows) -> dict[str, list[tuple[float, float]]]:
    """Per window inside one voice (or inside an overlap): cosine with the nearest true voice's
    centroid, and the second voice's share (speakers.match)."""
    def inside(start: float, end: float, spans: list[example.Utterance]) -> example.Utterance | None:
        return next((u for u in spans if start >= u.start - 0.05 and end <= u.end + 0.05), None)

    centroids = []
    for voice in sorted({u.name for u in conversation.utterances}):
        picked = [i for i in range(len(windows)) if (u := inside(windows.starts[i], windows.ends[i], conversation.utterances)) and u.name == voice]
        if picked:
            centroid = windows.embeddings[picked].mean(axis=0)
            centroids.append(centroid / np.linalg.norm(centroid))
    out: dict[str, list[tuple[float, float]]] = {"one voice": [], "two voices": []}
    if len(centroids) < 2:
        return out
    _, best, share = speakers.match(windows.embeddings, np.stack(centroids))
    for i in range(len(windows)):
        if inside(windows.starts[i], windows.ends[i], conversation.utterances):
            out["one voice"].append((best[i], share[i]))
        elif inside(windows.starts[i], windows.ends[i], conversation.overlaps):
            out["two voices"].append((best[i], share[i]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/bench_speakers.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mixtures", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    vad = segment.Vad()
    embedder = build_embedder(SpeakerConfig(name="resemblyzer"), "cpu")
    rows, scores = [], {"one voice": [], "two voices": []}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.mixtures):
            voices = [VOICES[i] for i in rng.permutation(len(VOICES))[:2 + index % 2]]
            snr = SNRS[int(rng.integers(len(SNRS)))]
            overlap = 3.0 if index % 4 >= 2 else 0.0
            path = Path(folder) / f"mix{index}.wav"
            conversation = example.write_conversation(path, voices, turns=int(rng.choice([7, 9, 11])), seed=args.seed * 1000 + index,
                                                      snr_db=snr, overlap_seconds=overlap)
            clips, elapsed, windows, _, found = diarise(path, vad, embedder)
            score = example.score_clips(conversation, clips)
            for kind, values in window_scores(conversation, windows).items():
                scores[kind] += values
            rows.append({"speakers": len({u.name for u in conversation.utterances}), "snr": snr, "overlap": overlap > 0, "found": found, "seconds": conversation.seconds,
                         "elapsed": elapsed, **score})
            print(f"mixture {index:2d}: {rows[-1]['speakers']} voices {'+'.join(voices):28s} SNR {snr:4.0f} dB overlap {overlap:.0f} s -> "
                  f"found {found}, accuracy {score['accuracy']:.3f}, main pure {score['main_pure']:.0f}, "
                  f"overlap left out {score['overlap_left_out']:.2f}", flush=True)
    print()
    print("| mixtures | n | speakers found right | clip-time accuracy (mean / min) | main set pure | overlap left out (mean / min) | x real time |")
    print("|---|---|---|---|---|---|---|")
    groups = [("2 voices", lambda r: r["speakers"] == 2), ("3 voices", lambda r: r["speakers"] == 3),
              ("with overlap", lambda r: r["overlap"]), *[(f"SNR {s:.0f} dB", lambda r, s=s: r["snr"] == s) for s in SNRS],
              ("all", lambda r: True)]
    for name, keep in groups:
        chosen = [r for r in rows if keep(r)]
        if not chosen:
            continue
        accuracy = [r["accuracy"] for r in chosen]
        overlaps = [r["overlap_left_out"] for r in chosen if r["overlap"]]
        overlap_text = f"{np.mean(overlaps):.3f} / {min(overlaps):.3f}" if overlaps else "-"
        speed = sum(r["seconds"] for r in chosen) / sum(r["elapsed"] for r in chosen)
        print(f"| {name} | {len(chosen)} | {sum(r['found'] == r['speakers'] for r in chosen)}/{len(chosen)} | "
              f"{np.mean(accuracy):.3f} / {min(accuracy):.3f} | {sum(r['main_pure'] for r in chosen):.0f}/{len(chosen)} | "
              f"{overlap_text} | {speed:.1f} |")
    print()
    print("window scores (against the true voices' centroids): cosine with the nearest, and the second voice's share")
    for kind, values in scores.items():
        if values:
            best, share = np.array(values).T
            print(f"  {kind:10s}: {len(values):5d} windows; cosine p1/p5/p50 {np.percentile(best, 1):.2f}/{np.percentile(best, 5):.2f}/"
                  f"{np.median(best):.2f}; share p5/p50/p95/p99 {np.percentile(share, 5):.2f}/{np.median(share):.2f}/"
                  f"{np.percentile(share, 95):.2f}/{np.percentile(share, 99):.2f}")
    print(f"thresholds: MATCH {speakers.MATCH}, MIXED {speakers.MIXED}, SAME_SPEAKER {speakers.SAME_SPEAKER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
