"""Audio formats of ``/v1/audio/speech``: whole files through soundfile, and streamable WAV/PCM.

OpenAI's ``pcm`` is raw 16-bit little-endian mono at 24 kHz, which is what F5-TTS makes. A
streamed WAV starts with a header whose sizes say "unknown" (0xFFFFFFFF), as OpenAI's does.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import soundfile as sf

#: response_format -> (media type, soundfile format, soundfile subtype); None: raw PCM.
FORMATS: dict[str, tuple[str, str | None, str | None]] = {
    "wav": ("audio/wav", "WAV", "PCM_16"),
    "flac": ("audio/flac", "FLAC", "PCM_16"),
    "mp3": ("audio/mpeg", "MP3", "MPEG_LAYER_III"),
    "opus": ("audio/ogg", "OGG", "OPUS"),
    "pcm": ("audio/pcm", None, None),
}
#: Formats whose bytes can be sent as each chunk is ready.
STREAMABLE = ("wav", "pcm")
UNSUPPORTED = {"aac": "aac needs an encoder this server does not ship"}


def pcm16(wav: np.ndarray) -> bytes:
    return (np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def encode(wav: np.ndarray, sample_rate: int, response_format: str) -> bytes:
    """The whole clip in ``response_format`` (one of :data:`FORMATS`)."""
    _, container, subtype = FORMATS[response_format]
    if container is None:
        return pcm16(wav)
    if response_format == "wav":  # the same samples as pcm and as a streamed wav, byte for byte
        data = pcm16(wav)
        return wav_header(sample_rate, len(data)) + data
    buffer = io.BytesIO()
    sf.write(buffer, np.asarray(wav, dtype=np.float32), sample_rate, format=container, subtype=subtype)
    return buffer.getvalue()


def wav_header(sample_rate: int, data_bytes: int | None, channels: int = 1, bits: int = 16) -> bytes:
    """A RIFF/WAVE header for 16-bit PCM; ``data_bytes=None``: length unknown (both sizes 0xFFFFFFFF)."""
    riff, data = (0xFFFFFFFF, 0xFFFFFFFF) if data_bytes is None else (36 + data_bytes, data_bytes)
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, bits)
            + b"data" + struct.pack("<I", data))


def streaming_wav_header(sample_rate: int) -> bytes:
    return wav_header(sample_rate, None)
