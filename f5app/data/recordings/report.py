"""The review a person reads: ``review.html`` (every clip playable, with its text and flags), a PNG
of the clip durations, ``review.json`` (the same, for programs), and the vocabulary coverage.

Flags mark what deserves a listen; none of them removes a clip (dropped clips are listed apart,
with the reason). ``unknown_characters`` is measured against the vocabulary the model starts from:
the pretrained one (upstream's ``vocab.txt``) for ``data.tokenizer=char`` and ``pinyin``, the
given file for ``custom``.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from f5app.config import RecordingsDataConfig
from f5app.data.tokenizer import base_vocab_for, extend_vocab, tokens_of_many
from f5app.data.vocab import read_vocab, upstream_vocab_path, write_vocab
from f5app.files import atomic_write, write_json_atomic

REVIEW_HTML = "review.html"
REVIEW_JSON = "review.json"
HISTOGRAM_PNG = "durations.png"
SPEAKERS_HTML = "speakers.html"
SAMPLES_DIR = "speakers"  # one short sample per speaker: speakers/S1.wav, ...
SAMPLE_SECONDS = 4.0  # at most: a sample stays inside its stretch of speech
EXTENDED_VOCAB = "vocab_extended.txt"
MISMATCH_BELOW = 0.5  # agreement between your transcript and the ASR under which a clip is flagged
_HAN = re.compile(r"[\u4e00-\u9fff]")
#: A file's last clip whose speech runs on to less than this before the end of the file, and whose
#: text ends no sentence, was cut off mid-sentence (speech ends 0.2-0.7 s before the end of f5-tts's recordings).
END_SILENCE_SECONDS = 0.1
_SENTENCE_END = re.compile(r"[.!?…。！？]['\"”’»)\]]*\s*$")


def vocabulary_coverage(texts: Sequence[str], data: RecordingsDataConfig, work_dir: Path) -> dict[str, Any]:
    """Characters of ``texts`` the starting vocabulary lacks, and what to do about them."""

    base = base_vocab_for(data) or read_vocab(upstream_vocab_path())
    known = set(base)
    counts = Counter(token for tokens in tokens_of_many(list(texts), data.tokenizer) for token in tokens if token not in known)
    missing = sorted(counts)
    report: dict[str, Any] = {
        "tokenizer": data.tokenizer,
        "vocabulary": data.vocab_path if data.tokenizer == "custom" else "pretrained (upstream vocab.txt)",
        "vocabulary_size": len(base),
        "missing": {token: counts[token] for token in missing},
        "suggestion": "every character is in the vocabulary the model starts from",
        "extended_vocab": None,
    }
    if missing:
        vocab, _ = extend_vocab(base, missing)
        path = write_vocab(vocab, work_dir / EXTENDED_VOCAB)
        report["extended_vocab"] = str(path)
        shown = " ".join(repr(token)[1:-1] for token in missing[:40])
        report["suggestion"] = (
            f"{len(missing)} character(s) are not in the vocabulary the model starts from ({shown}). Fine-tuning "
            "adds them as new, untrained embedding rows; to choose the vocabulary yourself, train with "
            f"data.tokenizer=custom data.vocab_path={path} (that vocabulary plus these characters), or edit the "
            "texts in metadata.csv to avoid them"
        )
        if data.tokenizer != "pinyin" and any(_HAN.search(token) for token in missing):
            report["suggestion"] += "; Chinese text: data.tokenizer=pinyin turns it into the pinyin tokens the pretrained model knows"
    return report


def flags_for(clip: dict[str, Any], data: RecordingsDataConfig, missing: set[str]) -> list[str]:
    flags = []
    if clip.get("confidence") is not None and clip["confidence"] < data.min_confidence:
        flags.append("low_confidence")
    if clip.get("agreement") is not None and clip["agreement"] < MISMATCH_BELOW:
        flags.append("text_mismatch")
    unknown = sorted({ch for ch in clip.get("text", "") if ch in missing})
    if unknown:
        flags.append("unknown_characters " + "".join(unknown))
    if clip["seconds"] > data.max_seconds + 0.01:
        flags.append("too_long")
    if clip["seconds"] < data.min_seconds:
        flags.append("too_short")
    if clip.get("cut") == "words":
        flags.append("cut_between_words")
    elif clip.get("cut") == "forced":
        flags.append("cut_inside_speech")
    if re.search(r"\d", clip.get("text", "")):
        flags.append("digits")  # the model learns to say what is written: write numbers as spoken
    if clip.get("trailing_silence") is not None and clip["trailing_silence"] < END_SILENCE_SECONDS and not _SENTENCE_END.search(clip.get("text", "")):
        flags.append("cut_at_end_of_file")  # the file stops in the middle of a sentence
    for other in clip.get("duplicates") or []:
        flags.append(f"same_audio_as {other['audio_file']} ({other['shared_seconds']:.1f} s)")
    if clip.get("edited"):
        flags.append("edited")
    if clip.get("skipped"):
        flags.append(f"skipped_by_preparation {clip['skipped']}")
    return flags


def write_review(work_dir: Path, review: dict[str, Any]) -> Path:
    """``review.json``, ``durations.png`` and ``review.html`` in ``work_dir``; returns the HTML's path."""
    write_json_atomic(work_dir / REVIEW_JSON, review, durable=False)
    _histogram(work_dir / HISTOGRAM_PNG, [clip["seconds"] for clip in review["clips"]], review["settings"])
    path = work_dir / REVIEW_HTML
    atomic_write(path, _html(review), durable=False)
    atomic_write(work_dir / SPEAKERS_HTML, _speakers_html(review), durable=False)
    return path


