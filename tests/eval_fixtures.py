"""Models and human recordings for the evaluation tests, each loaded once per test session.

Module-level caches (not fixtures) so that several test files share one loaded model: pytest
would build a session fixture imported into two modules twice.
"""

from __future__ import annotations

import functools
from pathlib import Path

#: What the speakers of f5-tts's bundled human recordings say (checked by ear; upstream's
#: basic.toml gives the first). main.flac and town.flac are the Speech Accent Archive's
#: "Please call Stella" elicitation and the Rainbow Passage.
HUMAN_CLIPS = {
    "basic/basic_ref_en.wav": "Some call me nature, others call me mother nature.",
    "multi/town.flac": (
        "The difference in the rainbow depends considerably upon the size of the drops, "
        "and the width of the colored band increases as the size of the drops increases."
    ),
    "multi/main.flac": "Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
}


def example_path(name: str) -> Path:
    import f5_tts

    return Path(f5_tts.__path__[0]) / "infer/examples" / name


@functools.cache
def tiny_en_transcriber():
    from f5app.config import AsrConfig
    from f5app.evaluation.asr import build_transcriber

    return build_transcriber(AsrConfig(name="tiny_en", language="en", beam_size=1), device="cpu")


@functools.cache
def human_audio(name: str):
    from f5app.audio.io import read_audio

    return read_audio(example_path(name))
