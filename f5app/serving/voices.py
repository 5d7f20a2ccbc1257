"""Voices the server can speak with: configured ones (``voices.NAME`` in the config) and uploaded
ones, kept in the run folder so a restart finds them.

    <voices_dir>/<name>/reference.flac   the uploaded clip, decoded and re-encoded (never the raw bytes)
    <voices_dir>/<name>/voice.json       {"name", "transcript", "created_at", "seconds", "original_filename",
                                          "reference": how it was prepared and judged (inference/reference.py)}

With a :class:`~f5app.inference.reference.ReferencePreparer` the upload is prepared as synthesis
prepares it: trimmed, cut at a word when over ``max_ref_seconds`` (the transcript cut at the same
word), judged; what is kept is the prepared clip and transcript, and a failed check is a 400
naming the reason.

A voice folder is written under a hidden temporary name and renamed into place once complete,
so a crash never leaves half a voice. Names are one word of letters, digits, ``-`` and ``_``:
they become folder names, so anything else (``..``, ``/``) is refused before touching the disk.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import soundfile as sf

from f5app.config import VoiceConfig
from f5app.errors import UserError
from f5app.files import fsync_dir, write_json_atomic
from f5app.inference.reference import MAX_REFERENCE_SECONDS, ReferencePreparer, default_preparer

log = logging.getLogger(__name__)

DEFAULT_VOICE = "default"
#: The voices OpenAI's API offers. Clients (and the official SDK's examples) send one of these, so
#: each names the default voice unless a voice of that name is configured or uploaded.
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx", "sage", "shimmer", "verse"})
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
AUDIO_FILE = "reference.flac"
#: Uploads outside these are refused from the header: nothing records speech below 8 kHz, and
#: above 192 kHz a rate is a forged header (a "4 MHz" WAV), not a microphone.
MIN_UPLOAD_RATE, MAX_UPLOAD_RATE = 8000, 192000
MAX_UPLOAD_CHANNELS = 8  # 7.1; the clip is mixed to mono anyway
RECORD_FILE = "voice.json"

#: ``transcribe(path) -> text``: an ASR for uploads without a transcript (f5app.speech.asr when wired).
Transcriber = Callable[[Path], str]


class VoiceError(UserError):
    """A voice request that cannot be served as asked; ``status`` is the HTTP answer."""

    status = 400
    code = "invalid_voice"


class VoiceNotFound(VoiceError):
    status = 404
    code = "voice_not_found"


class VoiceExists(VoiceError):
    status = 409
    code = "voice_exists"


class VoiceReadOnly(VoiceError):
    status = 403
    code = "voice_read_only"


@dataclass(frozen=True)
class Voice:
    name: str
    source: str  # default | configured | uploaded
    ref_audio: Optional[Path]  # None: the model's default reference
    transcript: Optional[str]
    speed: Optional[float] = None
    created_at: Optional[str] = None
    reference: Optional[dict[str, Any]] = None  # uploads: how the clip was prepared and judged

    def to_dict(self) -> dict:
        return {"id": self.name, "object": "voice", "name": self.name, "source": self.source,
                "transcript": self.transcript, "created_at": self.created_at, "reference": self.reference}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
        raise VoiceError(
            f"voice name {name!r} is not allowed: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


class VoiceStore:
    def __init__(
        self,
        folder: Path,
        configured: dict[str, VoiceConfig] | None = None,
        *,
        max_upload_bytes: int = 10 * 1024 * 1024,
        max_upload_seconds: float = 60.0,
        max_transcript_chars: int = 1000,
        max_transcript_chars_per_second: float = 30.0,
        reference_seconds: float = MAX_REFERENCE_SECONDS,
        transcribe: Transcriber | None = None,
        default: VoiceConfig | None = None,
        references: Optional[ReferencePreparer] = None,
    ):
        # Absolute, so a message that names a file under it is recognised as a path and kept out of answers.
        self.folder = Path(folder).expanduser().absolute()
        self.configured = dict(configured or {})
        self.default = default  # None: the model's own default reference
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_seconds = max_upload_seconds
        self.max_transcript_chars = max_transcript_chars
        self.max_transcript_chars_per_second = max_transcript_chars_per_second
        self.reference_seconds = reference_seconds  # synthesis keeps this much of a clip (max_ref_seconds)
        self.transcribe = transcribe
        self.references = references  # None: no checks, tiny.en only to cut a clip too long to use whole
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading

    def list(self, default_transcript: str | None = None) -> list[Voice]:
        voices = [self._default(default_transcript)]
        voices += [self._configured(name) for name in sorted(self.configured) if name != DEFAULT_VOICE]
        voices += [v for v in (self._uploaded(p.name) for p in self._folders()) if v is not None and v.name not in self.configured]
        return voices

    def get(self, name: str) -> Voice:
        if name == DEFAULT_VOICE:
            return self._default(None)
        check_name(name)
        if name in self.configured:
            return self._configured(name)
        voice = self._uploaded(name)
        if voice is None and name in OPENAI_VOICES:
            return self._default(None)
        if voice is None:
            known = ", ".join(v.name for v in self.list())
            raise VoiceNotFound(f"voice {name!r} does not exist; known voices: {known} (upload one with POST /v1/voices)")
        return voice

    def _default(self, model_transcript: str | None) -> Voice:
        if self.default is None:
            return Voice(DEFAULT_VOICE, "default", None, model_transcript)
        return Voice(DEFAULT_VOICE, "default", Path(self.default.ref_audio).expanduser(), self.default.ref_text, self.default.speed)

    def _configured(self, name: str) -> Voice:
        config = self.configured[name]
        return Voice(name, "configured", Path(config.ref_audio).expanduser(), config.ref_text, config.speed)

    def _folders(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.is_dir() and NAME_RULE.fullmatch(p.name))

    def _uploaded(self, name: str) -> Voice | None:
        folder = self.folder / name
        try:
            record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not (folder / AUDIO_FILE).is_file():
            return None
        return Voice(name, "uploaded", folder / AUDIO_FILE, str(record.get("transcript", "")), None, record.get("created_at"),
                     record.get("reference"))

    # ------------------------------------------------------------------ writing

    def add(self, name: str, data: bytes, transcript: str | None, filename: str | None = None) -> Voice:
        """Check ``data`` as audio with speech, transcribe it if needed, and keep it under ``name``."""
        check_name(name)
        if name == DEFAULT_VOICE or name in self.configured:
            raise VoiceExists(f"voice {name!r} is configured on the server; choose another name")
        if len(data) > self.max_upload_bytes:
            raise VoiceError(f"the audio file is {len(data)} bytes; the limit is {self.max_upload_bytes} (server.max_upload_bytes)")
        if not data:
            raise VoiceError("the audio file is empty")
        given = (transcript or "").strip()
        if len(given) > self.max_transcript_chars:
            raise VoiceError(f"the transcript is {len(given)} characters; the limit is {self.max_transcript_chars} "
                             f"(server.max_transcript_chars): send a clip of 3-12 s and what it says")
        mono, sample_rate = decode_upload(data, self.max_upload_seconds)
        seconds = len(mono) / sample_rate
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._uploaded(name) is not None:
                raise VoiceExists(f"voice {name!r} already exists; DELETE /v1/voices/{name} first or choose another name")
            tmp = self.folder / f".tmp-{name}-{uuid.uuid4().hex}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                sf.write(tmp / AUDIO_FILE, mono, sample_rate, format="FLAC")
                text = given or self._transcribed(tmp / AUDIO_FILE)
                prepared = self._prepared(tmp / AUDIO_FILE, text, sample_rate, seconds)
                if prepared is not None:
                    text = prepared["transcript"]
                record = {"name": name, "transcript": text, "seconds": round(seconds, 3), "reference": prepared,
                          "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "original_filename": os.path.basename(filename or "")[:200]}
                write_json_atomic(tmp / RECORD_FILE, record)
                fsync_dir(tmp)
                os.replace(tmp, self.folder / name)
                fsync_dir(self.folder)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        log.info("voice %s uploaded (%.1f s)", name, seconds)
        voice = self._uploaded(name)
        assert voice is not None
        return voice

    def delete(self, name: str) -> Voice:
        """Remove an uploaded voice; returns it (its ``ref_audio`` names what caches must forget)."""
        if name != DEFAULT_VOICE:
            check_name(name)
        if name == DEFAULT_VOICE or name in self.configured:
            raise VoiceReadOnly(f"voice {name!r} comes from the server's configuration and cannot be deleted here")
        with self._lock:
            voice = self._uploaded(name)
            if voice is None:
                raise VoiceNotFound(f"voice {name!r} does not exist")
            # Renamed first, so a crash mid-delete leaves a hidden folder, never half a voice.
            doomed = self.folder / f".deleted-{name}-{uuid.uuid4().hex}"
            os.replace(self.folder / name, doomed)
            fsync_dir(self.folder)
            shutil.rmtree(doomed, ignore_errors=True)
        log.info("voice %s deleted", name)
        return voice

    def _transcribed(self, path: Path) -> str:
        if self.transcribe is None:
            raise VoiceError("a transcript is required: send the form field `transcript` (no speech recogniser is configured)")
        text = (self.transcribe(path) or "").strip()
        if not text:
            raise VoiceError("no speech was recognised in the clip; send the form field `transcript`")
        return text

    def _prepared(self, path: Path, transcript: str, sample_rate: int, clip_seconds: float) -> dict[str, Any] | None:
        """The preparation synthesis applies, now: a clip it cannot use, one that fails a check, or a
        transcript far longer than the speech it keeps, is refused.

        With a preparer, ``path`` is replaced by the prepared clip (trimmed, cut at a word) and
        the returned record's ``transcript`` is the transcript cut at the same word.
        """
        preparer = self.references or default_preparer()
        try:
            prepared = preparer.prepare(path, transcript, sample_rate, self.reference_seconds)
        except UserError as exc:
            raise VoiceError(str(exc).replace(str(path), "the uploaded clip")) from None
        if prepared.problems:
            raise VoiceError("the reference clip was refused: " + "; ".join(prepared.problems))
        reference = prepared.reference
        rate = len(reference.text) / reference.seconds
        if rate > self.max_transcript_chars_per_second:
            kept = f"{reference.seconds:.1f} s of speech" + (
                f" (synthesis keeps at most max_ref_seconds={self.reference_seconds:g} of the {clip_seconds:.0f} s clip, cut at a pause)"
                if clip_seconds > self.reference_seconds else "")
            raise VoiceError(f"the transcript is {len(reference.text)} characters for {kept}, {rate:.0f} characters per second; "
                             f"the limit is {self.max_transcript_chars_per_second:g} (server.max_transcript_chars_per_second): "
                             f"send what the clip says, for a clip of 3-12 s")
        prepared.log_summary("upload")
        if self.references is None:
            return None
        sf.write(path, reference.wav, sample_rate, format="FLAC")
        return prepared.to_dict()


def decode_upload(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Uploaded bytes as (mono float32, rate), refused by what the header claims before decoding.

    A 91 KB Ogg of 10 minutes of 8-channel silence decodes to 1.8 GB of float32: the length,
    rate and channels are read from the header first, and the decode runs in one-second blocks
    that stop at ``max_seconds`` (a header may understate its length), keeping only the mono mix.
    """
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise VoiceError("the uploaded file is not audio soundfile can read (send wav, flac, ogg or mp3)") from None
    if not MIN_UPLOAD_RATE <= info.samplerate <= MAX_UPLOAD_RATE:
        raise VoiceError(f"the clip's sample rate is {info.samplerate} Hz; send {MIN_UPLOAD_RATE}-{MAX_UPLOAD_RATE} Hz audio")
    if not 1 <= info.channels <= MAX_UPLOAD_CHANNELS:
        raise VoiceError(f"the clip has {info.channels} channels; send mono or stereo (at most {MAX_UPLOAD_CHANNELS})")
    limit = int(max_seconds * info.samplerate)
    if info.frames > limit:
        raise VoiceError(f"the clip is {info.frames / info.samplerate:.1f} s; the limit is {max_seconds:g} s (server.max_upload_seconds)")
    blocks: list[np.ndarray] = []
    kept = 0
    try:
        with sf.SoundFile(io.BytesIO(data)) as audio:
            for block in audio.blocks(blocksize=info.samplerate, dtype="float32", always_2d=True):
                kept += len(block)
                if kept > limit:
                    raise VoiceError(f"the clip is longer than {max_seconds:g} s (server.max_upload_seconds)")
                blocks.append(block.mean(axis=1))
    except MemoryError:
        raise VoiceError("the clip is too large to decode on this server; send a shorter one") from None
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise VoiceError("the uploaded file is damaged: soundfile cannot decode it (send wav, flac, ogg or mp3)") from None
    mono = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if len(mono) == 0 or not np.isfinite(mono).all() or float(np.abs(mono).max()) == 0.0:
        raise VoiceError("the uploaded audio is empty or silent; send a clip of someone speaking")
    return mono, info.samplerate
