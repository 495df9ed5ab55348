"""Who may talk to the server: the host names it answers to, and which pages may post to it.

DNS rebinding: a web page on evil.example re-points its own name at 127.0.0.1, and the browser then
lets that page read a server on loopback, since to the browser it is the same origin. The request
still carries `Host: evil.example`, so a server that answers only to its own names is out of reach.
An IP address as the Host cannot be such an attack (the page's origin would be that address), so
addresses are always answered; names must be `localhost` or listed (`vlfuse serve --allowed-host`).

A page from another origin can still *send* a request (a form post needs no permission), to spend
the server's CPU even if it cannot read the answer. Browsers name the sending page in `Origin`, so
any request that changes or computes something (not GET, HEAD or OPTIONS) from a foreign origin is
refused before its body is read, unless that origin was allowed (`--cors-origin`, which also opens
CORS for it).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from .limits import error_body, send_json

DEFAULT_HOSTS = ("localhost",)
READ_ONLY_METHODS = ("GET", "HEAD", "OPTIONS")


def host_name(host: str) -> str:
    """'Example.org:8000' -> 'example.org', '[::1]:80' -> '::1'; '' when there is none."""
    try:
        return (urlsplit("//" + host).hostname or "").rstrip(".")
    except ValueError:  # a malformed port or bracket
        return ""


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class RequestGuard:
    """ASGI middleware: 400 for a Host this server does not answer to, 403 for a cross-origin write."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] = DEFAULT_HOSTS, cors_origins: tuple[str, ...] = ()):
        self.app = app
        self.hosts = {h.lower().rstrip(".") for h in allowed_hosts}
        self.origins = {o.lower().rstrip("/") for o in cors_origins}

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        return bool(name) and (is_address(name) or name in self.hosts or "*" in self.hosts)

    def origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.lower().rstrip("/")
        return urlsplit(origin).netloc == host.lower() or origin in self.origins or "*" in self.origins

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get(b"host", "")
        if not self.host_allowed(host):
            return await send_json(send, 400, error_body(
                f"Host {host!r} is not a name this server answers to (it answers to IP addresses and "
                f"{', '.join(sorted(self.hosts))}; add names with vlfuse serve --allowed-host NAME)", "HostNotAllowed"))
        origin = headers.get(b"origin")
        if scope["method"] not in READ_ONLY_METHODS and origin is not None and not self.origin_allowed(origin, host):
            return await send_json(send, 403, error_body(
                f"cross-origin request from {origin!r} refused (allow a page's origin with vlfuse serve "
                "--cors-origin ORIGIN)", "CrossOrigin"))
        await self.app(scope, receive, send)
