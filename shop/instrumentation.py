"""Per-request counts of SQL statements and Redis round trips, for benchmarks and operators.

Off by default (``SHOP_INSTRUMENT=1`` turns it on): each response then carries
``X-Shop-SQL`` and ``X-Shop-Redis``. Counting costs a context-variable lookup per statement
and per round trip; nothing is counted, not even that, while it is off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from dataclasses import dataclass

from sqlalchemy import Engine, event

from . import redis_client


@dataclass
class RequestCounts:
    sql: int = 0
    redis: int = 0


_current: ContextVar[RequestCounts | None] = ContextVar("shop_request_counts", default=None)


def current() -> RequestCounts | None:
    """This request's counts, if something (this middleware, or the metrics') counts them."""
    return _current.get()


def start(counts: RequestCounts) -> Token:
    """Count into ``counts`` until :func:`stop` (shop/metrics.py, when SHOP_INSTRUMENT is off)."""
    return _current.set(counts)


def stop(token: Token) -> None:
    _current.reset(token)


class CountingMiddleware:
    """WSGI middleware: counts from before the session is opened until after it is saved
    (both happen outside Flask's before/after-request hooks), then adds the headers."""

    def __init__(self, wsgi_app: Callable) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        counts = RequestCounts()
        token = _current.set(counts)

        def counted_start_response(status: str, headers: list, exc_info=None):
            headers.append(("X-Shop-SQL", str(counts.sql)))
            headers.append(("X-Shop-Redis", str(counts.redis)))
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, counted_start_response)
        finally:
            _current.reset(token)


def _count_statement(*_args, **_kwargs) -> None:
    counts = _current.get()
    if counts is not None:
        counts.sql += 1


def _count_round_trip() -> None:
    counts = _current.get()
    if counts is not None:
        counts.redis += 1


def install(engines: list[Engine]) -> None:
    """Count every statement on these engines and every Redis round trip of this process."""
    for engine in engines:
        if not event.contains(engine, "before_cursor_execute", _count_statement):
            event.listen(engine, "before_cursor_execute", _count_statement)
    redis_client.round_trip_hook = _count_round_trip
