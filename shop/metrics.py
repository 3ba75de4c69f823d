"""What an operator graphs: requests, cache tiers, Redis, SQL and the pools, in Prometheus' terms.

On when ``SHOP_METRICS_PORT`` is set (:func:`install`). Every value is kept in this process and,
under gunicorn, in ``PROMETHEUS_MULTIPROC_DIR`` (``prometheus_client``'s multiprocess mode,
set up by gunicorn.conf.py before any worker imports this), where the master's metrics port
sums every worker's files (shop/metrics_server.py). Recording costs a few memory writes per
request and never a Redis command or an SQL statement: the counts come from hooks the request
already runs through (the statement and round-trip counters of :mod:`shop.instrumentation`, the
cache's tiers, the replica choice, the pool's check-outs).

Labels are bounded: a route is the URL rule (``/products/<int:product_id>``), never the path;
an unknown method is ``other``; a path no rule matches is ``<unmatched>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine, event

from . import db, instrumentation, redis_client
from .page_cache import ROUTE_KEY

if TYPE_CHECKING:
    from flask import Flask

    from .services import Services

REQUESTS = Counter(
    "shop_http_requests_total",
    "Requests answered, by route (the URL rule), method and status.",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "shop_http_request_duration_seconds",
    "Time from the request reaching the app to its response (session saved), by route, "
    "method and status.",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SQL_PER_REQUEST = Histogram(
    "shop_request_sql_statements",
    "SQL statements one request ran (every engine).",
    buckets=(0, 1, 2, 3, 5, 10, 20, 50, 100),
)
REDIS_PER_REQUEST = Histogram(
    "shop_request_redis_round_trips",
    "Redis round trips (commands or pipelines) one request made.",
    buckets=(0, 1, 2, 3, 5, 10, 20, 50),
)
REDIS_ROUND_TRIPS = Counter(
    "shop_redis_round_trips_total", "Redis round trips made by requests (commands or pipelines)."
)
REDIS_ERRORS = Counter(
    "shop_redis_errors_total",
    "Redis failures seen by this process (unreachable, timed out, refused by the breaker), "
    "by node and error.",
    ["node", "error"],
)
BREAKER_OPEN = Gauge(
    "shop_redis_breaker_open",
    "1 while a worker's fail-fast breaker for this Redis node is open (from a failed connect "
    "until a connect succeeds), else 0; the highest of the live workers.",
    ["node"],
    multiprocess_mode="livemax",
)
CACHE_LOOKUPS = Counter(
    "shop_cache_lookups_total",
    "Catalogue and page cache lookups by the tier that answered: local (this process's "
    "memory), redis, or database (a miss everywhere, rebuilt by the loader).",
    ["cache", "tier"],
)
CACHE_REBUILDS = Counter(
    "shop_cache_rebuilds_total",
    "Catalogue and page rebuilds (a miss that read the database) by how they ended: stored, "
    "invalidated (something the value shows changed while it was read: served, not kept), "
    "lock_lost, busy (another request's rebuild outlived the wait: served, not kept), failed "
    "(Redis went away).",
    ["cache", "outcome"],
)
DB_READS = Counter(
    "shop_db_catalogue_reads_total",
    "Catalogue reads by the server that ran them: a replica's name, or primary (no replica, "
    "all skipped or behind the last write).",
    ["target"],
)
POOL_IN_USE = Gauge(
    "shop_db_pool_connections_in_use",
    "Connections checked out of the pool, by engine; summed over the live workers.",
    ["engine"],
    multiprocess_mode="livesum",
)
SESSIONS_CREATED = Counter("shop_sessions_created_total", "Sessions stored for the first time.")
ORDERS_PLACED = Counter("shop_orders_placed_total", "Orders placed (not idempotent replays).")

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"


class MetricsMiddleware:
    """WSGI middleware around the whole request (session opened and saved included). The
    route is read from the request Flask keeps in the environ (``werkzeug.request``) when the
    response starts, before Flask clears it."""

    def __init__(self, wsgi_app: Callable) -> None:
        self.wsgi_app = wsgi_app
        # (route, method, status) -> (counter, histogram): labels() takes a lock each call.
        self._series: dict[tuple[str, str, str], tuple] = {}

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.perf_counter()
        counts = instrumentation.current()
        token = None
        if counts is None:  # no SHOP_INSTRUMENT middleware outside us: count for ourselves
            counts = instrumentation.RequestCounts()
            token = instrumentation.start(counts)
        status, route = "500", UNMATCHED

        def recorded_start_response(status_line: str, headers: list, exc_info=None):
            nonlocal status, route
            status = status_line[:3]
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            if rule is not None:
                route = rule.rule
            elif ROUTE_KEY in environ:
                route = environ[ROUTE_KEY]
            return start_response(status_line, headers, exc_info)

        try:
            return self.wsgi_app(environ, recorded_start_response)
        finally:
            self._record(environ, route, status, time.perf_counter() - started, counts)
            if token is not None:
                instrumentation.stop(token)

    def _record(self, environ: dict, route: str, status: str, seconds: float, counts) -> None:
        method = environ.get("REQUEST_METHOD", "")
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            labels = (route, method if method in METHODS else "other", status)
            series = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
            if method in METHODS:  # an invented method is not kept as a key of its own
                self._series[key] = series
        series[0].inc()
        series[1].observe(seconds)
        SQL_PER_REQUEST.observe(counts.sql)
        REDIS_PER_REQUEST.observe(counts.redis)
        if counts.redis:
            REDIS_ROUND_TRIPS.inc(counts.redis)


def _two_label_counter(counter: Counter) -> Callable[[str, str], None]:
    """``counter``'s ``inc`` by its two labels, each child looked up once (a hit's cost)."""
    children: dict[tuple[str, str], Counter] = {}

    def count(first: str, second: str) -> None:
        child = children.get((first, second))
        if child is None:
            child = children[(first, second)] = counter.labels(first, second)
        child.inc()

    return count


def _count_read(target: str) -> None:
    DB_READS.labels(target).inc()


def _count_redis_error(node: str, error: str) -> None:
    REDIS_ERRORS.labels(node, error).inc()


def _breaker_changed(node: str, is_open: bool) -> None:
    BREAKER_OPEN.labels(node).set(1 if is_open else 0)


def watch_pool(engine: Engine, name: str) -> None:
    """Keep ``shop_db_pool_connections_in_use{engine=name}`` as this pool's check-outs."""
    gauge = POOL_IN_USE.labels(name)
    gauge.set(0)
    event.listen(engine, "checkout", lambda *_: gauge.inc())
    event.listen(engine, "checkin", lambda *_: gauge.dec())


def install(app: Flask, services: Services) -> None:
    """Record this process's metrics: the request middleware (outside everything but the
    proxy fix), the statement and round-trip counters, and the hooks of the cache tiers, the
    replica choice, Redis errors and the breaker, and the pools."""
    engines = services.engines
    instrumentation.install([engines.primary, *(r.engine for r in engines.replicas)])
    watch_pool(engines.primary, "primary")
    for replica in engines.replicas:
        watch_pool(replica.engine, replica.name)
    services.catalogue.cache.lookup_hook = _two_label_counter(CACHE_LOOKUPS)
    services.catalogue.cache.rebuild_hook = _two_label_counter(CACHE_REBUILDS)
    db.read_hook = _count_read
    redis_client.error_hook = _count_redis_error
    redis_client.breaker_hook = _breaker_changed
    # Flask's documented way to add WSGI middleware; mypy sees a method replaced.
    app.wsgi_app = MetricsMiddleware(app.wsgi_app)  # type: ignore[method-assign]
