"""The edge rules, through the stack's running HAProxy: what it answers itself (429 over a rate
limit, 413 over the body limit) and what it holds back from the instances (slow bodies).

The balancer gives every request an id (or keeps a client's sane one) that the instance logs and
every answer carries.

The stack exempts its own tools on 127.0.0.1 from the rate limits (make bench and the other
stack tests drive far more than a shopper); the rate tests here connect from other loopback
addresses, a fresh one each, which the rules treat like any client.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from shop.config import Settings
from tests.stack.conftest import Shopper, in_stock_products

BODY_LIMIT = Settings.__dataclass_fields__["max_body_bytes"].default
JSON = {"Content-Type": "application/json"}
# The balancer's request ids (HAProxy's uuid(): version 4).
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class _FromAddress(HTTPAdapter):
    """Connections from one local address, as a client of its own would make them."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client_from_new_address() -> requests.Session:
    """A session connecting from a loopback address no other test uses (not 127.0.0.1)."""
    address = f"127.{random.randrange(1, 255)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    http = requests.Session()
    http.mount("http://", _FromAddress(address))
    return http


def _answered_by(response: requests.Response) -> str:
    return response.headers.get("X-Served-By", "edge")


def _rate_limited(response: requests.Response, retry_after: str) -> bool:
    return (
        response.status_code == 429
        and _answered_by(response) == "edge"
        and response.headers.get("Retry-After") == retry_after
        and response.json()["error"]["code"] == "rate_limited"
    )


def test_a_burst_of_logins_gets_429_at_the_edge_while_browsing_goes_on(healthy_stack):
    shopper = Shopper(healthy_stack.url, http=client_from_new_address())
    token = shopper.get("/api/v1/session").json()["csrf_token"]
    attempts = [
        shopper.request(
            "POST",
            "/api/v1/session/login",
            json={"email": "nobody@example.com", "password": "a wrong guess"},
            headers={"X-CSRF-Token": token},
        )
        for _ in range(25)
    ]
    # 20 a minute reach an instance (a wrong password: 401), then the edge answers.
    assert [_answered_by(r) == "edge" for r in attempts] == [False] * 20 + [True] * 5
    assert all(_rate_limited(r, "60") for r in attempts[20:]), attempts[-1].text
    assert all(UUID.fullmatch(r.headers["X-Request-ID"]) for r in attempts[20:])  # its own too

    # Every credential endpoint shares the limit, pages and API, however the path is spelt.
    for path in ("/login", "/register", "/api/v1/users", "/password/reset", "/api/v1/password/x"):
        assert _rate_limited(shopper.request("POST", path, data={"email": "x"}), "60"), path
    assert _rate_limited(shopper.request("POST", "/%6Cogin", data={}), "60")

    # Browsing and shopping from the same address go on, and the login form still shows.
    product = in_stock_products(healthy_stack, 1)[0]
    for path in ("/", "/?page=2", f"/products/{product['id']}", "/login", "/api/v1/session"):
        page = shopper.get(path)
        assert page.status_code == 200 and _answered_by(page) != "edge", (path, page.text[:200])
    shopper.get(f"/products/{product['id']}")
    added = shopper.submit("/cart/add", {"product_id": product["id"], "quantity": 1})
    assert added.status_code == 200 and shopper.cart_count == "1"


def test_the_general_limit_counts_every_request_and_then_refuses_any_page(healthy_stack):
    """1,000 requests per 10 s per address, refused ones included. The quickest way there from
    one Python client is requests the edge refuses itself (past the credential limit): about
    two seconds. On a machine too busy for that, the client keeps going (up to 3,000 requests)
    until its rate over the last 10 s is past the limit."""
    url = healthy_stack.url
    http = client_from_new_address()
    sent = Counter(_answered_by(http.post(url + "/register")) for _ in range(500))
    assert sent["edge"] == 480, sent  # 20 reached an instance (no CSRF token: 403)
    under = http.get(url + "/")
    assert under.status_code == 200 and _answered_by(under) != "edge"  # 501: under the limit
    count, page = 501, under
    while count < 3000 and page.status_code != 429:
        for _ in range(100):
            http.post(url + "/register")
        page = http.get(url + "/")
        count += 101
    assert count > 1000 and _rate_limited(page, "10"), (count, page.status_code)
    for path in ("/healthz", "/api/v1/products"):
        assert _rate_limited(http.get(url + path), "10"), path
    # Other clients are not held back (here the stack's own, exempt, address).
    assert requests.get(url + "/", timeout=10).status_code == 200


HSTS = "max-age=63072000; includeSubDomains"


def test_hsts_on_every_answer_over_tls_and_never_over_plain_http(healthy_stack):
    """The stack's HTTPS port (a self-signed certificate): HSTS on the instances' answers and
    on HAProxy's own (here a 413); the same requests over plain HTTP carry none."""
    balancer = healthy_stack.balancer
    for base, expected in ((balancer.tls_url, HSTS), (balancer.url, None)):
        trust = balancer.tls_pem  # the stack's own self-signed certificate
        page = requests.get(base + "/", timeout=10, verify=trust)
        refused = requests.post(
            base + "/api/v1/cart/items", data=b"x" * 70_000, headers=JSON, timeout=10, verify=trust
        )
        assert page.status_code == 200 and _answered_by(page) != "edge", page.status_code
        assert (refused.status_code, _answered_by(refused)) == (413, "edge")
        for answer in (page, refused):
            assert answer.headers.get("Strict-Transport-Security") == expected, (base, answer)


