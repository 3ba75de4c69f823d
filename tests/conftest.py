"""Fixtures: the servers, databases, apps and browsers a test asks for by name.

Fast tests (``tests/app``): a copy of one migrated SQLite file and a fakeredis server per test.
Real-server tests (``tests/integration``) get their own PostgreSQL schema or Redis key prefix;
when a server is missing they are skipped by name, unless ``SHOP_TEST_REQUIRE_SERVICES=1`` (CI)
turns the skip into a failure. The helpers these fixtures build on live in ``tests/support``.
"""

from __future__ import annotations

import functools
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from deploy.stack.redis_server import RedisServerError, RedisServerMissing, ThrowawayCluster
from shop.migrate import upgrade
from tests.support import (
    POSTGRES_URL,
    REDIS_URL,
    AppFactory,
    Mailbox,
    RedisTarget,
    Shopper,
    fake_client,
    free_port,
    missing,
    seed_test_catalogue,
    share_compiled_url_builders,
)

share_compiled_url_builders()

# -- layers ------------------------------------------------------------------------------------

#: A test's layer is its folder under tests/, and each layer is a marker (``-m deploy``):
#: ``app`` runs in this process on SQLite and fakeredis (``make test-fast``), ``integration``
#: on the real PostgreSQL and Redis, ``deploy`` checks what ships (templates, image, programs
#: such as gunicorn and HAProxy), ``stack`` starts the whole topology.
LAYERS = ("app", "integration", "deploy", "stack")
REAL_SERVER_FIXTURES = frozenset(
    {
        "postgres_server",
        "pg_url",
        "redis_server",
        "redis_cluster",
        "redis_target",
        "real_redis",
        "make_real_app",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.both_redis``: the test runs once on the standalone Redis and once on
    the Redis Cluster (its ``real_redis`` / ``make_real_app`` follow ``redis_target``)."""
    if metafunc.definition.get_closest_marker("both_redis") and (
        "redis_target" in metafunc.fixturenames
    ):
        metafunc.parametrize("redis_target", ["standalone", "cluster"], indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(Path(__file__).parent).parts
        layer = parts[0] if len(parts) > 1 else None
        if layer not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: a test lives in one of tests/{LAYERS}")
        item.add_marker(layer)
        real = REAL_SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if layer == "app" and real:
            raise pytest.UsageError(
                f"{item.nodeid} uses {sorted(real)}: real servers are for tests/integration"
            )
        if layer == "integration":
            if real & {"postgres_server", "pg_url", "make_real_app"}:
                item.add_marker(pytest.mark.postgres)
            if real & {
                "redis_server",
                "redis_cluster",
                "redis_target",
                "real_redis",
                "make_real_app",
            }:
                item.add_marker(pytest.mark.redis)


# -- real servers ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> str:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        missing(f"PostgreSQL at {POSTGRES_URL}", exc)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections see only a fresh schema of their own, migrated and seeded."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(postgres_server)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in postgres_server else "?"
    url = f"{postgres_server}{separator}options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    upgrade(engine)
    seed_test_catalogue(engine)
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_server() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        missing(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[ThrowawayCluster]:
    """A real Redis Cluster of six nodes (3 primaries, 3 replicas) on free ports, for the run."""
    cluster = ThrowawayCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except (RedisServerMissing, RedisServerError) as exc:
        missing("a Redis Cluster (redis-server and redis-cli)", exc)
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_target(request) -> RedisTarget:
    """Which real Redis a test's ``real_redis`` and ``make_real_app`` use: the standalone
    server, or (``both_redis`` tests, second run) the Redis Cluster."""
    if getattr(request, "param", "standalone") == "cluster":
        return RedisTarget(request.getfixturevalue("redis_cluster").url, cluster=True)
    return RedisTarget(request.getfixturevalue("redis_server"), cluster=False)


@pytest.fixture
def real_redis(redis_target: RedisTarget) -> Iterator[tuple[redis.Redis, str]]:
    """A client on the real Redis (or Redis Cluster) and a key prefix no other test uses."""
    client = redis_target.client()
    prefix = f"test:{secrets.token_hex(6)}:"
    yield client, prefix
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    for key in keys:  # one by one: a cluster's keys live on several nodes
        client.delete(key)
    client.close()


# -- mail ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) in this process, on a free port, for the whole run."""
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    mailbox.url = f"smtp://127.0.0.1:{controller.port}"
    yield mailbox
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: Mailbox) -> Mailbox:
    """The in-process SMTP server's mail, emptied for this test."""
    smtp_server.clear()
    return smtp_server


# -- apps --------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cheap_password_hash(request, monkeypatch) -> None:
    """scrypt at 256 KiB instead of 32 MiB in this process (0.6 ms a hash), as Django's test
    settings swap in a fast hasher: hundreds of sign-ups and logins would otherwise spend most
    of the fast run hashing.
    What is checked (one hash per attempt, none before the throttle) does not depend on the
    cost; ``@pytest.mark.real_password_hash`` keeps production's, and gunicorn and the stack,
    in processes of their own, always hash for real."""
    if request.node.get_closest_marker("real_password_hash"):
        return
    from shop import accounts

    cheap = "scrypt:256:8:1"
    monkeypatch.setattr(accounts, "PASSWORD_METHOD", cheap)
    monkeypatch.setattr(accounts, "_DUMMY_HASH", _cheap_dummy_hash(cheap))


@functools.cache
def _cheap_dummy_hash(method: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash("not a real password", method=method)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """One migrated and seeded SQLite file per run (~85 ms); each test gets a copy (<1 ms)."""
    path = tmp_path_factory.mktemp("template") / "shop.db"
    engine = create_engine(f"sqlite:///{path}")
    upgrade(engine)
    seed_test_catalogue(engine)
    engine.dispose()
    return path


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    target = tmp_path / "shop.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def fake_redis_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


class RedisClock:
    """The clock fakeredis expires keys by, moved forward by hand: a test of a wait kept as a
    key's TTL (the failed-login back-off) advances it instead of sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def redis_clock(monkeypatch) -> RedisClock:
    from fakeredis._socket import _base

    clock = RedisClock()
    monkeypatch.setattr(_base, "time", clock)
    return clock


@pytest.fixture
def make_app(sqlite_url, fake_redis_server, mailbox) -> Iterator[AppFactory]:
    """Apps on a SQLite file, a fakeredis server and the in-process SMTP server. Overrides are
    :class:`Settings` fields; ``redis_client`` swaps Redis."""
    factory = AppFactory(
        {"database_url": sqlite_url, "redis_url": "redis://fake", "smtp_url": mailbox.url},
        lambda: fake_client(fake_redis_server),
    )
    yield factory
    factory.dispose()


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def shopper(app) -> Shopper:
    return Shopper(app.test_client(), app)


@pytest.fixture
def make_real_app(pg_url, real_redis, redis_target, mailbox) -> Iterator[AppFactory]:
    """Apps on the real PostgreSQL (own schema) and Redis (own prefix), as in production."""
    from shop.redis_client import connect

    _, prefix = real_redis
    factory = AppFactory(
        {
            "database_url": pg_url,
            "redis_url": redis_target.url,
            "redis_cluster": redis_target.cluster,
            "redis_prefix": prefix,
            "smtp_url": mailbox.url,
        },
        lambda: connect(redis_target.url, socket_timeout=0.5, cluster=redis_target.cluster),
    )
    yield factory
    factory.dispose()
