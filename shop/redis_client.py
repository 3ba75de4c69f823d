"""The Redis connection: a real server when ``SHOP_REDIS_URL`` is set, else in-process fakeredis.

When Redis cannot be reached, every request would otherwise pay a connect attempt (and its
retry) for each command. The connections here share a small breaker: after a failed connect,
new connects fail at once for ``down_for`` seconds, so a request degrades in microseconds; the
first connect after that window probes the server again, so recovery needs no restart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger(__name__)

# Errors that mean "Redis is not there right now" (down, restarting, failing over); callers
# degrade instead of failing. Other Redis errors are bugs and surface as such.
RedisUnavailable = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


# Called once per command (or pipeline) sent to Redis, when instrumentation is on.
round_trip_hook: Callable[[], None] | None = None


class Breaker:
    """Remembers a failed connect for ``down_for`` seconds, shared by a pool's connections."""

    def __init__(self, down_for: float = 1.0) -> None:
        self.down_for = down_for
        self.down_until = 0.0
        self._lock = threading.Lock()

    def check(self) -> None:
        if time.monotonic() < self.down_until:
            raise RedisConnectionError("Redis was unreachable moments ago; not retrying yet")

    def trip(self, exc: Exception) -> None:
        with self._lock:
            if time.monotonic() >= self.down_until:
                log.warning("redis unreachable, failing fast for %.1fs: %s", self.down_for, exc)
            self.down_until = time.monotonic() + self.down_for


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
            self.breaker.trip(exc)
            raise

    def send_packed_command(self, command, check_health: bool = True) -> None:
        if round_trip_hook is not None:
            round_trip_hook()
        super().send_packed_command(command, check_health)  # type: ignore[misc]


class FailFastConnection(_FailFast, redis.Connection):
    pass


class FailFastSSLConnection(_FailFast, redis.SSLConnection):
    pass


def connect(url: str | None, *, socket_timeout: float = 1.0, down_for: float = 1.0) -> redis.Redis:
    """Build a client; one retry with back-off rides over a failover's DNS move or a restart."""
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    scheme = urlsplit(url).scheme
    connection_class = FailFastSSLConnection if scheme == "rediss" else FailFastConnection
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        connection_class=connection_class,
        breaker=Breaker(down_for),
    )
