"""Text as a person reads it: a user's lexicon, then numbers, amounts, dates, times, units and
abbreviations said in the voice's language. ``build_normaliser`` (normalise.py) is the entry."""
