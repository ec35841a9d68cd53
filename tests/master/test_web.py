"""The dashboard, rendered in memory: the real Site and resources on a
DummyChannel (no socket), and the page from status dicts."""

from __future__ import annotations

import json
import re
import secrets
from html.parser import HTMLParser

from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from cwtx.master import page, web
from cwtx.master.history import History
from cwtx.master.master import Master
from cwtx.master.sessions import ClientSession, WorkerSession
from cwtx.master.web import Dashboard, QuietSite, token

SECRET = secrets.token_hex(32).encode()
TOKEN = token(SECRET)
COOKIE = b"cwtx_dashboard_80"  # DummyChannel's host listens on port 80
HOSTILE = "<script>alert(1)</script>"


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        self.code = int(status.split()[1])
        self.headers: dict[str, list[str]] = {}
        for line in lines:
            name, _, value = line.partition(": ")
            self.headers.setdefault(name.lower(), []).append(value)

    def header(self, name: str) -> str:
        return self.headers[name][-1]


def get(site: QuietSite, uri: bytes, **headers: bytes) -> Response:
    channel = DummyChannel()
    channel.site = site
    request = Request(channel)
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name.encode(), [value])
    request.parseCookies()  # as HTTPChannel does, once the headers are in
    request.gotLength(0)
    request.requestReceived(b"GET", uri, b"HTTP/1.1")
    return Response(channel.transport.written.getvalue())


def a_site(workers: int = 2, clients: int = 1) -> tuple[Master, QuietSite, Clock]:
    clock = Clock()
    clock.advance(1_700_000_000)
    master = Master(now=clock.seconds)
    for i in range(workers):
        master.workers.append(WorkerSession(f"w{i}", 2, lambda job: None, lambda task: None))
    for i in range(clients):
        master.clients.append(ClientSession(f"c{i}", lambda item: None))
    master.history = History(master, clock)
    master.history.start()
    for _ in range(3):
        master.completed += 10
        clock.advance(5)
    return master, QuietSite(Dashboard(master, SECRET, lambda: "node1:5494")), clock


def test_the_token_is_derived_from_the_secret_and_does_not_show_it():
    assert re.fullmatch("[0-9a-f]{32}", TOKEN) and token(SECRET) == TOKEN
    assert token(secrets.token_hex(32).encode()) != TOKEN
    assert SECRET.decode()[:16] not in TOKEN


def test_without_a_good_token_every_path_is_refused_with_one_line_saying_why():
    _, site, _ = a_site()
    cases = [
        ({}, "no token"),
        ({"uri": b"/?token=" + b"0" * 32}, "wrong token in ?token="),
        ({"authorization": b"Bearer " + b"0" * 32}, "wrong bearer token"),
        ({"authorization": b"Basic " + TOKEN.encode()}, "not 'Bearer TOKEN'"),
        ({"cookie": COOKIE + b"=" + b"0" * 32}, "wrong token in the cookie"),
        ({"cookie": b"cwtx_dashboard_81=" + TOKEN.encode()}, "no token"),  # another port's
    ]
    for path in (b"/", b"/status.json", b"/dashboard.js", b"/nothing"):
        for headers, why in cases:
            headers = dict(headers)
            uri = headers.pop("uri", path)
            r = get(site, uri, **headers)
            assert r.code == 403, (path, headers)
            assert r.body.decode().count("\n") == 1 and why in r.body.decode()
            assert r.header("content-type").startswith("text/plain")
            assert TOKEN.encode() not in r.body


