"""Know whether fine-tuning worked: held-out prompts synthesised, transcribed and scored.

prompts.py (held-out prompts), evaluator.py (synthesise, transcribe, score: WER, CER, SIM),
settings.py (recorded vs given settings). The models and the scores themselves live one layer
down, in f5app/speech/ (asr.py, speaker.py, text.py), which data preparation uses too.
"""
