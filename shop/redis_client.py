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

With ``SHOP_REDIS_CLUSTER=1`` (or a ``redis+cluster://`` / ``rediss+cluster://`` URL) the client
is a :class:`redis.cluster.RedisCluster`: every node gets its own breaker (one frozen primary
fails fast without blocking the others), and whatever the cluster says while it reshards or
fails over (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, MASTERDOWN) counts as "unavailable" like a
dropped connection: a request degrades to a 503, and the next one finds the new layout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import redis
from redis._parsers import Encoder
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import (
    AskError,
    AuthenticationError,
    ClusterDownError,
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

log = logging.getLogger(__name__)

# Errors that mean "Redis is not there right now" (down, restarting, failing over, a cluster
# moving slots or electing a primary, or a plain client sent to one node of a cluster, which
# answers MOVED); callers degrade instead of failing. Other Redis errors are bugs and surface
# as such. MovedError is an AskError; MasterDownError a ClusterDownError; SlotNotCoveredError a
# RedisClusterException.
RedisUnavailable = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    AskError,
    TryAgainError,
    ClusterDownError,
    ClusterError,
    RedisClusterException,
)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


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


class Breakers:
    """One :class:`Breaker` per server address: a cluster's nodes fail (and recover) apart."""

    def __init__(self, down_for: float = 1.0) -> None:
        self.down_for = down_for
        self._by_address: dict[tuple[str, int], Breaker] = {}
        self._lock = threading.Lock()

    def for_address(self, host: str, port: int) -> Breaker:
        with self._lock:
            found = self._by_address.get((host, port))
            if found is None:
                found = Breaker(self.down_for, node=f"{host}:{port}")
                self._by_address[(host, port)] = found
            return found


class _FailFast:
    # A cluster client builds each node's pool itself and passes it no extra argument, so the
    # breakers travel on the connection class (see _connection_class).
    breakers: Breakers

    def __init__(self, *args, breaker: Breaker | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = breaker or self.breakers.for_address(self.host, self.port)  # type: ignore[attr-defined]

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


def _connection_class(tls: bool, breakers: Breakers) -> type:
    base = FailFastSSLConnection if tls else FailFastConnection
    return type(base.__name__, (base,), {"breakers": breakers})


def cluster_url(url: str) -> tuple[str, bool]:
    """``url`` with a ``redis+cluster``-style scheme made plain, and whether it named one."""
    scheme = urlsplit(url).scheme
    if scheme in CLUSTER_SCHEMES:
        return CLUSTER_SCHEMES[scheme] + url[len(scheme) :], True
    return url, False


def connect(
    url: str | None,
    *,
    socket_timeout: float = 1.0,
    down_for: float = 1.0,
    cluster: bool = False,
) -> redis.Redis:
    """Build a client; one retry with back-off rides over a failover's DNS move or a restart.
    ``cluster`` (or a ``redis+cluster://`` URL): a :class:`RedisCluster` found from that node.

    ``rediss://`` verifies the server's certificate against the system's CAs and its host name
    (a query such as ``?ssl_ca_certs=/path/ca.pem`` in the URL changes that: URL options win).
    The AUTH password is the URL's (``Settings`` merges ``SHOP_REDIS_PASSWORD`` into it)."""
    if url is None:
        import fakeredis

        return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    url, named_cluster = cluster_url(url)
    scheme = urlsplit(url).scheme
    tls = {"ssl_cert_reqs": "required", "ssl_check_hostname": True} if scheme == "rediss" else {}
    if cluster or named_cluster:
        per_node = _connection_class(scheme == "rediss", Breakers(down_for))
        return _connect_cluster(url, socket_timeout, per_node, tls)
    connection_class = FailFastSSLConnection if scheme == "rediss" else FailFastConnection
    return redis.Redis.from_url(
        url,
        **_client_options(socket_timeout),
        # ReadOnlyError: the connection reaches a replica (the old primary after a failover);
        # the retry's new connection follows the endpoint to the promoted one. A replica
        # refuses every write, so retrying one cannot apply it twice.
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ReadOnlyError],
        connection_class=connection_class,
        breaker=Breaker(down_for, node=_node(url)),
        **tls,
    )


def _client_options(socket_timeout: float) -> dict:
    """What a plain client and a cluster client share: text replies, the same timeouts, and
    one retry with a short back-off."""
    return {
        "decode_responses": True,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
    }


def _connect_cluster(url: str, socket_timeout: float, connection_class: type, tls: dict):
    """A cluster client. It learns the layout from the URL's node, follows MOVED and ASK
    itself, and after a node stops answering asks the others for the new layout; one retry,
    so a frozen primary costs a request about one socket timeout, then a 503."""

    def build() -> RedisCluster:
        return RedisCluster.from_url(
            url,
            **_client_options(socket_timeout),
            connection_class=connection_class,
            **tls,
        )

    return cast(redis.Redis, LazyCluster(build))


class LazyCluster:
    """A :class:`RedisCluster` built on first use: building one asks a node for the layout,
    and a cluster that is down when the process starts must make requests 503 (and the first
    one after it is back work), not stop the process. Scripts registered before that run on
    whichever client is built."""

    def __init__(self, build: Callable[[], RedisCluster]) -> None:
        self._build = build
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def client(self) -> RedisCluster:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client

    def register_script(self, script: str) -> Script:
        return Script(self, script)  # type: ignore[arg-type]

    def get_encoder(self) -> Encoder:
        """What a script is encoded with, known without asking the cluster."""
        return Encoder(encoding="utf-8", encoding_errors="strict", decode_responses=True)

    def __getattr__(self, name: str):
        return getattr(self.client(), name)


def is_cluster(client: object) -> bool:
    return isinstance(client, LazyCluster | RedisCluster)


def redis_status(client: redis.Redis) -> dict:
    """For /readyz: ``{"ok": True}`` when Redis answers and is the kind the client expects
    (a cluster client against a cluster, a plain one against a standalone server), else
    ``{"ok": False, "error": ..., "reason": ...}``. A plain client pointed at one node of a
    cluster answers PING, then MOVED for most keys: not ready."""
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return {"ok": False, "error": type(exc).__name__}
    try:
        info = cast(dict, client.info("cluster"))
    except redis.ResponseError:  # a server without INFO (fakeredis) is no cluster
        info = {}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": type(exc).__name__}
    if is_cluster(client):  # one answer per node
        nodes = info.values() if info and "cluster_enabled" not in info else [info]
        enabled = all(_enabled(node) for node in nodes)
    else:
        enabled = _enabled(info)
    if enabled != is_cluster(client):
        reason = (
            "SHOP_REDIS_URL is a Redis Cluster node: set SHOP_REDIS_CLUSTER=1"
            if enabled
            else "SHOP_REDIS_CLUSTER=1 but the server is no cluster (cluster_enabled:0)"
        )
        return {"ok": False, "error": "ClusterMismatch", "reason": reason}
    return {"ok": True}


def _enabled(info: object) -> bool:
    return isinstance(info, dict) and str(info.get("cluster_enabled", 0)) == "1"


def _node(url: str) -> str:
    """``host:port`` of a Redis URL (the breaker's and the metrics' name for the server)."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
