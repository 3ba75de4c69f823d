"""The edge rules, through the stack's running HAProxy: what it answers itself (413) and what
it holds back from the instances (slow request bodies)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests

from shop.config import Settings

BODY_LIMIT = Settings.__dataclass_fields__["max_body_bytes"].default
JSON = {"Content-Type": "application/json"}


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
    url = healthy_stack["url"] + "/api/v1/cart/items"
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
    url = healthy_stack["url"] + "/api/v1/cart/items"
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
    parts = urlsplit(healthy_stack["url"])
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
            outcome = _outcome(lambda: requests.get(healthy_stack["url"] + "/healthz", timeout=3))
            answers.append((outcome, round(time.monotonic() - started, 2)))
            time.sleep(0.25)
    finally:
        stop.set()
        dripping.join(timeout=5)
        for conn in slow:
            conn.close()
    assert all(outcome.startswith("200 app") for outcome, _ in answers), answers
