"""Step 4, transcribe: each clip's text, from a transcript you already have or from the ASR.

The ASR is the evaluation's (:mod:`f5app.speech.asr`, the ``asr=`` group: faster-whisper by
Hub id, size name or folder; ``asr=tiny_en`` bundled and offline); its confidence is kept.

A transcript you already have wins over the ASR: ``NAME.txt`` beside ``NAME.wav``, or a line of
a ``metadata.csv`` (``audio_file|text``) in ``data.path``. A recording that gives one clip gets
that text as it is, with no ASR run. A recording cut into several clips has its text shared out
among them (:func:`share_text`): the ASR's words of every clip are lined up with the
transcript's words and each transcript word goes to the clip its matching word is in, so the
words are yours and only their places come from the ASR; ``agreement`` (matched ASR words over
ASR words) shows how well the two fit.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import soundfile

from f5app.audio.io import read_audio
from f5app.config import AsrConfig
from f5app.data.metadata import MetadataError, read_metadata
from f5app.data.recordings.read import Problem, Recording, why_not_read
from f5app.files import read_regular_bytes
from f5app.speech import asr

TRANSCRIBE_VERSION = 1
#: A transcript beside a recording: 16 MiB is a few days of speech.
MAX_TRANSCRIPT_BYTES = 16 * 1024 * 1024
_SENTENCE_END = re.compile(r"[.!?…。！？]['\"”’)\]]*$")


def asr_identity(cfg: AsrConfig) -> dict[str, Any]:
    """What of the ASR settings changes a transcript (the cache key; device and threads do not)."""
    fields = asdict(cfg)
    return {key: fields[key] for key in ("name", "model", "revision", "language", "beam_size", "compute_type")}


class LazyTranscriber:
    """Loads the ASR model the first time a clip needs it, so a fully cached run never does."""

    def __init__(self, cfg: AsrConfig, device: str = "auto"):
        self.cfg = cfg
        self.device = device
        self._transcriber = None

    def get(self):  # noqa: ANN201 (f5app.speech.asr.Transcriber)
        if self._transcriber is None:
            self._transcriber = asr.build_transcriber(self.cfg, device=self.device)
        return self._transcriber

    @property
    def loaded(self) -> bool:
        return self._transcriber is not None


def transcribe_clip(asr: LazyTranscriber, wav: Path) -> dict[str, Any]:
    """The ASR's text, confidence and language for the clip file ``wav``."""

    audio, rate = read_audio(wav, mono=True)
    result = asr.get().transcribe(audio, rate)
    return {"text": result.text, "confidence": round(result.confidence, 4), "language": result.language}


def word_times(asr: LazyTranscriber, decoded: Path, start: float, end: float) -> list[tuple[float, float]]:
    """(start, end) in the recording of each word the ASR hears between ``start`` and ``end`` seconds."""

    info = soundfile.info(str(decoded))
    rate = int(info.samplerate)
    audio, _ = soundfile.read(str(decoded), start=int(start * rate), stop=int(end * rate), dtype="float32")
    result = asr.get().transcribe(audio, rate, word_timestamps=True)
    return [(start + word.start, start + word.end) for word in result.words]


def known_texts(root: Path, recordings: Sequence[Recording], follow_links: bool = False) -> tuple[dict[str, tuple[str, str]], list[Problem]]:
    """``{recording name: (text, where it came from)}`` for recordings that have a transcript.

    Transcript files obey the recordings' rule (:func:`read.why_not_read`): a link out of
    ``data.path`` (unless ``follow_links``), a FIFO or a device is a problem line, never read.
    """
    texts: dict[str, tuple[str, str]] = {}
    problems: list[Problem] = []
    by_path = {recording.path.resolve(): recording for recording in recordings}
    folder = root if root.is_dir() else root.parent
    listing = root / "metadata.csv"
    if root.is_dir() and (listing.exists() or listing.is_symlink()):
        refused = why_not_read(listing, root, root, follow_links)
        try:
            if refused is not None:
                raise MetadataError(refused.detail)
            metadata = read_metadata(root)
        except MetadataError as error:
            problems.append(Problem("metadata.csv", "transcript_file", f"not used: {error}"))
        else:
            for row in metadata.rows:
                recording = by_path.get(row.audio_path)
                if recording is not None:
                    texts[recording.name] = (_one_line(row.text), f"metadata.csv line {row.line}")
    for recording in recordings:
        beside = recording.path.with_suffix(".txt")
        if not (beside.exists() or beside.is_symlink()):
            continue
        refused = why_not_read(beside, folder, folder, follow_links)
        try:
            if refused is not None:
                raise OSError(refused.detail)
            text = _one_line(read_regular_bytes(beside, MAX_TRANSCRIPT_BYTES).decode("utf-8-sig"))
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            problems.append(Problem(recording.name, "transcript_file", f"{beside.name} not used: {reason}"))
            continue
        if text:
            texts[recording.name] = (text, beside.name)
    return texts, problems


def _one_line(text: str) -> str:
    return " ".join(text.split())


def share_text(reference: str, clip_texts: Sequence[str], normalize: Callable[[str], str]) -> list[tuple[str, float]]:
    """Share the words of ``reference`` out among clips whose ASR texts are ``clip_texts``.

    Returns (text, agreement) per clip, in order. Transcript words the ASR missed go with the
    word before them, or with the next clip when they start a sentence.
    """
    words = reference.split()
    keys = [normalize(word) for word in words]
    heard: list[str] = []
    owner: list[int] = []
    for clip, text in enumerate(clip_texts):
        for word in text.split():
            for part in normalize(word).split():
                heard.append(part)
                owner.append(clip)
    # a transcript word may normalise to several (numbers): match on its first
    ref_keys = [key.split()[0] if key else "" for key in keys]
    assigned: list[int | None] = [None] * len(words)
    matched = [False] * len(heard)
    matcher = difflib.SequenceMatcher(None, ref_keys, heard, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for offset in range(i2 - i1):
                assigned[i1 + offset] = owner[j1 + offset]
                matched[j1 + offset] = True
        elif tag == "replace":
            for offset in range(i2 - i1):
                assigned[i1 + offset] = owner[j1 + offset * (j2 - j1) // (i2 - i1)]
    # unmatched transcript words: with the word before, unless that one ends a sentence
    for i in range(len(words)):
        if assigned[i] is not None:
            continue
        before = next((assigned[k] for k in range(i - 1, -1, -1) if assigned[k] is not None), None)
        after = next((assigned[k] for k in range(i + 1, len(words)) if assigned[k] is not None), None)
        starts_sentence = i == 0 or bool(_SENTENCE_END.search(words[i - 1]))
        assigned[i] = (after if starts_sentence and after is not None else before if before is not None else after) or 0
    for i in range(1, len(words)):  # keep the order: a word never goes to an earlier clip than the one before it
        assigned[i] = max(assigned[i], assigned[i - 1])  # type: ignore[type-var]
    shared = []
    for clip in range(len(clip_texts)):
        text = " ".join(word for word, owner_clip in zip(words, assigned) if owner_clip == clip)
        total = sum(1 for o in owner if o == clip)
        good = sum(1 for o, m in zip(owner, matched) if o == clip and m)
        shared.append((text, round(good / total, 4) if total else 0.0))
    return shared
