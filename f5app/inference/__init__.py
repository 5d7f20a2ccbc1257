"""Speech synthesis from a resolved checkpoint: text handling, chunking, and the Synthesizer API.

Import :class:`f5app.inference.synthesizer.Synthesizer` for the API; this package's ``__init__``
stays free of torch and f5_tts so the CLI's ``--help`` is fast.
"""

from f5app.inference.errors import InferenceInputError

__all__ = ["InferenceInputError"]
