"""Fixtures that read like a shopper's steps.

Fast tests: a fresh SQLite file and a fakeredis server per test. Real-server tests (markers
``postgres`` and ``redis``) get their own PostgreSQL schema or Redis key prefix; when a server
is missing they are skipped by name, unless ``SHOP_TEST_REQUIRE_SERVICES=1`` (CI) turns the
skip into a failure.
"""

from __future__ import annotations

import email
import email.policy
import functools
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, insert, text

from shop import create_app
from shop.catalogue import recount_categories
from shop.config import Settings
from shop.migrate import upgrade
from shop.models import categories, products
from shop.session_ids import csrf_token_for

SECRET = "test-secret-key-0123456789"
POSTGRES_URL = os.environ.get(
    "SHOP_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("SHOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("SHOP_TEST_REQUIRE_SERVICES") == "1"

# The catalogue every fast test starts with: three products whose stock tests rely on,
# plus filler so there is more than one grid page.
KETTLE, MUG, TEAPOT = 1, 2, 3
CATALOGUE = [
    {
        "id": KETTLE,
        "category_id": 1,
        "name": "Blue Kettle",
        "description": "Boils water fast.",
        "price_cents": 1999,
        "stock": 10,
    },
    {
        "id": MUG,
        "category_id": 1,
        "name": "Red Mug",
        "description": "Holds tea.",
        "price_cents": 599,
        "stock": 3,
    },
    {
        "id": TEAPOT,
        "category_id": 1,
        "name": "Sold Out Teapot",
        "description": "Gone.",
        "price_cents": 2500,
        "stock": 0,
    },
] + [
    {
        "id": i,
        "category_id": 2,
        "name": f"Field Guide {i}",
        "description": "Birds and trees.",
        "price_cents": 1000 + i,
        "stock": 50,
    }
    for i in range(4, 34)
]


def seed_test_catalogue(engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(categories),
            [
                {"id": 1, "slug": "kitchen", "name": "Kitchen"},
                {"id": 2, "slug": "books", "name": "Books"},
            ],
        )
        conn.execute(insert(products), CATALOGUE)
        recount_categories(conn)
        if conn.dialect.name == "postgresql":
            for table in ("categories", "products"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT MAX(id) FROM {table}))"
                    )
                )


# -- real servers ----------------------------------------------------------------------------


