"""The one shape of an error body (OpenAI's) and what it may say.

``{"error": {"message", "type", "param", "code"}}``. A message goes to whoever called, so it never
carries the server's own file paths: :func:`public_message` replaces anything that looks like an
absolute path (two or more segments, except this API's own routes) with ``<path>``. The speech
server and the guard in front of it (and of the studio) build every error body here.
"""

from __future__ import annotations

import re
from typing import Optional

# An absolute POSIX or Windows path of two or more segments; "/v1/voices/x" and "/page/..." are
# routes a message may name (e.g. "DELETE /v1/voices/x first"), so they stay.
_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:\\|/)(?!v1/|page/)[^\s'\"/\\]+(?:[/\\][^\s'\"/\\]*)+")


def public_message(message: str) -> str:
    """``message`` with absolute file paths replaced by ``<path>``."""
    return _PATH.sub("<path>", message)


def error_body(message: str, type_: str, code: Optional[str] = None, param: Optional[str] = None) -> dict:
    return {"error": {"message": public_message(message), "type": type_, "param": param, "code": code}}
