"""The dashboard over HTTP (``twistd cw-master --http``): twisted.web, off
by default, on loopback unless told otherwise, behind a token.

The token is derived from the cluster's shared secret, so whoever may
submit jobs may look, and nobody needs a second secret.  It comes as
``?token=`` once (then it is kept in an HttpOnly, SameSite=Strict cookie)
or as ``Authorization: Bearer``.  Requests are not logged: the first one
carries the token in its URL.
"""

from __future__ import annotations

import hmac
import json
import socket
import time
from collections.abc import Callable
from hashlib import sha256
from importlib.resources import files
from typing import Any

import txaio
from twisted.application.service import Service
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

import cwtx
from cwtx.master import page
from cwtx.master.master import Master
from cwtx.master.service import exit_nonzero_at_the_end, write_port_file
from cwtx.master.status import snapshot
from cwtx.wire.names import PROTOCOL_VERSION

txaio.use_twisted()
log = txaio.make_logger()

#: What the secret is keyed with to make the token (never the secret itself).
TOKEN_LABEL = b"cwtx dashboard"
LOOPBACK = "127.0.0.1"

#: On every answer: nothing cached, sniffed, framed or referred.
HEADERS = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    b"referrer-policy": b"no-referrer",
    b"content-security-policy": (
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def token(secret: bytes | None = None) -> str:
    """The dashboard's token for this shared secret (default: this user's,
    as docs/security.md says): 128 bits, hex."""
    if secret is None:
        from cwtx._secret import load_secret

        secret = load_secret()
    return hmac.new(secret, TOKEN_LABEL, sha256).hexdigest()[:32]


def url(base: str, secret: bytes) -> str:
    """The dashboard's URL (as status says it) with its token, to open once."""
    return f"{base}?token={token(secret)}"


def endpoint(description: str) -> str:
    """``--http``'s value as an endpoint string: a bare port, and a TCP
    endpoint that names no interface, listen on loopback only."""
    description = description.strip()
    if description.isdigit():
        return f"tcp:{description}:interface={LOOPBACK}"
    kind, *args = description.split(":")
    kind = kind.lower()  # Twisted reads "TCP6:" as "tcp6:"
    if kind in ("tcp", "ssl") and not any(a.startswith("interface=") for a in args):
        return f"{description}:interface={LOOPBACK}"
    if kind == "tcp6" and not any(a.startswith("interface=") for a in args):
        return f"{description}:interface=\\:\\:1"
    return description


def refusal(request: Request, expected: str) -> str | None:
    """Why ``request`` may not see the dashboard, or None if it may."""
    given = request.args.get(b"token")
    if given:
        if _same(given[0], expected):
            return None
        return "wrong token in ?token= (cw status prints the dashboard's URL with its token)"
    header = request.getHeader("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return "the Authorization header is not 'Bearer TOKEN'"
        return None if _same(value.strip().encode(), expected) else "wrong bearer token"
    cookie = request.getCookie(cookie_name(request))
    if cookie is not None:
        if _same(cookie, expected):
            return None
        return "wrong token in the cookie (open the URL cw status prints, with ?token=, again)"
    return (
        "no token: open the URL cw status prints (it ends in ?token=...), "
        "or send Authorization: Bearer TOKEN"
    )


def _same(given: bytes, expected: str) -> bool:
    return hmac.compare_digest(given, expected.encode())


def cookie_name(request: Request) -> bytes:
    """One cookie per port: cookies do not tell ports apart, masters may."""
    return b"cwtx_dashboard_%d" % getattr(request.getHost(), "port", 0)


class Refused(Resource):
    """403, and one line saying why."""

    isLeaf = True

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why

    def render(self, request: Request) -> bytes:
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"403 Forbidden: {self.why}\n".encode()


class Dashboard(Resource):
    """The site's root: checks the token, then serves the page, its script
    and style, and ``status.json``."""

    def __init__(
        self, master: Master, secret: bytes, address: Callable[[], str] = lambda: ""
    ) -> None:
        super().__init__()
        self.token = token(secret)
        self.putChild(b"", Page(master, address))
        self.putChild(b"status.json", StatusJSON(master))
        for name, kind in (("dashboard.js", b"text/javascript"), ("dashboard.css", b"text/css")):
            self.putChild(
                name.encode(), Static(files("cwtx.master").joinpath(name).read_bytes(), kind)
            )

    def getChildWithDefault(self, path: bytes, request: Request) -> Resource:
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        why = refusal(request, self.token)
        if why is not None:
            return Refused(why)
        if request.args.get(b"token"):
            request.addCookie(
                cookie_name(request),
                self.token.encode(),
                path=b"/",
                httpOnly=True,
                sameSite="strict",
            )
            if path == b"":  # the page: drop the token from the address bar
                return Redirect(b"./")
        return super().getChildWithDefault(path, request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return notFound()  # escapes what it shows, unlike Resource's default


class Redirect(Resource):
    isLeaf = True

    def __init__(self, location: bytes) -> None:
        super().__init__()
        self.location = location

    def render(self, request: Request) -> bytes:
        request.setResponseCode(303)
        request.setHeader(b"location", self.location)
        return b""


class Page(Resource):
    """``/``: the HTML page."""

    isLeaf = True

    def __init__(self, master: Master, address: Callable[[], str]) -> None:
        super().__init__()
        self.master = master
        self.address = address
        self.cached = Cached(master.now)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self.cached.get(self._render)

    def _render(self) -> bytes:
        master = self.master
        status = snapshot(master)
        history = master.history
        about = [
            ("address", self.address() or "?"),
            ("cwtx", cwtx.__version__),
            ("protocol", str(PROTOCOL_VERSION)),
            ("uptime", uptime(master.now() - master.started_at)),
            ("last minute", f"{history.per_minute() if history else 0} jobs completed"),
            ("updated", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())),
        ]
        now = history.clock.seconds() if history is not None else time.time()
        return page.render(status, about, now)


class StatusJSON(Resource):
    """``/status.json``: what ``cw status --json`` prints."""

    isLeaf = True

    def __init__(self, master: Master) -> None:
        super().__init__()
        self.master = master
        self.cached = Cached(master.now)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return self.cached.get(lambda: json.dumps(snapshot(self.master), indent=1).encode())


class Cached:
    """What a page rendered, kept for ``seconds``: every open tab asks every
    few seconds, and with 10,000 workers one rendering costs the master
    most of a second; they share it."""

    def __init__(self, now: Callable[[], float], seconds: float = 2.0) -> None:
        self.now = now
        self.seconds = seconds
        self._body = b""
        self._at = float("-inf")

    def get(self, render: Callable[[], bytes]) -> bytes:
        now = self.now()
        if not self._at <= now < self._at + self.seconds:
            self._body, self._at = render(), now
        return self._body


class Static(Resource):
    """A file shipped in the package, read once."""

    isLeaf = True

    def __init__(self, body: bytes, kind: bytes) -> None:
        super().__init__()
        self.body = body
        self.kind = kind

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.kind + b"; charset=utf-8")
        return self.body


def uptime(seconds: float) -> str:
    s = int(max(0, seconds))
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {s:02d} s"
    return f"{s} s"


class BodylessRequest(Request):
    """The dashboard reads nothing from a request: one that brings a body
    (anyone may send one, token or not) is refused before it is read,
    rather than buffered in a temporary file."""

    refused = False

    def gotLength(self, length: int | None) -> None:
        super().gotLength(0)  # an empty buffer in memory, never a file
        if length or self.requestHeaders.hasHeader(b"transfer-encoding"):
            self.refused = True
            transport = self.channel.transport
            transport.write(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            transport.loseConnection()

    def handleContentChunk(self, data: bytes) -> None:
        if not self.refused:
            super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.refused:
            super().requestReceived(command, path, version)


class QuietSite(Site):
    """A Site that logs no requests (the first carries the token)."""

    noisy = False
    displayTracebacks = False
    requestFactory = BodylessRequest

    def log(self, request: Request) -> None:
        pass


class DashboardService(Service):
    """Serves the dashboard on ``description`` (an endpoint string, after
    :func:`endpoint`); ``port_file``, if given, receives the TCP port
    actually bound (for port 0).  The URL goes to the log and to status."""

    def __init__(
        self,
        reactor: Any,
        description: str,
        master: Master,
        secret: bytes,
        port_file: str | None = None,
        address: Callable[[], str] = lambda: "",
    ) -> None:
        self.reactor = reactor
        self.description = description
        self.master = master
        self.site = QuietSite(Dashboard(master, secret, address))
        self.port_file = port_file
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        d = serverFromString(self.reactor, self.description).listen(self.site)
        d.addCallback(self._listening)

        def failed(failure: Any) -> None:
            log.error(
                "cwtx dashboard could not listen on {listen}: {reason}",
                listen=self.description,
                reason=failure.getErrorMessage(),
            )
            exit_nonzero_at_the_end()
            self.reactor.callWhenRunning(self.reactor.stop)

        d.addErrback(failed)

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        address = port.getHost()
        host = getattr(address, "host", LOOPBACK)
        if host in ("0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        self.master.http = f"http://{host}:{getattr(address, 'port', '')}/"
        log.info("cwtx dashboard at {url}", url=self.master.http)
        if self.port_file:
            write_port_file(self.port_file, address)

    def stopService(self) -> Any:
        super().stopService()
        self.master.http = None
        if self.port is not None:
            return self.port.stopListening()
        return None