def _missing(what: str, exc: Exception) -> None:
    message = f"{what} not reachable ({type(exc).__name__}: {exc})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; SHOP_TEST_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
    pytest.skip(f"needs {message}")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        _missing(f"PostgreSQL at {POSTGRES_URL}", exc)
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
        _missing(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def real_redis(redis_server: str) -> Iterator[tuple[redis.Redis, str]]:
    """A client on the real Redis and a key prefix no other test uses."""
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    prefix = f"test:{secrets.token_hex(6)}:"
    yield client, prefix
    keys = list(client.scan_iter(f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# -- mail ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ReceivedMail:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        plain = self.message.get_body(preferencelist=("plain",))
        return plain.get_content().replace("\r\n", "\n")  # as sent, not as on the wire

    def link(self, path_prefix: str) -> str:
        """The one absolute link in the body whose path starts with ``path_prefix``."""
        found = re.findall(rf"https?://[^/\s]+{re.escape(path_prefix)}\S*", self.body)
        assert len(found) == 1, f"expected one {path_prefix} link in:\n{self.body}"
        return found[0]


class Mailbox:
    """An aiosmtpd handler: keeps what the in-process SMTP server received, in order. A reply
    set in ``refuse`` (e.g. "554 no") is what the server answers to DATA instead."""

    def __init__(self) -> None:
        self.received: list[ReceivedMail] = []
        self.refuse: str | None = None
        self.lock = threading.Lock()
        self.url = ""

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.refuse:
            return self.refuse
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append(ReceivedMail(envelope.mail_from, envelope.rcpt_tos, message))
        return "250 Message accepted for delivery"

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
        self.refuse = None

    def to(self, address: str) -> list[ReceivedMail]:
        with self.lock:
            return [mail for mail in self.received if address in mail.recipients]

    def last(self, address: str) -> ReceivedMail:
        mails = self.to(address)
        assert mails, f"no mail to {address}; received: {[m.recipients for m in self.received]}"
        return mails[-1]


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
    """scrypt at 1 MiB instead of 32 in this process, as Django's test settings swap in a fast
    hasher: hundreds of sign-ups and logins would otherwise spend most of the fast run hashing.
    What is checked (one hash per attempt, none before the throttle) does not depend on the
    cost; ``@pytest.mark.real_password_hash`` keeps production's, and gunicorn and the stack,
    in processes of their own, always hash for real."""
    if request.node.get_closest_marker("real_password_hash"):
        return
    from shop import accounts

    cheap = "scrypt:1024:8:1"
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


def fake_client(server: fakeredis.FakeServer) -> redis.Redis:
    return fakeredis.FakeRedis(server=server, decode_responses=True)


class AppFactory:
    """Builds apps that share one database and one Redis, like instances behind a load
    balancer; disposes of their engines at the end of the test."""

    def __init__(self, defaults: dict[str, Any], redis_client: Callable[[], redis.Redis]):
        self.defaults = defaults
        self.redis_client = redis_client
        self.apps: list[Flask] = []

    def __call__(self, redis_client: redis.Redis | None = None, **overrides: Any) -> Flask:
        settings = {
            **self.defaults,
            "secret_key": SECRET,
            "env": "development",
            "instance_name": f"instance-{len(self.apps) + 1}",
            **overrides,
        }
        app = create_app(
            Settings(**settings).validated(), redis_client=redis_client or self.redis_client()
        )
        app.config["TESTING"] = True
        self.apps.append(app)
        return app

    def dispose(self) -> None:
        for app in self.apps:
            app.extensions["shop"].close()


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


def wait_for_local_tier(app: Flask, timeout: float = 3.0) -> None:
    """The in-process catalogue tier is used once its listener has subscribed."""
    import time

    tier = app.extensions["shop"].catalogue.cache.local
    tier.get("-")  # starts the listener
    deadline = time.monotonic() + timeout
    while not tier.live:
        assert time.monotonic() < deadline, "the invalidation listener never subscribed"
        time.sleep(0.01)


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


# -- a shopper's steps -----------------------------------------------------------------------


@dataclass
class Shopper:
    """A browser: one cookie jar, pages and API calls with the CSRF token it was given."""

    client: FlaskClient
    app: Flask
    cookie_name: str = field(init=False)

    def __post_init__(self) -> None:
        self.cookie_name = self.app.session_interface.cookie_name

    @property
    def cookie(self) -> str | None:
        """The session cookie as the browser holds it (the signed id)."""
        cookie = self.client.get_cookie(self.cookie_name)
        return cookie.value if cookie else None

    @property
    def session_id(self) -> str | None:
        """The session id inside the cookie (what the CSRF token is bound to)."""
        return self.cookie.split(".")[0] if self.cookie else None

    def csrf(self) -> str:
        if self.session_id is None:
            self.client.get("/api/v1/session")
        return csrf_token_for(SECRET, self.session_id)

    # pages
    def post_form(self, path: str, data: dict | None = None, **kwargs):
        return self.client.post(path, data={"csrf_token": self.csrf(), **(data or {})}, **kwargs)

    def add(self, product_id: int, quantity: int | str = 1):
        return self.post_form("/cart/add", {"product_id": product_id, "quantity": quantity})

    def sign_up(self, email: str = "ada@example.com", password: str = "correct horse 42"):
        """The registration form alone: it signs nobody in (a mail goes to the address)."""
        return self.post_form("/register", {"email": email, "password": password})

    def register(self, email: str = "ada@example.com", password: str = "correct horse 42"):
        """Sign up, then log in (the login's 303): an account and a signed-in browser."""
        signed_up = self.sign_up(email, password)
        assert signed_up.status_code == 200, signed_up.get_data(as_text=True)[:300]
        return self.login(email, password)

    def login(self, email: str = "ada@example.com", password: str = "correct horse 42", **kw):
        return self.post_form("/login", {"email": email, "password": password}, **kw)

    def logout(self):
        return self.post_form("/logout")

    def checkout(
        self, name: str = "Ada Lovelace", address: str = "1 Analytical St", key: str | None = None
    ):
        return self.post_form(
            "/checkout",
            {"name": name, "address": address, "idempotency_key": key or secrets.token_hex(8)},
        )

    # API
    def api(self, method: str, path: str, json: Any = None, headers: dict | None = None):
        all_headers = {"X-CSRF-Token": self.csrf(), **(headers or {})}
        return self.client.open(f"/api/v1{path}", method=method, json=json, headers=all_headers)

    def cart(self) -> dict:
        return self.client.get("/api/v1/cart").get_json()


@pytest.fixture
def shopper(app) -> Shopper:
    return Shopper(app.test_client(), app)


def shopper_on(app: Flask, cookie_from: Shopper | None = None) -> Shopper:
    """A browser talking to ``app``; with ``cookie_from``, the same browser moved there."""
    other = Shopper(app.test_client(), app)
    if cookie_from is not None and cookie_from.cookie:
        other.client.set_cookie(other.cookie_name, cookie_from.cookie)
    return other


# -- instruments -----------------------------------------------------------------------------


class StatementCounter:
    """Counts SQL statements sent through the given engines (SQLAlchemy events)."""

    def __init__(self, *engines) -> None:
        from sqlalchemy import event

        self.count = 0
        self.by_engine: dict[str, int] = {}
        for engine in engines:
            name = str(engine.url)

            def listener(*_args, _name=name, **_kw):
                self.count += 1
                self.by_engine[_name] = self.by_engine.get(_name, 0) + 1

            event.listen(engine, "before_cursor_execute", listener)


def redis_snapshot(client: redis.Redis) -> dict[str, tuple]:
    """Every key with its type, value and whether it expires: equal snapshots mean no write."""
    snapshot = {}
    for key in client.scan_iter("*"):
        kind = client.type(key)
        value = {
            "string": client.get,
            "hash": client.hgetall,
            "set": client.smembers,
        }.get(kind, lambda k: None)(key)
        snapshot[key] = (kind, repr(value), client.ttl(key) > 0)
    return snapshot


@pytest.fixture
def make_real_app(pg_url, real_redis, mailbox) -> Iterator[AppFactory]:
    """Apps on the real PostgreSQL (own schema) and Redis (own prefix), as in production."""
    from shop.redis_client import connect

    _, prefix = real_redis
    factory = AppFactory(
        {
            "database_url": pg_url,
            "redis_url": REDIS_URL,
            "redis_prefix": prefix,
            "smtp_url": mailbox.url,
        },
        lambda: connect(REDIS_URL, socket_timeout=0.5),
    )
    yield factory
    factory.dispose()
