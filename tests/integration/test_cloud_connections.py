"""What the shop needs on AWS, shown on loopback: TLS and AUTH to Redis, TLS and a password from
the environment to PostgreSQL, and new connections within seconds after a failover.

Redis: throwaway redis-server processes (deploy/stack/redis_server.py) with a throwaway CA, a
TLS-only port and ``requirepass``, as ElastiCache with in-transit encryption and an AUTH token; a
restart on the same port; a replica promoted while a proxy (the endpoint's DNS name) moves to it.
PostgreSQL: the connection URL of deploy/aws/shop.yaml, aimed at a stand-in server that speaks
just enough of the protocol to see whether TLS comes first and which password arrives; then at
the real test server, to see its keepalive options on the socket and a reconnect after a cut.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from deploy.stack.redis_server import RedisServerError, ThrowawayRedis, TlsFiles
from shop import create_app
from shop.config import Settings
from shop.db import make_engine
from shop.redis_client import FailFastSSLConnection, RedisUnavailable, connect
from tests.support import KETTLE, POSTGRES_URL, SECRET, Shopper, missing
from tests.support.aws_template import Stack, load_template
from tests.support.redis_servers import tls_material
from tests.support.tcp_proxy import TcpProxy

# An AUTH token with characters a URL would mangle, to show it survives the merge.
TOKEN = "tok:en/with@odd%chars+and=more"


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TlsFiles:
    try:
        return tls_material(tmp_path_factory.mktemp("tls"))
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        missing("openssl, to make a throwaway CA,", exc)
        raise  # unreachable: missing() skips or fails


@pytest.fixture
def start_redis(tmp_path) -> Iterator[Callable[..., ThrowawayRedis]]:
    """Start redis-server processes for one test; each is stopped, by its pid, afterwards."""
    servers: list[ThrowawayRedis] = []

    def start(**options: Any) -> ThrowawayRedis:
        server = ThrowawayRedis(tmp_path / f"redis{len(servers)}", **options)
        servers.append(server)
        try:
            return server.start()
        except FileNotFoundError as exc:
            missing("redis-server", exc)
        except RedisServerError as exc:
            if options.get("tls") is None:
                raise
            missing("redis-server built with TLS", exc)
        raise AssertionError("unreachable")

    yield start
    for server in servers:
        server.stop()


def shop_redis_url(settings: dict[str, str]) -> str:
    """The URL the shop hands its Redis client, from ``SHOP_*`` variables as a task gets them."""
    server_database = {"SHOP_DATABASE_URL": "postgresql://shop@db/shop"}  # never connected to
    url = Settings.from_env({"SHOP_SECRET_KEY": SECRET, **server_database, **settings}).redis_url
    assert url is not None
    return url


def tls_url(server: ThrowawayRedis, host: str = "localhost", *, ca: Path | None = None) -> str:
    query = f"?ssl_ca_certs={ca}" if ca is not None else ""
    return f"rediss://{host}:{server.port}/0{query}"


# -- Redis: TLS and AUTH -----------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.postgres
def test_the_shop_reaches_redis_over_tls_with_its_auth_token(start_redis, tls, pg_url, caplog):
    server = start_redis(tls=tls, password=TOKEN)
    settings = Settings.from_env(
        {
            # Shared sessions need a shared database (SQLite beside Redis is refused).
            "SHOP_DATABASE_URL": pg_url,
            "SHOP_REDIS_URL": tls_url(server, ca=tls.ca),
            "SHOP_REDIS_PASSWORD": TOKEN,
            "SHOP_SECRET_KEY": SECRET,
            "SHOP_ENV": "development",
        }
    )
    app = create_app(settings)  # builds its own client from the settings, as in production
    try:
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 200, ready.get_json()
        assert ready.get_json()["redis"] == {"ok": True}
        shopper = Shopper(app.test_client(), app)
        assert shopper.add(KETTLE).status_code == 303
        assert shopper.cart()["count"] == 1
        assert server.client().dbsize() > 0  # the session and the cart are on that server

        client = app.extensions["shop"].redis
        assert client.connection_pool.connection_class is FailFastSSLConnection
        connection = client.connection_pool.get_connection()
        try:
            assert isinstance(connection._sock, ssl.SSLSocket)
            assert connection._sock.version() in {"TLSv1.2", "TLSv1.3"}
        finally:
            client.connection_pool.release(connection)
    finally:
        app.extensions["shop"].close()
    assert TOKEN not in repr(settings)
    assert TOKEN not in caplog.text


@pytest.mark.redis
def test_a_wrong_or_missing_auth_token_fails_clearly(start_redis, tls, caplog):
    server = start_redis(tls=tls, password=TOKEN)
    wrong = connect(
        shop_redis_url(
            {
                "SHOP_REDIS_URL": tls_url(server, ca=tls.ca),
                "SHOP_REDIS_PASSWORD": "not-the-token",
            }
        )
    )
    with caplog.at_level(logging.ERROR, logger="shop.redis_client"):
        with pytest.raises(AuthenticationError, match="invalid username-password pair"):
            wrong.ping()
        # Within the breaker's window the fast failure still says what went wrong.
        started = time.perf_counter()
        with pytest.raises(AuthenticationError, match="invalid username-password pair"):
            wrong.ping()
        assert time.perf_counter() - started < 0.1
    assert "SHOP_REDIS_PASSWORD" in caplog.text
    assert "not-the-token" not in caplog.text

    missing = connect(tls_url(server, ca=tls.ca))  # no password at all
    # RESP2 clients hear "NOAUTH Authentication required", RESP3 ones (HELLO) "... must be
    # called with the client already authenticated".
    with pytest.raises(AuthenticationError, match="Authentication required|authenticated"):
        missing.ping()


@pytest.mark.redis
def test_a_certificate_that_does_not_verify_is_refused(start_redis, tls):
    server = start_redis(tls=tls, password=TOKEN, bind=("127.0.0.1", "127.0.0.2"))
    # The system's CAs do not know the throwaway CA.
    untrusted = connect(
        shop_redis_url({"SHOP_REDIS_URL": tls_url(server), "SHOP_REDIS_PASSWORD": TOKEN})
    )
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusted.ping()
    # Trusted CA, but the certificate names localhost and 127.0.0.1, not 127.0.0.2.
    wrong_name = connect(
        shop_redis_url(
            {
                "SHOP_REDIS_URL": tls_url(server, "127.0.0.2", ca=tls.ca),
                "SHOP_REDIS_PASSWORD": TOKEN,
            }
        )
    )
    with pytest.raises(RedisConnectionError, match="CERTIFICATE_VERIFY_FAILED|mismatch"):
        wrong_name.ping()
    # The same server through the right name answers: the refusals were the certificate's.
    trusted = connect(
        shop_redis_url({"SHOP_REDIS_URL": tls_url(server, ca=tls.ca), "SHOP_REDIS_PASSWORD": TOKEN})
    )
    assert trusted.ping() is True


# -- Redis: restarts and failovers ----------------------------------------------------------


@pytest.mark.redis
def test_stale_redis_connections_are_replaced_after_a_restart(start_redis):
    server = start_redis(password=TOKEN)
    client = connect(
        shop_redis_url(
            {
                "SHOP_REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
                "SHOP_REDIS_PASSWORD": TOKEN,
            }
        )
    )
    assert client.set("k", "before")

    server.restart()  # same port, new process: the pooled connection is dead
    started = time.perf_counter()
    assert client.set("k", "after")  # the dead socket fails, the one retry reconnects
    assert time.perf_counter() - started < 0.5
    assert client.get("k") == "after"

    server.stop()  # down for a while: callers degrade fast instead of hanging
    with pytest.raises(RedisUnavailable):
        client.get("k")
    started = time.perf_counter()
    with pytest.raises(RedisUnavailable):
        client.get("k")
    assert time.perf_counter() - started < 0.1

    server.start()
    back = time.perf_counter()
    while True:
        try:
            assert client.set("k", "again")
            break
        except RedisUnavailable:
            assert time.perf_counter() - back < 2.0, "no connection 2 s after Redis came back"
            time.sleep(0.05)


@pytest.mark.redis
def test_after_a_failover_writes_follow_the_endpoint_to_the_promoted_replica(start_redis):
    """The ElastiCache sequence: the replica is promoted, the primary endpoint's DNS name moves
    to it, and the old primary rejoins as a replica while the shop's pooled connection still
    reaches it. The first write there is refused (READONLY); the shop reconnects and retries."""
    old, new = start_redis(password=TOKEN), start_redis(password=TOKEN)
    new.client().replicaof("127.0.0.1", old.port)
    endpoint = TcpProxy("127.0.0.1", old.port).start()
    try:
        client = connect(
            shop_redis_url(
                {
                    "SHOP_REDIS_URL": f"redis://127.0.0.1:{endpoint.port}/0",
                    "SHOP_REDIS_PASSWORD": TOKEN,
                }
            )
        )
        assert client.set("cart", "1")
        deadline = time.monotonic() + 3
        while new.client().get("cart") != "1":
            assert time.monotonic() < deadline, "the replica did not catch up"
            time.sleep(0.02)

        new.client().replicaof("no", "one")
        endpoint.target = ("127.0.0.1", new.port)  # the DNS name now resolves to the new one
        old.client().replicaof("127.0.0.1", new.port)

        started = time.perf_counter()
        assert client.incr("cart") == 2
        assert client.eval("return redis.call('INCR', KEYS[1])", 1, "cart") == 3  # scripts too
        assert time.perf_counter() - started < 1.0
        assert new.client().get("cart") == "3"
        assert new.client().info("replication")["role"] == "master"
    finally:
        endpoint.stop()


# -- PostgreSQL: the stack's connection URL ---------------------------------------------------


def stack_database_url(host: str, port: int) -> str:
    """SHOP_DATABASE_URL as deploy/aws/shop.yaml builds it, aimed at ``host:port``."""
    env = Stack.of(load_template(), Image="example/shop:1").environment("TaskDefinition", "shop")
    # The app's URL names RDS Proxy, which always listens on 5432.
    return env["SHOP_DATABASE_URL"].replace("<DatabaseProxy.Endpoint>:5432", f"{host}:{port}")


class StandInPostgres:
    """Accepts one connection and speaks PostgreSQL's protocol up to the password: answers the
    TLS request (with ``tls``: yes, and completes the handshake; without: no), reads the startup
    parameters, asks for the password in clear text (inside TLS, when there is TLS), records
    what arrives and refuses the login."""

    SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104

    def __init__(self, tls: TlsFiles | None) -> None:
        self.tls = tls
        self.seen: dict[str, Any] = {}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn, contextlib.suppress(OSError, ssl.SSLError, EOFError):
            conn.settimeout(5)
            self._converse(conn)

    def _converse(self, stream: socket.socket) -> None:
        while True:
            length, code = struct.unpack("!ii", _read(stream, 8))
            if code == self.SSL_REQUEST:
                if self.tls is None:
                    stream.sendall(b"N")
                    continue
                stream.sendall(b"S")
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.load_cert_chain(self.tls.cert, self.tls.key)
                stream = context.wrap_socket(stream, server_side=True)
                self.seen["tls"] = stream.version()
                continue
            if code == self.GSSENC_REQUEST:
                stream.sendall(b"N")
                continue
            fields = _read(stream, length - 8).split(b"\0")
            self.seen["startup"] = {
                key.decode(): value.decode()
                for key, value in zip(fields[0::2], fields[1::2], strict=False)
                if key
            }
            stream.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            kind = _read(stream, 1)
            (size,) = struct.unpack("!i", _read(stream, 4))
            if kind == b"p":
                self.seen["password"] = _read(stream, size - 4).rstrip(b"\0").decode()
            error = b"SFATAL\0C28P01\0Mstand-in server: password received\0\0"
            stream.sendall(b"E" + struct.pack("!i", len(error) + 4) + error)
            return


def _read(stream: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = stream.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


@pytest.fixture
def stand_in(tls) -> Iterator[Callable[..., StandInPostgres]]:
    servers: list[StandInPostgres] = []

    def start(*, with_tls: bool) -> StandInPostgres:
        servers.append(StandInPostgres(tls if with_tls else None))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_the_stack_s_database_url_speaks_tls_before_sending_pgpassword(stand_in, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-secrets-manager")  # as ECS injects it
    server = stand_in(with_tls=True)
    engine = make_engine(stack_database_url("127.0.0.1", server.port), name="primary")
    try:
        with pytest.raises(OperationalError, match="stand-in server: password received"):
            engine.connect()
    finally:
        engine.dispose()
    assert server.seen["tls"] in {"TLSv1.2", "TLSv1.3"}
    assert server.seen["startup"]["user"] == "shop"
    assert server.seen["startup"]["database"] == "shop"
    assert server.seen["startup"]["application_name"] == "shop-primary"
    assert server.seen["password"] == "from-secrets-manager"


def test_the_stack_s_database_url_refuses_a_server_without_tls(stand_in, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-secrets-manager")
    server = stand_in(with_tls=False)
    engine = make_engine(stack_database_url("127.0.0.1", server.port), name="primary")
    try:
        with pytest.raises(OperationalError, match="SSL was required"):
            engine.connect()
    finally:
        engine.dispose()
    assert "password" not in server.seen  # nothing was sent in the clear


def _local(url: str, via: tuple[str, int] | None = None) -> str:
    """The stack's URL options on the local test server: its host, user and database, and
    sslmode=prefer (the test server has no TLS; the stand-in above covers TLS)."""
    local = urlsplit(POSTGRES_URL)
    host, port = via or (local.hostname, local.port or 5432)
    parts = urlsplit(url)
    query = parts.query.replace("sslmode=require", "sslmode=prefer")
    netloc = f"{local.username}@{host}:{port}"
    return urlunsplit((parts.scheme, netloc, local.path, query, ""))


def test_the_stack_s_connection_options_reach_the_socket(postgres_server, monkeypatch):
    """Keepalives and a TCP user timeout: a connection to a server that vanished (an AZ lost,
    a failover) errors within seconds, and pool_pre_ping replaces it."""
    monkeypatch.setenv("PGPASSWORD", "from-secrets-manager")
    engine = make_engine(_local(stack_database_url("db", 5432)), name="primary")
    try:
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            parameters = raw.info.dsn_parameters
            assert raw.info.password == "from-secrets-manager"  # libpq read PGPASSWORD
            sock = socket.socket(fileno=os.dup(raw.fileno()))
            try:
                options = {
                    "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                    "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                    "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                    "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
                }
            finally:
                sock.close()
    finally:
        engine.dispose()
    assert parameters["target_session_attrs"] == "read-write"
    assert options == {
        "keepalive": 1,
        "idle": int(parameters["keepalives_idle"]),
        "interval": int(parameters["keepalives_interval"]),
        "count": int(parameters["keepalives_count"]),
        "user_timeout": int(parameters["tcp_user_timeout"]),
    }
    assert options["user_timeout"] <= 15_000, "a vanished server must error within seconds"


def test_pooled_database_connections_are_replaced_after_a_failover(postgres_server):
    """Every pooled connection dies at once (the old primary is gone); the endpoint answers
    again a moment later. The next request gets a new connection at once, no restart."""
    local = urlsplit(POSTGRES_URL)
    endpoint = TcpProxy(local.hostname, local.port or 5432).start()
    engine = make_engine(
        _local(stack_database_url("db", 5432), via=("127.0.0.1", endpoint.port)), name="primary"
    )
    try:
        with engine.connect() as conn:
            before = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        endpoint.stop()
        endpoint.start()
        started = time.perf_counter()
        with engine.connect() as conn:
            after = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert time.perf_counter() - started < 1.0
        assert after != before
    finally:
        engine.dispose()
        endpoint.stop()
