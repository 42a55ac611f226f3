"""Who a browser is, without trusting anything it shows: a server-issued secret in an HttpOnly cookie.

- ``IdentityCookie``: Starlette (pure ASGI) middleware that ``dashboard/server.py`` hands to ``st.App``. An HTTP
  request without a well-formed identity cookie gets a new one: ``secrets.token_urlsafe(32)`` (256 bits),
  ``HttpOnly; SameSite=Lax; Path=/`` (page scripts cannot read it, other sites' forms do not send it). The secret is
  never printed, logged, stored or put in a URL.
- ``browser_key(secret)``: what the database keys rows by: a one-way hash of the secret. A database dump, a teacher
  export or a job id therefore never holds anything that opens a browser's history.
- ``client_key(address)``: the key of the passcode backoff (``Store.passcode_attempt``): the client's address (an
  IPv6 address by its /64, which one machine owns), so neither a reload, a new tab, a new browser session nor
  dropping the cookie resets it.

Cookies belong to a host, not a port: two dashboard processes on 127.0.0.1:8501 and :8502 see the same cookie, and
with one shared database (``--db``) a student finds their history on either.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from typing import Any

COOKIE = "compression_lab_id"
COOKIE_MAX_AGE_S = 180 * 24 * 3600  # half a year: a course's length; browsers cap cookies at 400 days anyway
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")  # token_urlsafe(32) is 43 characters


def new_secret() -> str:
    """A fresh browser secret (256 random bits, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def valid_secret(value: Any) -> bool:
    """Well-formed as one of ours (at least 256 bits' worth of characters): anything else is replaced."""
    return isinstance(value, str) and bool(_SECRET_RE.match(value))


def browser_key(secret: str) -> str:
    """The database key of a browser: ``k`` + 40 hex digits of SHA-256 over the secret (not reversible, and no
    id stored before the cookie existed can be produced by any secret)."""
    return "k" + hashlib.sha256(("compression-lab-browser:" + secret).encode("utf-8")).hexdigest()[:40]


def client_key(address: Any) -> str:
    """The passcode backoff's key for a client address (``st.context.ip_address``): ``ip:ADDRESS``, an IPv6 address by
    its /64 network; ``ip:unknown`` when the server does not know it (AppTest, some proxies): then every such client
    shares one backoff, which errs on the side of the passcode."""
    if not isinstance(address, str) or not address:
        return "ip:unknown"
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return "ip:" + address[:60]
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        return "ip:" + str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return "ip:" + str(ip)


def cookie_from_headers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The identity cookie's value from raw ASGI headers, or None. Parsed as Starlette parses it for
    ``st.context.cookies`` (leniently: another app's odd cookie on the same host, e.g. JSON with spaces, which makes
    ``http.cookies.SimpleCookie`` drop the whole header, must not cost a student their identity)."""
    from starlette.requests import cookie_parser

    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        try:
            found = cookie_parser(value.decode("latin-1")).get(COOKIE)
        except Exception:  # a header nothing can read: as if there were none of ours
            continue
        if found is not None:
            return found
    return None


def set_cookie_header(secret: str, secure: bool = False) -> bytes:
    return (f"{COOKIE}={secret}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Lax"
            + ("; Secure" if secure else "")).encode("latin-1")


class IdentityCookie:
    """ASGI middleware: every HTTP response to a request without a valid identity cookie sets a new one (HttpOnly,
    SameSite=Lax, Path=/). WebSocket handshakes pass through: the page reads the cookie the browser sends with it
    (``st.context.cookies``)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get("type") != "http" or valid_secret(cookie_from_headers(scope.get("headers") or [])):
            await self.app(scope, receive, send)
            return
        header = set_cookie_header(new_secret(), secure=scope.get("scheme") == "https")

        async def send_with_cookie(message) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", header)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
