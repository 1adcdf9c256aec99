"""Who may talk to the explorer: a Host allow-list and a same-origin check (ASGI middleware).

A web page the user visits must not drive the explorer: a foreign ``Origin`` (or
``Sec-Fetch-Site: cross-site``) is refused on every request that changes state and on the JSON
API, and a ``Host`` header that is not one of the server's names is refused on every request
(DNS rebinding: ``evil.example`` resolving to 127.0.0.1). The explorer's own page sends its own
origin and works; clients without ``Origin`` (curl, scripts) are not browsers and are served.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConvlensError

__all__ = ["HostOriginGuard", "allowed_hosts"]

#: The names of this machine as a Host header spells them.
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
#: Binding to these means every interface: only the names given in ``allowed_hosts`` are known.
WILDCARDS = ("0.0.0.0", "::", "")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: ``Sec-Fetch-Site`` values a browser sends for a request from another site.
FOREIGN_SITES = (b"cross-site", b"same-site")

#: (host, port); port None matches any port.
Address = tuple[str, int | None]


def _split(netloc: str, default_port: int | None) -> Address | None:
    """``name[:port]`` / ``[v6][:port]`` → (lower-case name, port); None if malformed."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            return None
        name, rest = netloc[: end + 1], netloc[end + 1 :]
    else:
        name, colon, port_text = netloc.partition(":")
        rest = colon + port_text
    if not name:
        return None
    if not rest:
        return name, default_port
    if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
        return None
    return name, int(rest[1:])


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host.lower()


def allowed_hosts(
    host: str = "127.0.0.1", port: int | None = None, extra: Iterable[str] = ()
) -> frozenset[Address] | None:
    """The Host headers the explorer answers, from what it binds to and ``extra`` names.

    Loopback names always; the bound address unless it is a wildcard (0.0.0.0); each ``extra``
    entry as ``name`` (on the server's port) or ``name:port``. ``"*"`` turns the check off
    (None). ``port=None`` (the app without a server) accepts any port.
    """
    extra = list(extra)
    if "*" in extra:
        return None
    names = [*LOOPBACK] if host in WILDCARDS else [*LOOPBACK, _bracketed(host)]
    found: set[Address] = {(name, port) for name in names}
    for entry in extra:
        address = _split(_bracketed(entry) if entry.count(":") > 1 else entry, port)
        if address is None:
            raise ConvlensError(
                f"allowed host {entry!r} is not NAME or NAME:PORT; fix --allowed-host"
            )
        found.add(address)
    return frozenset(found)


def _known(address: Address | None, allowed: frozenset[Address]) -> bool:
    return address is not None and (address in allowed or (address[0], None) in allowed)


class HostOriginGuard:
    """Refuses unknown Host headers (400) and cross-site requests (403), with a JSON detail."""

    def __init__(self, app: ASGIApp, allowed: frozenset[Address] | None):
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        problem = self.problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, detail = problem
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)

    def problem(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """(status, one-line detail) when the request must be refused, else None."""
        raw_host = headers.get(b"host", b"").decode("latin-1")
        scheme_port = 443 if scope.get("scheme") in ("https", "wss") else 80
        host = _split(raw_host, scheme_port)
        if host is None or (self.allowed is not None and not _known(host, self.allowed)):
            shown = raw_host[:100] or "(none)"
            return 400, (
                f"unknown Host header {shown!r}: the explorer answers only to its own address "
                "(open it at http://127.0.0.1:PORT/, or start it with --allowed-host NAME)"
            )
        method, path = scope.get("method", "GET"), scope.get("path", "")
        if method in SAFE_METHODS and not path.startswith("/api/"):
            return None  # the page and its static files may be opened from anywhere
        origin = headers.get(b"origin")
        if origin is not None and not self._same_origin(origin.decode("latin-1"), host):
            return 403, (
                f"cross-origin request refused: Origin {origin.decode('latin-1')[:100]!r} is "
                "not this explorer; use the explorer's own page"
            )
        if origin is None and headers.get(b"sec-fetch-site") in FOREIGN_SITES:
            return 403, "cross-site request refused; use the explorer's own page"
        return None

    def _same_origin(self, origin: str, host: Address) -> bool:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.path or parts.query:
            return False  # "null" (sandboxed frames, files) and anything that is not an origin
        address = _split(parts.netloc, 443 if parts.scheme == "https" else 80)
        if address == host:
            return True
        return self.allowed is not None and _known(address, self.allowed)
