"""Know whether fine-tuning worked: ASR (WER/CER), speaker similarity (SIM), held-out prompts.

asr.py (faster-whisper Transcriber), text.py (normalisation, WER, CER), speaker.py (speaker
embedders, SIM), prompts.py (held-out prompts), evaluator.py (synthesise, transcribe, score).
Heavy libraries are imported inside the functions that load models.
"""