def test_the_token_in_the_url_becomes_a_strict_http_only_cookie_and_leaves_the_url():
    _, site, _ = a_site()
    r = get(site, b"/?token=" + TOKEN.encode())
    assert r.code == 303 and r.header("location") == "./"
    cookie = r.header("set-cookie")
    assert cookie.startswith(f"{COOKIE.decode()}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    # The page's own requests come with the cookie.
    with_cookie = {"cookie": COOKIE + b"=" + TOKEN.encode()}
    for path, kind in [
        (b"/", "text/html"),
        (b"/status.json", "application/json"),
        (b"/dashboard.js", "text/javascript"),
        (b"/dashboard.css", "text/css"),
    ]:
        r = get(site, path, **with_cookie)
        assert r.code == 200 and r.header("content-type").startswith(kind), path
        assert r.header("cache-control") == "no-store"
        assert "script-src 'self'" in r.header("content-security-policy")
    assert get(site, b"/nothing", **with_cookie).code == 404


def test_status_json_is_cw_status_json_without_the_token():
    master, site, _ = a_site()
    master.http = "http://127.0.0.1:8080/"
    r = get(site, b"/status.json", authorization=b"Bearer " + TOKEN.encode())
    status = json.loads(r.body)
    assert status == json.loads(json.dumps(master.status()))
    assert status["throughput"] == 2.0 and len(status["history"]) == 4
    assert status["http"] == "http://127.0.0.1:8080/" and TOKEN.encode() not in r.body


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parsed(html: bytes) -> Elements:
    elements = Elements()
    elements.feed(html.decode())
    return elements


def test_the_page_shows_the_master_workers_clients_totals_and_three_charts():
    master, site, _ = a_site()
    r = get(site, b"/", authorization=b"Bearer " + TOKEN.encode())
    assert r.code == 200
    html = parsed(r.body)
    text = " ".join(html.text)
    for shown in (master.id, "node1:5494", "w0", "w1", "c0", "30 jobs completed", "uptime"):
        assert shown in text, shown
    charts = [a["data-chart"] for t, a in html.tags if t == "svg"]
    assert charts == ["throughput", "queued", "busy"]
    lines = [a for t, a in html.tags if t == "polyline"]
    assert [a["data-points"] for a in lines] == ["4", "4", "4", "4"]
    assert all(len(a["points"].split()) == 4 for a in lines)
    assert ("script", {"src": "dashboard.js", "defer": "defer"}) in html.tags
    assert ("meta", {"http-equiv": "refresh", "content": str(page.REFRESH)}) in html.tags


def test_names_from_peers_are_escaped():
    master, site, _ = a_site(workers=0, clients=0)
    master.workers.append(WorkerSession(HOSTILE, 1, lambda job: None, lambda task: None))
    master.clients.append(ClientSession('"><img src=x onerror=alert(1)>', lambda item: None))
    r = get(site, b"/", authorization=b"Bearer " + TOKEN.encode())
    assert HOSTILE.encode() not in r.body and b"<img" not in r.body
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in r.body
    html = parsed(r.body)
    assert [a for t, a in html.tags if t == "script"] == [{"src": "dashboard.js", "defer": "defer"}]
    assert HOSTILE in " ".join(html.text)


def a_worker(i: int, running: int, **more) -> dict:
    return {
        "name": f"w{i}",
        "slots": 4,
        "running": running,
        "prefetched": 0,
        "resources": {},
        "done": 0,
        "lost": 0,
        "leaving": False,
        **more,
    }


def test_ten_thousand_workers_show_the_busiest_two_hundred_and_count_the_rest():
    workers = [a_worker(i, i % 5 if i != 4321 else 5) for i in range(10_000)]
    status = {"master": "m", "workers": workers, "clients": [], "history": []}
    html = parsed(page.render(status, [], now=0))
    names = [t for t in html.text if re.fullmatch(r"w\d+", t)]
    assert len(names) == page.MAX_ROWS and names[:3] == ["w4321", "w4", "w9"]
    assert all(int(n[1:]) % 5 == 4 for n in names[1:])  # 4 running each
    rows = [a for t, a in html.tags if t == "td" and a.get("data-key") == "running"]
    assert len(rows) == page.MAX_ROWS
    assert "and 9800 more workers" in html.text
    assert "Workers (10000)" in html.text


def test_fields_status_adds_later_show_up_after_the_known_ones():
    status = {
        "master": "m",
        "workers": [a_worker(0, 1, host="node3", pid=123, colour="blue")],
        "clients": [{"name": "c", "queued": 1, "user": "ann", "unschedulable": []}],
        "history": [],
        "uptime_hint": 5,
    }
    html = parsed(page.render(status, [], now=0))
    wanted = {"name", "slots", "leaving", "host", "pid", "user", "colour"}
    headers = [t for t in html.text if t in wanted]
    assert headers[:7] == ["name", "host", "pid", "slots", "leaving", "colour", "name"]
    assert "node3" in html.text and "ann" in html.text and "uptime hint" in html.text
    assert "blue" in html.text


def test_each_client_s_put_data_and_functions_are_shown_with_their_sizes():
    held = {"put_data": 3, "put_bytes": 12 * 2**20, "functions": 1, "function_bytes": 300}
    client = {"name": "c", "queued": 0, "share": 1.0, "unschedulable": [], **held}
    status = {"master": "m", "workers": [], "clients": [client], "history": []}
    html = parsed(page.render(status, [], now=0))
    order = ["share", "put data", "put bytes", "functions", "function bytes", "unschedulable"]
    assert [t for t in html.text if t in order] == order
    assert "12 MiB" in html.text and "300 B" in html.text


def test_values_are_shown_as_text():
    assert page.cell("resources", {"gpu": [0, 1], "mem": 2.5}) == "gpu=0,1, mem=2.5"
    assert page.cell("unschedulable", [{"jobs": 3, "why": "needs gpu=2"}]) == "3: needs gpu=2"
    assert page.cell("leaving", True) == "yes" and page.cell("leaving", False) == ""
    assert page.cell("share", 0.333333) == "0.333" and page.cell("x", None) == ""


def test_cw_status_prints_the_dashboard_url_with_its_token(capsys):
    from cwtx._cli import _print_status
    from cwtx._secret import load_secret

    master, _, _ = a_site()
    _print_status(master.status())
    assert "dashboard" not in capsys.readouterr().out  # not served: not printed
    master.http = "http://127.0.0.1:8080/"
    _print_status(master.status())
    out = capsys.readouterr().out
    assert f"dashboard: http://127.0.0.1:8080/?token={token(load_secret())}\n" in out


def test_chart_axis_numbers_are_short():
    from cwtx.master.charts import _number

    assert [_number(v) for v in (0.25, 19.2, 999, 1790, 12_000, 2.5e7)] == [
        "0.25",
        "19.2",
        "999",
        "1.8k",
        "12k",
        "25M",
    ]


def test_a_request_with_a_body_is_refused_before_it_is_read():
    """Anyone can reach the port: a body (token or not) must not be
    buffered, in memory or in a temporary file."""
    from twisted.internet.testing import StringTransport

    site = web.QuietSite(Resource())
    for head in (b"Content-Length: 100000000", b"Transfer-Encoding: chunked"):
        proto = site.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"POST /status.json HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n")
        proto.dataReceived(b"x" * 100_000)
        assert transport.value().startswith(b"HTTP/1.1 413 "), transport.value()[:80]
        assert transport.disconnecting
        channel = proto._channel
        assert all(r.content.getvalue() == b"" for r in channel.requests)


def test_an_endpoint_in_capitals_still_listens_on_loopback():
    assert web.endpoint("TCP6:0").endswith("interface=\\:\\:1")
    assert web.endpoint("TCP:8080").endswith("interface=127.0.0.1")


def test_pages_are_rendered_at_most_once_per_two_seconds():
    now = [0.0]
    cached = web.Cached(lambda: now[0])
    calls = []

    def render() -> bytes:
        calls.append(now[0])
        return b"page %d" % len(calls)

    assert cached.get(render) == b"page 1"
    now[0] = 1.9
    assert cached.get(render) == b"page 1"
    now[0] = 2.0
    assert cached.get(render) == b"page 2"
    assert calls == [0.0, 2.0]
