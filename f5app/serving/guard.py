"""Who may call a server on this machine: one rule for the speech server and the studio.

A page on any web site can make its visitor's browser send requests to ``127.0.0.1``: "simple"
requests (a form POST, a ``text/plain`` body) go out without a CORS preflight, and a host name
the attacker re-points at 127.0.0.1 (DNS rebinding) makes the page's own origin reach this
server. So, in front of every route, before any body is read:

* **Host** (421 Misdirected Request), only when no API key is required: the ``Host`` header must
  name this server as the user would, i.e. ``localhost``, a loopback address or the bound address,
  with the server's port, or a name listed in ``allowed_hosts`` (``name`` at the server's port,
  or ``name:port``). A rebinding name is none of these. With a key, every call needs the key,
  which a page elsewhere does not have.
* **Origin** (403): a request that carries ``Origin`` (browsers send it on every POST, PUT,
  DELETE and cross-origin fetch) must come from this server's own origin, i.e. the origin of the
  ``Host`` it was sent to, or ``localhost``/loopback at the server's port, or a listed name,
  or one of ``cors_origins``. ``Origin: null`` (sandboxed frames, files) is refused.
* **Content-Type** (415): a POST, PUT or PATCH must say it carries what its route reads,
  ``application/json`` unless the app names another type for that path (the voice upload:
  ``multipart/form-data``). A browser on another origin can only send ``text/plain``,
  ``application/x-www-form-urlencoded`` or ``multipart/form-data`` without a preflight, so JSON
  routes are out of its reach even without the Origin check.

Requests without ``Origin`` (curl, the ``openai`` client) pass the Origin check; ``Host`` is still
checked. Refusals are JSON in OpenAI's error shape. One call installs it::

    install_guard(app, GuardPolicy.from_config(settings.server, key_required=api_key is not None),
                  content_types={"/v1/voices": "multipart/form-data"})
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from f5app.serving.errors import error_body

log = logging.getLogger(__name__)

JSON = "application/json"
FORM = "multipart/form-data"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})


def split_authority(authority: str, default_port: Optional[int]) -> Optional[tuple[str, Optional[int]]]:
    """``"Host:8000"`` -> ``("host", 8000)``; ``"[::1]"`` -> ``("::1", default_port)``; None if malformed.

    Names are lower-cased and lose a trailing dot (``localhost.`` is ``localhost``).
    """
    text = authority.strip().lower()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1 :]
    elif text.count(":") > 1:  # a bare IPv6 literal has no room for a port
        name, rest = text, ""
    else:
        name, colon, port_text = text.partition(":")
        rest = colon + port_text
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and 0 < int(rest[1:]) < 65536):
        return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/@\\ \t"):
        return None
    return name, int(rest[1:]) if rest else default_port


def is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GuardPolicy:
    """Who may call: the bound address and port, extra names and origins, whether a key is required.

    ``config_prefix`` only names the settings in refusal messages (``server`` or ``studio``).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    key_required: bool = False
    config_prefix: str = "server"

    @classmethod
    def from_config(cls, config: Any, *, key_required: bool, config_prefix: str = "server") -> "GuardPolicy":
        """From any settings object with ``host``, ``port``, ``allowed_hosts`` and ``cors_origins``
        (:class:`f5app.config.ServerConfig`, the studio's)."""
        return cls(host=str(config.host), port=int(config.port),
                   allowed_hosts=tuple(str(h) for h in (getattr(config, "allowed_hosts", None) or ())),
                   cors_origins=tuple(_normal_origin(o) for o in (getattr(config, "cors_origins", None) or ())),
                   key_required=key_required, config_prefix=config_prefix)

    # ------------------------------------------------------------------ the rule
    def host_allowed(self, name: str, port: Optional[int], server_port: int) -> bool:
        """Whether ``name:port`` is this server under a name the user gave it (not a rebinding name)."""
        bound = self.host.strip("[]").lower()
        if port == server_port and (is_loopback_name(name) or (name == bound and bound not in _UNSPECIFIED)):
            return True
        for entry in self.allowed_hosts:
            listed = split_authority(entry, server_port)
            if listed is not None and listed == (name, port):
                return True
        return False

    def host_refusal(self, host_header: Optional[str], scheme: str, server_port: int) -> Optional[str]:
        """Why the ``Host`` header is refused, or None. Only without a key; no header: nothing to check."""
        if self.key_required or host_header is None:
            return None
        parsed = split_authority(host_header, _DEFAULT_PORTS.get(scheme, 80))
        if parsed is not None and self.host_allowed(*parsed, server_port):
            return None
        return (f"this server answers to localhost:{server_port} and 127.0.0.1:{server_port}, not to Host: {host_header[:100]}; "
                f"list other names it is reached by in {self.config_prefix}.allowed_hosts")

    def origin_refusal(self, origin: Optional[str], host_header: Optional[str], scheme: str, server_port: int) -> Optional[str]:
        """Why the ``Origin`` header is refused, or None (no header: not a browser's cross-origin call)."""
        if origin is None:
            return None
        normal = _normal_origin(origin)
        if normal in self.cors_origins:
            return None
        origin_scheme, sep, authority = normal.partition("://")
        parsed = split_authority(authority, _DEFAULT_PORTS.get(origin_scheme)) if sep and origin_scheme in _DEFAULT_PORTS else None
        if parsed is not None:
            if self.host_allowed(*parsed, server_port):
                return None
            addressed = split_authority(host_header, _DEFAULT_PORTS.get(scheme, 80)) if host_header else None
            if addressed == parsed:  # the page was served by this very host (the Host check already ran)
                return None
        return (f"requests from the web page at {origin[:100]} are refused: only this server's own page may call it; "
                f"list other origins in {self.config_prefix}.cors_origins")

    def content_type_refusal(self, method: str, content_type: Optional[str], accepted: tuple[str, ...]) -> Optional[str]:
        """Why a body-carrying request's media type is refused, or None."""
        if method not in BODY_METHODS:
            return None
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media in accepted:
            return None
        return f"send the body as {' or '.join(accepted)} (Content-Type: {media or 'none'} is not read here)"