def _speakers_html(review: dict[str, Any]) -> str:
    """One row per speaker found: a short sample to listen to, speech time, clips, kept or not."""
    e = html.escape
    chosen = review["settings"].get("speaker")
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>f5app speakers</title><style>",
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
        "font-size:14px}th{background:#eee}.num{text-align:right}audio{height:28px}</style></head><body>",
        f"<h1>Speakers in {e(review['source'])}</h1>",
        f"<p>Ids are ranked by speech time (S1 speaks most) and hold across every file of the folder. "
        f"<code>data.speaker={e(str(chosen))}</code> keeps the speakers marked kept; choose with <code>data.speaker=all</code>, "
        "<code>main</code>, a number N (the N who speak most) or an id below, and run again (nothing is embedded again). "
        f"Overlapping speech is left out whatever you choose. <a href='{REVIEW_HTML}'>Back to the review</a>.</p>",
        "<table><tr><th>speaker</th><th>sample</th><th>speech (s)</th><th>clips</th><th>in metadata.csv</th><th>kept</th></tr>",
    ]
    for row in review.get("speakers", []):
        audio = f"<audio controls preload='none' src='{e(row['sample'])}'></audio>" if row.get("sample") else ""
        place = row.get("sample_from") or {}
        where = f"<br><small>{e(str(place.get('source')))} {place['start']:.2f}-{place['end']:.2f} s</small>" if place else ""
        seconds = "" if row.get("seconds") is None else f"{row['seconds']:.1f}"
        lines.append(f"<tr><td><b>{e(row['speaker'])}</b></td><td>{audio}{where}</td><td class='num'>{seconds}</td>"
                     f"<td class='num'>{row['clips']}</td><td class='num'>{row['kept_clips']}</td><td>{'kept' if row['kept'] else 'left out'}</td></tr>")
    overlaps = sum(1 for clip in review["dropped"] if clip.get("dropped") == "overlapping_speech")
    lines += ["</table>", f"<p>{overlaps} clip(s) of overlapping speech left out (listed in the review).</p>", "</body></html>"]
    return "\n".join(lines) + "\n"


