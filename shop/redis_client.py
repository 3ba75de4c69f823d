"""The Redis connection: a real server when ``SHOP_REDIS_URL`` is set, else in-process fakeredis."""

from __future__ import annotations

import logging

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


def connect(url: str | None, *, socket_timeout: float = 1.0) -> redis.Redis:
    """Build a client; one retry with back-off rides over a failover's DNS move or a restart."""
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
