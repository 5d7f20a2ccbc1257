"""The one text normalisation used by inference, serving, evaluation and (opt-in) training.

    normaliser = build_normaliser(settings.text_norm, recorded_language(metadata.config))
    normaliser.normalise("R$ 12,50 às 17:30")  # 'doze reais e cinquenta centavos às dezessete e trinta'
    normaliser.name                             # 'num2words:pt-BR'

The user's lexicon applies first, then the language's spoken forms (f5app/text/spoken.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from f5app.config import TextNormConfig
from f5app.errors import UserError
from f5app.text.languages import LANGUAGES, language_for
from f5app.text.lexicon import Lexicon, read_lexicon
from f5app.text.spoken import SpokenForms

log = logging.getLogger(__name__)

#: The language when neither text_norm.language nor the checkpoint says one: upstream's released
#: models are English and Chinese, and the evaluation's WER normalisation already reads an unknown
#: language as English.
DEFAULT_LANGUAGE = "en"
NAMES = ("auto", "num2words", "none")


@dataclass(frozen=True)
class Normaliser:
    """``normalise(text) -> str``; ``name`` says what it does (``num2words:pt-BR``, ``none``, ``none+lexicon``)."""

    name: str
    language: Optional[str]  # the canonical code it speaks (None: none chosen)
    lexicon: Optional[Lexicon] = None
    spoken: Optional[SpokenForms] = None

    def normalise(self, text: str) -> str:
        if self.lexicon is not None:
            text = self.lexicon.apply(text)
        if self.spoken is not None:
            text = self.spoken.say(text)
        return text

    @property
    def fingerprint(self) -> str:
        """What changes the output: the name plus the lexicon's content (prepared data sets record it)."""
        return self.name + (f"@{self.lexicon.digest[:16]}" if self.lexicon is not None else "")


def build_normaliser(settings: TextNormConfig, language: Optional[str] = None) -> Normaliser:
    """The normaliser ``settings`` ask for, in ``settings.language`` (else ``language``, else en).

    ``language`` is the caller's fallback: the checkpoint's recorded language
    (:func:`recorded_language`). Logs which normaliser was chosen and why.
    """
    if settings.name not in NAMES:
        raise UserError(f"text_norm={settings.name} is not an option; use {', '.join(NAMES)}")
    if settings.language:
        code, why = settings.language, "text_norm.language"
    elif language:
        code, why = language, "the checkpoint's recorded language"
    else:
        code, why = DEFAULT_LANGUAGE, "default: set text_norm.language for another"
    lexicon = read_lexicon(settings.lexicon) if settings.lexicon else None
    found = language_for(code)
    if settings.name == "num2words" and found is None:
        raise UserError(
            f"text_norm=num2words has no normaliser for language {code!r}; use one of "
            f"{', '.join(lang.code for lang in LANGUAGES.values())}, or text_norm=none"
        )
    if settings.name == "none" or found is None:
        name = "none+lexicon" if lexicon else "none"
        reason = "text_norm=none" if settings.name == "none" else f"text_norm=auto: no normaliser for language {code!r}"
        log.info("text_norm: %s (%s); text is read as written%s", name, reason, " after the lexicon" if lexicon else "")
        return Normaliser(name, found.code if found else None, lexicon)
    name = f"num2words:{found.code}" + ("+lexicon" if lexicon else "")
    log.info("text_norm: %s (language %s from %s)", name, found.code, why)
    return Normaliser(name, found.code, lexicon, SpokenForms(found))


def training_normaliser(settings: TextNormConfig, language: Optional[str] = None) -> Optional[Normaliser]:
    """The normaliser for training transcripts when ``text_norm.apply_to_training`` is set, else None."""
    return build_normaliser(settings, language) if settings.apply_to_training else None


def recorded_language(config: Optional[dict[str, Any]]) -> Optional[str]:
    """The language a checkpoint's recorded config names: its data, else its evaluation, else its ASR."""
    if not config:
        return None
    data = config.get("data") or {}
    for value in (
        data.get("language"),
        (config.get("text_norm") or {}).get("language"),
        (config.get("eval") or {}).get("language"),
        (data.get("asr") or {}).get("language"),
        (config.get("asr") or {}).get("language"),
    ):
        if value:
            return str(value)
    return None
