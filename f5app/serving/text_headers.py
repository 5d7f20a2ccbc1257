"""The text as spoken (after text_norm), returned with the audio in response headers.

``X-Normalized-Text`` holds it percent-encoded (UTF-8; headers are Latin-1 on the wire). HTTP
clients cap a response's header block (h11, under httpx: 16 KiB), and a 4,096-character input can
spell out to several times that, so the header is cut at ``MAX_HEADER_CHARS`` encoded characters,
on a character boundary, and ``X-Normalized-Text-Truncated: true`` then says so.
"""

from __future__ import annotations

from urllib.parse import quote

MAX_HEADER_CHARS = 8192
EXPOSED = ("X-Normalized-Text", "X-Normalized-Text-Truncated")


def normalized_text_headers(text: str, limit: int = MAX_HEADER_CHARS) -> dict[str, str]:
    encoded = quote(text, safe="")
    if len(encoded) <= limit:
        return {"X-Normalized-Text": encoded}
    cut = encoded[:limit]
    tail = cut.rfind("%", len(cut) - 3)  # never end inside a %XX escape
    cut = cut[:tail] if tail != -1 else cut
    while cut.endswith(tuple(f"%{b:02X}" for b in range(0x80, 0xC0))):  # nor inside a multi-byte character
        cut = cut[:-3]
    if cut.endswith(tuple(f"%{b:02X}" for b in range(0xC0, 0x100))):
        cut = cut[:-3]
    return {"X-Normalized-Text": cut, "X-Normalized-Text-Truncated": "true"}