def _outcome(send) -> str:
    """What one request got: its status and who answered ("edge" when HAProxy did), or the
    error that stood in for an answer (a connection reset)."""
    try:
        response = send()
    except requests.RequestException as exc:
        return f"no answer: {type(exc).__name__}: {str(exc)[:100]}"
    body = response.json() if response.headers.get("Content-Type") == "application/json" else {}
    who = response.headers.get("X-Served-By", "edge")
    return f"{response.status_code} {who} {body.get('error', {}).get('code', '')}".strip()


def _chunks(size: int, chunk: int = 8192) -> Iterator[bytes]:
    """A body of ``size`` bytes sent chunked (no Content-Length: HAProxy cannot know in advance)."""
    while size > 0:
        yield b"x" * min(chunk, size)
        size -= chunk


def test_every_oversized_upload_gets_a_413_and_never_a_reset(healthy_stack):
    url = healthy_stack.url + "/api/v1/cart/items"
    announced = [
        # A new connection each, as the uploads of different clients would come.
        _outcome(lambda: requests.post(url, data=b"x" * 300_000, headers=JSON, timeout=15))
        for _ in range(30)
    ]
    chunked = [
        _outcome(lambda: requests.post(url, data=_chunks(300_000), headers=JSON, timeout=15))
        for _ in range(10)
    ]
    refused = "413 edge request_entity_too_large"
    assert Counter(announced) == {refused: 30}, Counter(announced)
    assert Counter(chunked) == {refused: 10}, Counter(chunked)


def test_a_body_of_exactly_the_limit_still_reaches_an_instance(healthy_stack):
    url = healthy_stack.url + "/api/v1/cart/items"
    # No CSRF token: the instance refuses it with 403, after reading the whole body.
    for data in (b"x" * BODY_LIMIT, _chunks(BODY_LIMIT)):
        outcome = _outcome(
            lambda data=data: requests.post(url, data=data, headers=JSON, timeout=15)
        )
        assert outcome.startswith("403 app") and outcome.endswith("csrf_failed"), outcome


def test_slow_request_bodies_wait_at_the_edge_and_do_not_starve_the_instances(healthy_stack):
    """32 clients each send a form one byte at a time: more than the stack's 24 worker threads
    (3 instances x 2 workers x 4 threads). HAProxy holds each request until its body is whole,
    so none reaches an instance, and /healthz through the balancer keeps answering at once."""
    parts = urlsplit(healthy_stack.url)
    head = (
        f"POST /cart/add HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
    ).encode()
    slow = [socket.create_connection((parts.hostname, parts.port), timeout=5) for _ in range(32)]
    stop = threading.Event()

    def drip() -> None:  # a byte per connection every 0.2 s: 100 bytes would take 20 s
        while not stop.wait(0.2):
            for conn in slow:
                with contextlib.suppress(OSError):  # HAProxy may have given up on it
                    conn.send(b"x")

    dripping = threading.Thread(target=drip, daemon=True)
    try:
        for conn in slow:
            conn.sendall(head)
        dripping.start()
        time.sleep(1.0)  # every slow request is in flight
        answers = []
        for _ in range(8):
            started = time.monotonic()
            outcome = _outcome(lambda: requests.get(healthy_stack.url + "/healthz", timeout=3))
            answers.append((outcome, round(time.monotonic() - started, 2)))
            time.sleep(0.25)
    finally:
        stop.set()
        dripping.join(timeout=5)
        for conn in slow:
            conn.close()
    assert all(outcome.startswith("200 app") for outcome, _ in answers), answers


def _logged(path: str, text: str, timeout: float = 5.0) -> bool:
    """Whether ``text`` shows up in the log at ``path`` (HAProxy writes its line after the
    answer has gone out)."""
    deadline = time.monotonic() + timeout
    while text not in Path(path).read_text(errors="replace"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_one_request_id_in_the_balancer_s_log_the_instance_s_and_the_answer(healthy_stack):
    topology = healthy_stack
    balancer = topology.balancer.url
    made = requests.get(balancer + "/api/v1/products?per_page=1", timeout=10)
    request_id = made.headers["X-Request-ID"]
    assert UUID.fullmatch(request_id), request_id  # none sent: the balancer's own
    assert _logged(topology.balancer.log, request_id)
    assert any(
        _logged(app.log, f"rid={request_id}", timeout=1) for app in topology.apps.values()
    ), "no instance logged the balancer's id"
    # A client's own id is kept when the shop would keep it too; any other is replaced.
    kept = requests.get(balancer + "/healthz", headers={"X-Request-ID": "lb-1234.a_b"}, timeout=10)
    assert kept.headers["X-Request-ID"] == "lb-1234.a_b"
    replaced = requests.get(balancer + "/healthz", headers={"X-Request-ID": "no good!"}, timeout=10)
    assert UUID.fullmatch(replaced.headers["X-Request-ID"])
    # A page the edge cache kept carries this request's id, not that of the one that filled it.
    page = f"/products/{in_stock_products(topology, 1)[0]['id']}"
    ids = {requests.get(topology.url + page, timeout=10).headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3 and all(UUID.fullmatch(i) for i in ids)
