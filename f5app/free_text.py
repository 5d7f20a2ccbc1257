"""Free-text overrides (``text=``, ``ref_text=`` ...) reach the program exactly as typed.

Hydra reads every ``key=value`` with its override grammar: a comma makes a sweep, quotes,
brackets, ``=`` and ``:`` mean something, and OmegaConf resolves ``${...}``. A sentence is none of
that, so ``text="Olá, tudo bem?"`` (the shell hands over ``text=Olá, tudo bem?``) stopped with a
grammar error. :func:`literal_overrides` rewrites the arguments whose key is free text into
Hydra's quoted form, with ``${`` escaped for OmegaConf, before Hydra reads argv. Every other key
keeps Hydra's grammar.

A value that is already one whole Hydra quoted string (``'text="Hello, world"'``, the quoting
these commands needed before) is first read as Hydra reads it (its outer quotes go), then kept
literal the same way, so old command lines keep working.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

_INTERPOLATION = re.compile(r"(\\*)\$\{")  # OmegaConf: \${ is a literal ${, \\ before it a literal \
_PREFIXES = ("++", "+")  # Hydra's "add or override" and "add"


def hydra_literal(text: str) -> str:
    """The override value that Hydra parses, and OmegaConf resolves, back into ``text`` unchanged."""
    text = _INTERPOLATION.sub(lambda m: "\\" * (2 * len(m.group(1)) + 1) + "${", text)
    quote = "'" if '"' in text and "'" not in text else '"'
    # In a Hydra quoted string backslashes mean something only before a quote: double them there
    # and escape the quote; trailing ones (before the closing quote) are doubled.
    body = re.sub(rf"(\\*){quote}", lambda m: "\\" * (2 * len(m.group(1)) + 1) + quote, text)
    closing = "\\" * (len(body) - len(body.rstrip("\\")))
    return quote + body + closing + quote


def literal_overrides(args: Sequence[str], keys: Iterable[str]) -> list[str]:
    """``args`` with every ``KEY=VALUE`` (also ``+KEY=``/``++KEY=``) whose KEY matches one of the
    ``keys`` patterns (``fnmatch``: ``voices.*.ref_text``) rewritten so VALUE is taken literally."""
    patterns = list(keys)
    if not patterns:
        return list(args)
    return [_literal(arg) if _is_free_text(arg, patterns) else arg for arg in args]


def _is_free_text(arg: str, patterns: list[str]) -> bool:
    key, sep, _ = arg.partition("=")
    if not sep or arg.startswith("-"):
        return False
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns)


def _literal(arg: str) -> str:
    key, _, value = arg.partition("=")
    return f"{key}={hydra_literal(_unquoted(value))}"


def _unquoted(value: str) -> str:
    """``value`` itself, or what Hydra reads from it when it is one whole quoted string."""
    if len(value) < 2 or value[0] not in "'\"" or value[-1] != value[0]:
        return value

    try:
        parsed = OverridesParser.create().parse_override(f"key={value}").value()
    except HydraException:
        return value
    # a value starting with a quote that parses to one string was one quoted string
    return parsed if isinstance(parsed, str) else value
