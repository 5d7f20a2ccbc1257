"""Audio files through soundfile: any rate and channel count in, atomic writes out, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from f5app.audio.io import AudioFileError, read_audio, write_audio


def tone(seconds: float, sr: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_read_audio_averages_stereo_to_mono_and_resamples(tmp_path):
    left, right = tone(1.0, 16000, 440), tone(1.0, 16000, 440) * 0.0
    path = tmp_path / "stereo.flac"
    sf.write(path, np.stack([left, right], axis=1), 16000)

    wav, sr = read_audio(path, target_sr=24000)

    assert sr == 24000 and wav.ndim == 1 and wav.dtype == np.float32
    assert abs(len(wav) - 24000) <= 1
    assert np.max(np.abs(wav)) == pytest.approx(0.25, rel=0.05)  # average of the two channels


def test_read_audio_keeps_channels_when_asked(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([tone(0.5, 24000), tone(0.5, 24000, 220)], axis=1), 24000)
    wav, sr = read_audio(path, mono=False)
    assert wav.shape == (2, 12000) and sr == 24000


def test_read_audio_missing_file_names_it(tmp_path):
    with pytest.raises(AudioFileError, match="nope.wav does not exist"):
        read_audio(tmp_path / "nope.wav")


def test_read_audio_unreadable_file_is_one_clear_error(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not audio" * 10)
    with pytest.raises(AudioFileError, match="cannot read audio file .*garbage.wav"):
        read_audio(path)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg"])
def test_write_then_read_round_trips_each_format(tmp_path, suffix):
    original = tone(0.5, 24000)
    path = write_audio(tmp_path / f"out{suffix}", original, 24000)
    wav, sr = read_audio(path)
    assert sr == 24000 and len(wav) == len(original)
    tolerance = 0.05 if suffix == ".ogg" else 1e-3  # Vorbis is lossy
    assert np.sqrt(np.mean((wav - original) ** 2)) < tolerance


def test_write_audio_refuses_to_overwrite_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "keep.wav"
    write_audio(path, tone(0.2, 24000), 24000)
    before = path.read_bytes()
    with pytest.raises(AudioFileError, match="already exists.*overwrite=true"):
        write_audio(path, tone(0.4, 24000), 24000)
    assert path.read_bytes() == before


def test_write_audio_overwrites_when_asked(tmp_path):
    path = tmp_path / "new.wav"
    write_audio(path, tone(0.2, 24000), 24000)
    write_audio(path, tone(0.4, 24000), 24000, overwrite=True)
    assert sf.info(path).frames == int(0.4 * 24000)


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "out.wav"
    write_audio(path, tone(0.2, 24000), 24000)
    before = path.read_bytes()

    def crash_midway(file, data, sr, format=None):
        with open(file, "wb") as handle:
            handle.write(b"RIFF partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf, "write", crash_midway)
    with pytest.raises(AudioFileError, match="cannot write audio file"):
        write_audio(path, tone(0.4, 24000), 24000, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_write_audio_rejects_unknown_suffix(tmp_path):
    with pytest.raises(AudioFileError, match="unsupported suffix '.mp3'"):
        write_audio(tmp_path / "out.mp3", tone(0.1, 24000), 24000)
    assert not list(tmp_path.iterdir())


def test_written_audio_gets_ordinary_file_permissions(tmp_path):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        path = write_audio(tmp_path / "a.wav", np.zeros(100, dtype=np.float32), 24000)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