def _normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class GuardMiddleware:
    """Pure ASGI: applies a :class:`GuardPolicy` to every HTTP and WebSocket request before the app sees it."""

    def __init__(self, app: Any, policy: GuardPolicy, content_types: Optional[Mapping[str, Iterable[str] | str]] = None):
        self.app = app
        self.policy = policy
        self.content_types = {path: (kinds,) if isinstance(kinds, str) else tuple(kinds) for path, kinds in (content_types or {}).items()}

    def accepted_types(self, path: str) -> tuple[str, ...]:
        """The media types a body sent to ``path`` may have (exact paths first, then glob patterns)."""
        if path in self.content_types:
            return self.content_types[path]
        for pattern, kinds in self.content_types.items():
            if fnmatch.fnmatchcase(path, pattern):
                return kinds
        return (JSON,)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, code, message = refusal
        log.warning("refused %s %s: %s", scope.get("method", "WEBSOCKET"), scope.get("path"), message)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect; closing before accepting answers 403
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps(error_body(message, "invalid_request_error", code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: dict) -> Optional[tuple[int, str, str]]:
        """(status, code, message) for a request this server must not answer, or None."""
        headers: dict[str, str] = {}
        for key, value in scope.get("headers") or []:
            name = key.decode("latin-1").lower()
            if name in headers and name in ("host", "origin", "content-type"):
                return 400, "duplicate_header", f"the request has more than one {name} header"
            headers[name] = value.decode("latin-1")
        scheme = scope.get("scheme", "http")
        server = scope.get("server")
        server_port = server[1] if server and isinstance(server[1], int) else self.policy.port
        host = headers.get("host")
        why = self.policy.host_refusal(host, scheme, server_port)
        if why:
            return 421, "misdirected_request", why
        why = self.policy.origin_refusal(headers.get("origin"), host, scheme, server_port)
        if why:
            return 403, "origin_not_allowed", why
        if scope["type"] == "http":
            why = self.policy.content_type_refusal(scope["method"], headers.get("content-type"), self.accepted_types(scope["path"]))
            if why:
                return 415, "unsupported_media_type", why
        return None


def install_guard(app: Any, policy: GuardPolicy, content_types: Optional[Mapping[str, Iterable[str] | str]] = None) -> None:
    """Put the guard in front of every route of a Starlette/FastAPI ``app``.

    ``content_types``: path (or glob pattern, e.g. ``/runs/*/upload``) -> the media type(s) a POST,
    PUT or PATCH there may carry; every other path takes ``application/json``. Call it after
    adding other middleware (CORS), so the guard runs first.
    """
    app.add_middleware(GuardMiddleware, policy=policy, content_types=content_types)
