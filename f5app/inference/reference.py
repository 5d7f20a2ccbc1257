"""The reference voice, prepared once for every caller (infer, serve's configured and uploaded voices,
eval, best_of): read at any rate and channel count, edge silence trimmed, transcribed when no
transcript is given, cut at a word when too long (the transcript cut at the same word), and judged.

    preparer = ReferencePreparer(ReferenceConfig(check=True), AsrConfig(name="tiny_en"), SpeakerConfig())
    prepared = preparer.prepare("me.flac", None, 24000, max_seconds=12.0)   # PreparedReference
    prepared.reference.wav, prepared.reference.text, prepared.problems, prepared.to_dict()

The ASR (``asr=``), the speaker model (``speaker=``) and DNSMOS load on first use, so a short
reference with its transcript and ``check`` off loads none of them.

**The cut.** The ASR's word timestamps give the pauses between words. The given transcript is
aligned with the ASR's words (both through the WER normalisation of f5app/speech/text.py,
then difflib's longest matching blocks); a boundary counts only when the words on both sides of
it are matched, so the audio and the text are cut at the same word. Only the part of a pause
before ``max_seconds`` counts. A boundary with a pause beats one without, then one in the second
half of the allowed length beats an earlier one, then the longest pause (up to ``min_cut_pause``),
then the latest; the audio is cut at the quietest 10 ms of that pause. No aligned boundary: the reference is refused, never used with a
transcript that says more or less than the audio.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from f5app.audio.io import AudioFileError, read_audio
from f5app.config import AsrConfig, ReferenceConfig, SpeakerConfig, bundled_asr
from f5app.inference.errors import InferenceInputError
from f5app.speech.asr import Transcriber, Word, build_transcriber
from f5app.speech.quality import Dnsmos, QualityModelUnavailable, levels, speaker_spread
from f5app.speech.speaker import SpeakerEmbedder, build_embedder
from f5app.speech.text import normalize, score

log = logging.getLogger(__name__)

#: Upstream clips references to 12 s: longer prompts leave too little of the ~22 s window for new speech.
MAX_REFERENCE_SECONDS = 12.0
_SILENCE_DBFS = -42.0
_WINDOW_SECONDS = 0.01
TAIL_SILENCE_SECONDS = 0.05
#: Shorter gaps between Whisper's word timestamps are words said edge to edge, not a pause.
_MIN_PAUSE_SECONDS = 0.08


class ReferenceRefused(InferenceInputError):
    """A reference that cannot be used: no transcript to align, no speech, or (uploads) a failed check."""


@dataclass(frozen=True)
class Reference:
    wav: np.ndarray  # mono float32 at sample_rate
    sample_rate: int
    text: str
    path: Path

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate


@dataclass(frozen=True)
class PreparedReference:
    """A reference ready for synthesis, with what was done to it and how it was judged."""

    reference: Reference
    text_source: str  # given | transcribed
    original_seconds: float  # as read, before trimming
    trimmed_seconds: float  # edge silence removed
    heard: Optional[str] = None  # the ASR's transcript of the clip (before any cut); None: not transcribed
    wer: Optional[float] = None  # given text against ``heard``
    cut: Optional[dict[str, Any]] = None  # {"at_seconds", "kept_words", "dropped_words"} when cut
    quality: dict[str, Any] = field(default_factory=dict)  # levels, dnsmos, speakers (check on)
    problems: tuple[str, ...] = ()  # why the reference is bad; empty: good (or not checked)

    def to_dict(self) -> dict[str, Any]:
        return {
            "transcript": self.reference.text,
            "transcript_source": self.text_source,
            "heard": self.heard,
            "wer": None if self.wer is None else round(self.wer, 4),
            "seconds": round(self.reference.seconds, 3),
            "original_seconds": round(self.original_seconds, 3),
            "trimmed_seconds": round(self.trimmed_seconds, 3),
            "cut": self.cut,
            "quality": self.quality,
            "problems": list(self.problems),
        }

    def log_summary(self, name: str) -> None:
        quality = self.quality
        parts = [f"{self.reference.seconds:.1f} s", f"transcript ({self.text_source}) {self.reference.text!r}"]
        if self.wer is not None:
            parts.append(f"ASR heard {self.heard!r} (WER {self.wer:.2f})")
        if self.cut:
            parts.append(f"cut from {self.original_seconds:.1f} s at {self.cut['at_seconds']:.2f} s after the word {self.cut['last_word']!r}")
        if "levels" in quality:
            lv = quality["levels"]
            parts.append(f"peak {lv['peak_dbfs']:.1f} dBFS, rms {lv['rms_dbfs']:.1f} dBFS, clipped {lv['clipped_fraction']:.4f}")
        if "dnsmos" in quality:
            parts.append(f"DNSMOS ovrl {quality['dnsmos']['ovrl']:.2f} sig {quality['dnsmos']['sig']:.2f} bak {quality['dnsmos']['bak']:.2f}")
        if "speakers" in quality:
            parts.append(f"speaker spread {quality['speakers']['spread']:.2f}")
        log.info("reference %s: %s", name, "; ".join(parts))
        for problem in self.problems:
            log.warning("reference %s: %s", name, problem)


class ReferencePreparer:
    """The one reference preparation; its models are built on first use and kept."""

    def __init__(self, settings: ReferenceConfig, asr: AsrConfig, speaker: SpeakerConfig | None = None, device: str = "cpu"):
        self.settings = settings
        self.asr = asr
        self.speaker = None if speaker is None or speaker.name == "none" else speaker
        self.device = device
        self._transcriber: Optional["Transcriber"] = None
        self._embedder: Optional["SpeakerEmbedder"] = None
        self._dnsmos: Optional["Dnsmos"] = None

    # ------------------------------------------------------------ models, on first use
    def transcriber(self) -> "Transcriber":
        if self._transcriber is None:
            self._transcriber = build_transcriber(self.asr, device=self.device)
        return self._transcriber

    def embedder(self) -> Optional["SpeakerEmbedder"]:
        if self._embedder is None and self.speaker is not None:
            self._embedder = build_embedder(self.speaker, device=self.device)
        return self._embedder

    def dnsmos(self) -> "Dnsmos":
        if self._dnsmos is None:
            self._dnsmos = Dnsmos()
        return self._dnsmos

    # ------------------------------------------------------------ the preparation
    def prepare(
        self, path: str | Path, text: str | None, sample_rate: int, max_seconds: float = MAX_REFERENCE_SECONDS,
        *, check: Optional[bool] = None,
    ) -> PreparedReference:
        """Read, trim, transcribe if needed, cut at a word if too long, judge (``check``: default the setting's)."""
        path = Path(path).expanduser()
        check = self.settings.check if check is None else check
        try:
            wav, _ = read_audio(path, target_sr=sample_rate, mono=True)
        except AudioFileError as exc:
            raise InferenceInputError(f"reference audio: {exc}") from None
        original = len(wav) / sample_rate
        wav = trim_silence_edges(wav, sample_rate)
        trimmed = original - len(wav) / sample_rate
        if len(wav) == 0:
            raise ReferenceRefused(f"reference audio {path} is silent; choose a clip with speech")
        given = (text or "").strip()
        too_long = len(wav) > max_seconds * sample_rate
        heard = None
        wer = None
        words: list["Word"] = []
        problems: list[str] = []
        if not given or too_long or check:
            transcript = self.transcriber().transcribe(wav, sample_rate, language=self.asr.language, word_timestamps=True)
            heard, words = transcript.text, list(transcript.words)
            if not given:
                if not heard.strip():
                    raise ReferenceRefused(f"no speech was recognised in the reference {path}; pass ref_text=\"what it says\"")
                log.info("reference %s: no ref_text given; transcribed with asr=%s: %r", path, self.asr.name, heard)
            elif check:
                wer = score(given, heard, self.asr.language).wer
                if wer > self.settings.max_wer:
                    problems.append(
                        f"ref_text disagrees with what the ASR hears (WER {wer:.2f} > reference.max_wer {self.settings.max_wer:g}): "
                        f"given {given!r}, heard {heard!r}"
                    )
        text_now = given or (heard or "")
        cut = None
        if too_long:
            wav, text_now, cut = cut_at_word(
                wav, sample_rate, text_now, words, max_seconds, self.settings.min_cut_pause, self.asr.language, self.settings.max_wer
            )
            log.info("reference %s is %.1f s; cut to %.1f s after the word %r (the limit is %.0f s); transcript kept: %r",
                     path, original, len(wav) / sample_rate, cut["last_word"], max_seconds, text_now)
        quality: dict[str, Any] = {}
        if check:
            quality, found = self.judge(wav, sample_rate)
            problems += found
        padded = np.concatenate([wav, np.zeros(int(TAIL_SILENCE_SECONDS * sample_rate), dtype=np.float32)])
        return PreparedReference(
            reference=Reference(wav=padded, sample_rate=sample_rate, text=text_now, path=path),
            text_source="given" if given else "transcribed",
            original_seconds=original,
            trimmed_seconds=trimmed,
            heard=heard,
            wer=wer,
            cut=cut,
            quality=quality,
            problems=tuple(problems),
        )

    def judge(self, wav: np.ndarray, sample_rate: int) -> tuple[dict[str, Any], list[str]]:
        """Level, clipping, DNSMOS and speaker spread of ``wav``, and the problems the thresholds find."""
        s = self.settings
        problems: list[str] = []
        lv = levels(wav)
        quality: dict[str, Any] = {"levels": lv.to_dict()}
        if lv.clipped_fraction > s.max_clipped_fraction:
            problems.append(f"clipped: {lv.clipped_fraction:.4f} of the samples are at full scale (reference.max_clipped_fraction {s.max_clipped_fraction:g})")
        if lv.peak_dbfs > s.max_peak_dbfs:
            problems.append(f"too loud: peak {lv.peak_dbfs:.1f} dBFS (reference.max_peak_dbfs {s.max_peak_dbfs:g})")
        if lv.rms_dbfs < s.min_rms_dbfs:
            problems.append(f"too quiet: {lv.rms_dbfs:.1f} dBFS RMS (reference.min_rms_dbfs {s.min_rms_dbfs:g})")
        try:
            mos = self.dnsmos().score(wav, sample_rate)
        except QualityModelUnavailable as error:
            log.warning("DNSMOS skipped: %s", error)
        else:
            quality["dnsmos"] = mos.to_dict()
            if mos.ovrl < s.min_dnsmos:
                problems.append(f"noisy or distorted: DNSMOS overall {mos.ovrl:.2f} (reference.min_dnsmos {s.min_dnsmos:g}; "
                                f"signal {mos.sig:.2f}, background {mos.bak:.2f})")
        embedder = self.embedder()
        if embedder is not None:
            spread = speaker_spread(embedder, wav, sample_rate, s.speaker_window)
            quality["speakers"] = spread.to_dict()
            if spread.spread > s.max_speaker_spread:
                problems.append(f"more than one speaker: speaker spread {spread.spread:.2f} across {spread.windows} windows "
                                f"(reference.max_speaker_spread {s.max_speaker_spread:g})")
        return quality, problems


def default_preparer() -> ReferencePreparer:
    """No checks; the bundled tiny.en (loaded only when needed) transcribes or cuts a reference.
    What a Synthesizer built without a config (tests, the Python API) uses."""
    return ReferencePreparer(ReferenceConfig(check=False), bundled_asr())


# ---------------------------------------------------------------------- the cut at a word


def cut_at_word(
    wav: np.ndarray, sample_rate: int, text: str, words: list["Word"], max_seconds: float, min_pause: float,
    language: str | None, max_wer: float = 0.5,
) -> tuple[np.ndarray, str, dict[str, Any]]:
    """``(audio, transcript, record)`` cut after the same word in both; :class:`ReferenceRefused` when impossible.

    A boundary also needs the kept transcript to agree with the words heard before it (WER at
    most ``max_wer``): one shared word ("the") does not make two texts the same.
    """
    text_words = text.split()
    heard_words = [w.text for w in words]
    boundaries = aligned_boundaries(text_words, heard_words, language)
    candidates = []
    for asr_index, text_index in boundaries:
        kept_text, kept_heard = " ".join(text_words[: text_index + 1]), " ".join(heard_words[: asr_index + 1])
        if score(kept_text, kept_heard, language).wer > max_wer:
            continue
        end = words[asr_index].end
        following = words[asr_index + 1].start if asr_index + 1 < len(words) else len(wav) / sample_rate
        # Only the part of the pause inside the allowed length counts: Whisper's word ends are
        # often early by 0.1-0.2 s, so a cut just after a word's stated end can clip its last sound.
        pause = min(following, max_seconds) - end
        if end <= max_seconds and pause >= 0 and end > 0.5:
            candidates.append((quietest_point(wav, sample_rate, end, end + pause), pause, asr_index, text_index))
    if not candidates:
        heard = " ".join(w.text for w in words)
        raise ReferenceRefused(
            f"the reference is {len(wav) / sample_rate:.1f} s (over max_ref_seconds={max_seconds:g}) and its transcript "
            f"cannot be matched to the words heard before {max_seconds:g} s, so it cannot be cut at a word: given {text!r}, "
            f"heard {heard!r}. Pass a clip under {max_seconds:g} s with its exact transcript"
        )
    # A pause first (Whisper often puts words edge to edge: cutting there clips sounds), then the
    # second half of the allowed length, then the longest pause up to min_pause, then the latest.
    at, pause, asr_index, text_index = max(
        candidates, key=lambda c: (c[1] >= _MIN_PAUSE_SECONDS, c[0] >= max_seconds / 2, min(c[1], min_pause), c[0])
    )
    kept = trim_silence_edges(wav[: int(at * sample_rate)], sample_rate)
    record = {
        "at_seconds": round(at, 3),
        "pause_seconds": round(pause, 3),
        "last_word": text_words[text_index],
        "kept_words": text_index + 1,
        "dropped_words": len(text_words) - text_index - 1,
    }
    return kept, " ".join(text_words[: text_index + 1]), record


def quietest_point(wav: np.ndarray, sample_rate: int, start: float, end: float) -> float:
    """The middle of the quietest 10 ms window between ``start`` and ``end`` seconds (their middle if shorter)."""
    if end - start < 2 * _WINDOW_SECONDS:
        return (start + end) / 2
    levels = _window_levels_dbfs(wav[int(start * sample_rate) : int(end * sample_rate)], sample_rate)
    return start + (int(np.argmin(levels)) + 0.5) * _WINDOW_SECONDS


def aligned_boundaries(text_words: list[str], heard_words: list[str], language: str | None) -> list[tuple[int, int]]:
    """``(heard word index, text word index)`` pairs after which both sequences can be cut together.

    Each word is normalised on its own (``6`` -> ``six``), so a word may become several tokens.
    A boundary counts when the last token of the heard word and the last token of the text word
    are matched to each other and are the last tokens of their words, and the next tokens (if
    both go on) are matched to each other too.
    """
    def tokens(words: list[str]) -> tuple[list[str], list[int], list[bool]]:
        out, owner, last = [], [], []
        for index, word in enumerate(words):
            pieces = normalize(word, language).split()
            for k, piece in enumerate(pieces):
                out.append(piece)
                owner.append(index)
                last.append(k == len(pieces) - 1)
        return out, owner, last

    text_tokens, text_owner, text_last = tokens(text_words)
    heard_tokens, heard_owner, heard_last = tokens(heard_words)
    matcher = difflib.SequenceMatcher(None, heard_tokens, text_tokens, autojunk=False)
    pair: dict[int, int] = {}
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            pair[block.a + offset] = block.b + offset
    boundaries = []
    for h, t in pair.items():
        if not (heard_last[h] and text_last[t]):
            continue
        if h + 1 < len(heard_tokens) and t + 1 < len(text_tokens) and pair.get(h + 1) != t + 1:
            continue  # (where the text ends, the audio may go on: the text described its beginning)
        if h + 1 == len(heard_tokens) and t + 1 != len(text_tokens):
            continue  # the audio ends here, the text does not
        boundaries.append((heard_owner[h], text_owner[t]))
    return boundaries


def _window_levels_dbfs(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    window = max(1, int(_WINDOW_SECONDS * sample_rate))
    count = len(wav) // window
    if count == 0:
        return np.full(1, 20 * np.log10(np.sqrt(np.mean(wav**2)) + 1e-12))
    frames = wav[: count * window].reshape(count, window)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-12)


def trim_silence_edges(wav: np.ndarray, sample_rate: int, threshold_dbfs: float = _SILENCE_DBFS) -> np.ndarray:
    """Drop leading and trailing 10 ms windows quieter than ``threshold_dbfs`` (upstream: pydub at -42 dBFS)."""
    loud = np.flatnonzero(_window_levels_dbfs(wav, sample_rate) > threshold_dbfs)
    if len(loud) == 0:
        return wav[:0]
    window = max(1, int(_WINDOW_SECONDS * sample_rate))
    return wav[loud[0] * window : min(len(wav), (loud[-1] + 1) * window)]
