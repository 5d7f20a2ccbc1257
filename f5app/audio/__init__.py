"""Audio I/O (soundfile, no FFmpeg) and vocoders (mel spectrogram -> waveform)."""
