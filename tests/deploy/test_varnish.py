"""The edge cache's rules (deploy/varnish/shop.vcl.j2), run in a real varnishd started as the
stack starts it, in front of a stub backend that answers with the headers the shop's pages
carry (``Cache-Control: public, max-age=0, s-maxage=10, stale-while-revalidate=30``,
``xkey: shop p12``) or any others a test gives. What is cached, for whom, what never is, and
who may purge: checked here without the shop, so the rules hold whatever the app sends."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.stack.edge_purger import VarnishPurge
from deploy.stack.processes import _terminate, spawn_child
from deploy.stack.varnish import check_vcl, varnishd_binary, varnishd_command
from deploy.varnish import Cache, render
from tests.support import missing

PUBLIC = "public, max-age=0, s-maxage=10, stale-while-revalidate=30"


@dataclass
class Stub:
    """The backend: ``pages[path] = (status, headers)``; every request it got is recorded."""

    pages: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    served: int = 0

    def hits(self, path: str) -> int:
        return sum(1 for _, seen_path, _ in self.seen if seen_path == path)


def _stub_server(stub: Stub) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            stub.seen.append((self.command, self.path, dict(self.headers.items())))
            status, headers = stub.pages.get(
                self.path, stub.pages.get(self.path.split("?")[0], (200, {}))
            )
            stub.served += 1
            body = f"page {self.path} #{stub.served} cookie={self.headers.get('Cookie')}".encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("X-Served-By", "stub")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Edge:
    port: int
    purge_port: int
    stub: Stub

    def get(self, path: str, method: str = "GET", **headers: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        response.text = response.read().decode()  # type: ignore[attr-defined]
        connection.close()
        return response

    def purge(self, tags: str) -> int:
        return VarnishPurge("127.0.0.1", self.purge_port)(tags.split())


@pytest.fixture(scope="module")
def edge() -> Iterator[Edge]:
    if shutil.which(varnishd_binary()) is None and not Path(varnishd_binary()).exists():
        missing("varnishd (Debian package varnish)")
    stub = Stub()
    server = _stub_server(stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="shop-varnish-test-"))
    work.chmod(0o755)
    vcl = work / "shop.vcl"
    vcl.write_text(render(Cache("127.0.0.1", server.server_address[1])))
    try:
        check_vcl(str(vcl), str(work / "n"))
    except Exception as exc:  # noqa: BLE001 - a missing xkey module shows here
        if "xkey" in str(exc):
            missing("vmod xkey (Debian package varnish-modules)")
        raise
    port, purge_port = _free_port(), _free_port()
    argv = varnishd_command(str(vcl), str(work / "n"), port, purge_port)
    log = work / "varnish.log"
    pid = spawn_child(argv, log=str(log), pidfile=str(work / "varnish.pid"))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                socket.create_connection(("127.0.0.1", purge_port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield Edge(port, purge_port, stub)
    finally:
        _terminate([pid], "varnishd")
        server.shutdown()
        server.server_close()
        shutil.rmtree(work, ignore_errors=True)


def page(edge: Edge, path: str, status: int = 200, **headers: str) -> str:
    edge.stub.pages[path] = (status, {"Cache-Control": PUBLIC, "xkey": "shop", **headers})
    return path


def test_the_vcl_compiles():
    """As ``make stack`` checks it before each start (varnishd, run as root, reads the file as
    its own unprivileged user: the folder must be readable by others)."""
    if shutil.which(varnishd_binary()) is None and not Path(varnishd_binary()).exists():
        missing("varnishd (Debian package varnish)")
    tmp_path = Path(tempfile.mkdtemp(prefix="shop-vcl-test-"))
    tmp_path.chmod(0o755)
    vcl = tmp_path / "shop.vcl"
    vcl.write_text(render(Cache("127.0.0.1", 9, session_cookie="shop_sid")))
    done = subprocess.run(
        [varnishd_binary(), "-C", "-n", str(tmp_path / "n"), "-f", str(vcl)],
        capture_output=True,
        text=True,
    )
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_an_anonymous_catalogue_page_is_a_miss_then_a_hit(edge):
    path = page(edge, "/products/101", xkey="shop p101")
    first, second = edge.get(path), edge.get(path)
    assert first.getheader("X-Cache") == "MISS"
    assert second.getheader("X-Cache") == "HIT"
    assert second.text == first.text and edge.stub.hits(path) == 1
    assert second.getheader("X-Served-By") == "stub"
    assert second.getheader("xkey") is None, "the tags are for the cache only"
    grid = page(edge, "/", xkey="shop p101 p102")
    edge.get("/?q=kettle")
    assert edge.get("/?q=kettle").getheader("X-Cache") == "HIT"
    assert edge.get("/?q=teapot").getheader("X-Cache") == "MISS", "the query is part of the key"
    assert edge.get(grid).getheader("X-Cache") == "MISS"


def test_other_cookies_are_dropped_so_visitors_share_one_copy(edge):
    path = page(edge, "/products/102")
    edge.get(path, Cookie="_ga=GA1.1; theme=dark")
    again = edge.get(path, Cookie="consent=yes")
    assert again.getheader("X-Cache") == "HIT"
    assert "cookie=None" in again.text, "the backend never saw a visitor's cookie"


@pytest.mark.parametrize("cookie", ["shop_sid=abc", "__Host-shop_sid=abc", "a=1; shop_sid=abc"])
def test_a_session_is_never_answered_from_the_cache_nor_kept(edge, cookie):
    path = page(edge, f"/products/{200 + len(cookie)}")
    assert edge.get(path).getheader("X-Cache") == "MISS"  # a shared copy exists now
    personal = [edge.get(path, Cookie=cookie) for _ in range(2)]
    assert [r.getheader("X-Cache") for r in personal] == ["PASS", "PASS"]
    assert all(f"cookie={cookie}" in r.text for r in personal), "its own page, cookie and all"
    assert edge.get(path).getheader("X-Cache") == "HIT", "and nothing of it replaced the copy"


def test_a_response_that_sets_a_cookie_or_is_private_is_never_kept(edge):
    cookie = page(edge, "/products/301", **{"Set-Cookie": "shop_sid=new; HttpOnly"})
    private = page(edge, "/products/302", **{"Cache-Control": "private, no-store"})
    unmarked = "/products/303"
    edge.stub.pages[unmarked] = (200, {})
    for path in (cookie, private, unmarked):
        answers = [edge.get(path) for _ in range(3)]
        assert all(a.getheader("X-Cache") != "HIT" for a in answers), path
        assert edge.stub.hits(path) == 3, path
    assert edge.get(cookie).getheader("Set-Cookie") == "shop_sid=new; HttpOnly"


def test_errors_are_not_kept_even_if_marked_public(edge):
    path = page(edge, "/products/304", status=500)
    edge.get(path)
    assert edge.get(path).getheader("X-Cache") != "HIT"


def test_only_the_catalogue_and_static_files_are_candidates(edge):
    for path in ("/admin/products", "/account", "/cart", "/api/v1/products", "/login"):
        page(edge, path)
        assert [edge.get(path).getheader("X-Cache") for _ in range(2)] == ["PASS", "PASS"], path
    css = page(edge, "/static/shop.css", **{"Cache-Control": "public, max-age=31536000, immutable"})
    edge.get(css + "?v=abc")
    assert edge.get(css + "?v=abc").getheader("X-Cache") == "HIT"


def test_posts_and_authorised_requests_pass(edge):
    path = page(edge, "/products/401")
    assert edge.get(path, method="POST").getheader("X-Cache") == "PASS"
    assert edge.get(path, Authorization="Bearer x").getheader("X-Cache") == "PASS"
    assert edge.stub.hits(path) == 2


def test_a_purge_drops_exactly_the_pages_with_its_tags(edge):
    one = page(edge, "/products/501", xkey="shop p501")
    two = page(edge, "/products/502", xkey="shop p502")
    grid = page(edge, "/?category=7", xkey="shop p501 p502")
    for path in (one, two, grid):
        edge.get(path)
    assert edge.purge("p501") == 2
    assert edge.get(one).getheader("X-Cache") == "MISS"
    assert edge.get(grid).getheader("X-Cache") == "MISS"
    assert edge.get(two).getheader("X-Cache") == "HIT"
    assert edge.purge("shop") >= 3
    assert edge.get(two).getheader("X-Cache") == "MISS"


def test_purges_work_only_on_the_purge_socket(edge):
    path = page(edge, "/products/601", xkey="shop p601")
    edge.get(path)
    refused = edge.get("/", method="PURGE", **{"xkey-purge": "p601"})
    assert refused.status == 405
    assert edge.get(path).getheader("X-Cache") == "HIT", "a shopper purges nothing"
    connection = http.client.HTTPConnection("127.0.0.1", edge.purge_port, timeout=5)
    connection.request("GET", path)
    assert connection.getresponse().status == 405, "the purge socket serves no pages"


def test_the_edge_adds_no_address_of_its_own_to_x_forwarded_for(edge):
    path = page(edge, "/products/701")
    edge.get(path, method="POST", **{"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
    _, _, headers = [s for s in edge.stub.seen if s[1] == path][-1]
    assert headers["X-Forwarded-For"] == "203.0.113.9, 198.51.100.7"
    assert "X-Edge-Result" not in headers, "the cache's own notes stay in the cache"


def test_a_stale_page_is_served_while_it_is_fetched_again(edge):
    path = page(
        edge, "/products/801", **{"Cache-Control": "public, s-maxage=1, stale-while-revalidate=30"}
    )
    edge.get(path)
    time.sleep(1.3)
    stale = edge.get(path)
    assert stale.getheader("X-Cache") == "HIT", "grace: the old copy, not a wait"
    deadline = time.monotonic() + 5
    while edge.stub.hits(path) < 2:  # the background fetch
        assert time.monotonic() < deadline
        time.sleep(0.05)