def _histogram(path: Path, durations: list[float], settings: dict[str, Any]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it
    from matplotlib.figure import Figure  # deferred: matplotlib.pyplot costs 1.6 s (-X importtime, shared machine); only plots need it

    figure = Figure(figsize=(7, 3), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    top = max([settings["max_seconds"], *durations]) + 1
    axes.hist(durations, bins=[x * 0.5 for x in range(int(top * 2) + 1)], color="#4a7ab5")
    for limit in (settings["min_seconds"], settings["max_seconds"]):
        axes.axvline(limit, color="#b54a4a", linestyle="--", linewidth=1)
    axes.set_xlabel("clip duration (s)")
    axes.set_ylabel("clips")
    axes.set_title(f"{len(durations)} clips, {sum(durations) / 60:.1f} min (dashed: min_seconds, max_seconds)")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"), durable=False)


def _html(review: dict[str, Any]) -> str:
    e = html.escape
    s = review["summary"]
    lines = [
        "<!doctype html><html><head><meta charset='utf-8'><title>f5app review</title><style>",
        "body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
        "vertical-align:top;font-size:14px}th{background:#eee}.flag{color:#a33}.num{text-align:right}audio{height:28px}</style></head><body>",
        f"<h1>Review of {e(review['source'])}</h1>",
        f"<p>{s['recordings']} recording(s), {s['input_seconds'] / 60:.1f} min of audio: <b>{s['clips']} clips</b> "
        f"({s['clip_seconds'] / 60:.1f} min; {s['train']} for training, {s['val']} held out for validation and evaluation), "
        f"{s['dropped']} dropped, {s['flagged']} flagged. Made by {e(review['asr'])}.</p>",
        f"<p>Edit <code>{e(review['metadata'])}</code> (<code>audio_file|text</code>): change a text, delete a line to leave a clip out, "
        "then run the same command again; your edits are kept (<code>edits.json</code>).</p>",
        f"<p>{len(review.get('speakers', []))} speaker(s) found; <code>data.speaker={e(str(review['settings'].get('speaker')))}</code>. "
        f"<a href='{SPEAKERS_HTML}'>Each speaker's sample, speech time and clips</a>.</p>",
    ]
    if review["problems"]:
        lines.append("<h2>Recordings that gave no clips</h2><ul>")
        lines += [f"<li><b>{e(p['source'])}</b>: {e(p['reason'])}: {e(p['detail'])}</li>" for p in review["problems"]]
        lines.append("</ul>")
    if review.get("orphaned_edits"):
        lines.append(f"<p class='flag'>{len(review['orphaned_edits'])} of your edits are for clips no longer made (other settings); "
                     "they stay in edits.json.</p>")
    v = review["vocabulary"]
    lines += ["<h2>Vocabulary</h2>", f"<p>{e(v['suggestion'])}.</p>"]
    lines += [f"<h2>Clip durations</h2><img src='{HISTOGRAM_PNG}' alt='duration histogram'>"]
    header = "<tr><th>#</th><th>clip</th><th>speaker</th><th>listen</th><th>s</th><th>conf.</th><th>DNSMOS</th><th>split</th><th>flags</th><th>text</th></tr>"
    lines += ["<h2>Clips</h2><table>", header]
    for index, clip in enumerate(review["clips"], 1):
        conf = "" if clip.get("confidence") is None else f"{clip['confidence']:.2f}"
        lines.append(
            f"<tr><td class='num'>{index}</td><td>{e(clip['audio_file'])}<br><small>{e(clip['source'])} "
            f"{clip['start']:.2f}-{clip['end']:.2f} s</small></td><td>{e(clip.get('speaker') or '')}</td>"
            f"<td><audio controls preload='none' src='{e(clip['audio_file'])}'></audio></td>"
            f"<td class='num'>{clip['seconds']:.2f}</td><td class='num'>{conf}</td><td class='num'>{_dnsmos(clip)}</td>"
            f"<td>{e(clip.get('split') or '')}</td>"
            f"<td class='flag'>{e(', '.join(clip['flags']))}</td><td>{e(clip['text'])}{_origin(clip)}</td></tr>"
        )
    lines.append("</table>")
    if review["dropped"]:
        lines += ["<h2>Dropped</h2><table>", "<tr><th>clip</th><th>speaker</th><th>listen</th><th>s</th><th>DNSMOS</th><th>reason</th><th>text</th></tr>"]
        for clip in review["dropped"]:
            audio = f"<audio controls preload='none' src='{e(clip['audio_file'])}'></audio>" if clip.get("audio_file") else ""
            lines.append(
                f"<tr><td>{e(clip['source'])} {clip['start']:.2f}-{clip['end']:.2f} s</td><td>{e(clip.get('speaker') or '')}</td><td>{audio}</td>"
                f"<td class='num'>{clip['seconds']:.2f}</td><td class='num'>{_dnsmos(clip)}</td><td>{e(clip['dropped'])}</td>"
                f"<td>{e(clip.get('text') or '')}</td></tr>"
            )
        lines.append("</table>")
    lines.append("<h2>Steps</h2><table><tr><th>step</th><th>items</th><th>from cache</th><th>wall s</th><th>x real time</th></tr>")
    for name, step in review["steps"].items():
        speed = "" if not step.get("realtime") else f"{step['realtime']:.1f}"
        lines.append(f"<tr><td>{e(name)}</td><td class='num'>{step['items']}</td><td class='num'>{step['cached']}</td>"
                     f"<td class='num'>{step['seconds']:.1f}</td><td class='num'>{speed}</td></tr>")
    lines += ["</table>", f"<h2>Settings</h2><pre>{e(json.dumps(review['settings'], indent=2))}</pre>", "</body></html>"]
    return "\n".join(lines) + "\n"


def _dnsmos(clip: dict[str, Any]) -> str:
    return "" if clip.get("dnsmos") is None else f"{clip['dnsmos']:.2f}"


def _origin(clip: dict[str, Any]) -> str:
    if clip.get("edited"):
        return "<br><small>your text</small>"
    if clip.get("text_source") not in (None, "asr"):
        return f"<br><small>from {html.escape(clip['text_source'])}</small>"
    return ""
