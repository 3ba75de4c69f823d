"""The Redis connection: a real server when ``SHOP_REDIS_URL`` is set, else in-process fakeredis.

When Redis cannot be reached, every request would otherwise pay a connect attempt (and its
retry) for each command. The connections here share a small breaker: after a failed connect,
new connects fail at once for ``down_for`` seconds, so a request degrades in microseconds; the
first connect after that window probes the server again, so recovery needs no restart.

In the cloud (ElastiCache) the same client speaks TLS (``rediss://``, certificate and host name
verified) with an AUTH password, and rides over a failover: the primary endpoint's DNS moves to
the promoted replica, a dead connection is replaced on the next command, and a connection that
still reaches the old primary, now a replica, is closed at its first refused write (READONLY)
and the write retried once on a new connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger(__name__)

# Errors that mean "Redis is not there right now" (down, restarting, failing over); callers
# degrade instead of failing. Other Redis errors are bugs and surface as such.
RedisUnavailable = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


# Called once per command (or pipeline) sent to Redis, when instrumentation is on.
round_trip_hook: Callable[[], None] | None = None
# When metrics are on (shop/metrics.py): every failure with the node and the error's name, and
# every change of a node's breaker (open: True from a failed connect until one succeeds).
error_hook: Callable[[str, str], None] | None = None
breaker_hook: Callable[[str, bool], None] | None = None


class Breaker:
    """Remembers a failed connect for ``down_for`` seconds, shared by a pool's connections.

    A refused password is remembered as such: the fast failures repeat the server's own words
    (and the log says which setting to check) rather than calling Redis unreachable."""

    def __init__(self, down_for: float = 1.0, node: str = "redis") -> None:
        self.down_for = down_for
        self.node = node  # host:port, for the metrics
        self.open = False  # from a failed connect until a connect succeeds
        self.down_until = 0.0
        self.last_error: Exception | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        if time.monotonic() < self.down_until:
            if error_hook is not None:
                error_hook(self.node, "BreakerOpen")
            if isinstance(self.last_error, AuthenticationError):
                raise AuthenticationError(
                    f"{self.last_error} (refused moments ago; not retrying yet)"
                )
            raise RedisConnectionError("Redis was unreachable moments ago; not retrying yet")

    def trip(self, exc: Exception) -> None:
        with self._lock:
            if time.monotonic() >= self.down_until:
                if isinstance(exc, AuthenticationError):
                    log.error(
                        "redis refused our password (check SHOP_REDIS_PASSWORD, or the password "
                        "in SHOP_REDIS_URL), failing fast for %.1fs: %s",
                        self.down_for,
                        exc,
                    )
                else:
                    log.warning("redis unreachable, failing fast for %.1fs: %s", self.down_for, exc)
            self.last_error = exc
            self.down_until = time.monotonic() + self.down_for
            if not self.open:
                self.open = True
                if breaker_hook is not None:
                    breaker_hook(self.node, True)

    def close(self) -> None:
        """A connect succeeded: the node is back."""
        self.open = False
        if breaker_hook is not None:
            breaker_hook(self.node, False)


class _FailFast:
    def __init__(self, *args, breaker: Breaker, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = breaker

    def connect(self) -> None:
        if self._sock is None:  # type: ignore[attr-defined]
            self.breaker.check()
        try:
            super().connect()  # type: ignore[misc]
        except RedisUnavailable as exc:
            if error_hook is not None:
                error_hook(self.breaker.node, type(exc).__name__)
            self.breaker.trip(exc)
            raise
        if self.breaker.open:
            self.breaker.close()

    def send_packed_command(self, command, check_health: bool = True) -> None:
        if round_trip_hook is not None:
            round_trip_hook()
        try:
            super().send_packed_command(command, check_health)  # type: ignore[misc]
        except RedisUnavailable as exc:
            if error_hook is not None:
                error_hook(self.breaker.node, type(exc).__name__)
            raise

    def read_response(self, *args, **kwargs):
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except RedisUnavailable as exc:
            if error_hook is not None:
                error_hook(self.breaker.node, type(exc).__name__)
            raise


class FailFastConnection(_FailFast, redis.Connection):
    pass


class FailFastSSLConnection(_FailFast, redis.SSLConnection):
    pass


def connect(url: str | None, *, socket_timeout: float = 1.0, down_for: float = 1.0) -> redis.Redis:
    """Build a client; one retry with back-off rides over a failover's DNS move or a restart.

    ``rediss://`` verifies the server's certificate against the system's CAs and its host name
    (a query such as ``?ssl_ca_certs=/path/ca.pem`` in the URL changes that: URL options win).
    The AUTH password is the URL's (``Settings`` merges ``SHOP_REDIS_PASSWORD`` into it)."""
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    scheme = urlsplit(url).scheme
    connection_class = FailFastSSLConnection if scheme == "rediss" else FailFastConnection
    tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True} if scheme == "rediss" else {}
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        # ReadOnlyError: the connection reaches a replica (the old primary after a failover);
        # the retry's new connection follows the endpoint to the promoted one. A replica
        # refuses every write, so retrying one cannot apply it twice.
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ReadOnlyError],
        connection_class=connection_class,
        breaker=Breaker(down_for, node=_node(url)),
        **tls,
    )


def _node(url: str) -> str:
    """``host:port`` of a Redis URL (the breaker's and the metrics' name for the server)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
