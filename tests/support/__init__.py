"""What the tests share: the test catalogue, a shopper's steps, apps wired like instances
behind a balancer, the in-process mailbox, and instruments that count SQL and Redis writes.

Fixtures live in ``tests/conftest.py`` and use these; test modules import from here, never from
one another, so a helper has one home whatever layer (``tests/app``, ``tests/integration``,
``tests/deploy``, ``tests/stack``) needs it.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import html
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import jinja2
import jinja2.bccache
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, text

from shop import create_app
from shop.catalogue import recount_categories
from shop.config import Settings
from shop.models import categories, products
from shop.session_ids import csrf_token_for

ROOT = Path(__file__).resolve().parents[2]

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


@dataclass(frozen=True)
class RedisTarget:
    """A real Redis for a test: a standalone server's URL, or a node of a Redis Cluster."""

    url: str
    cluster: bool = False

    def client(self) -> redis.Redis:
        """A client of our own (answers as ``str``), not the shop's."""
        if self.cluster:
            from redis.cluster import RedisCluster

            return RedisCluster.from_url(self.url, decode_responses=True)  # type: ignore[return-value]
        return redis.Redis.from_url(self.url, decode_responses=True)


def missing(what: str, exc: Exception) -> None:
    """Skip a test whose server is missing, by name; in CI (``SHOP_TEST_REQUIRE_SERVICES=1``)
    fail it instead."""
    message = f"{what} not reachable ({type(exc).__name__}: {exc})"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message}; SHOP_TEST_REQUIRE_SERVICES=1 forbids skipping", pytrace=False)
    pytest.skip(f"needs {message}")


# -- mail ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all bound at once, so none is given twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def gunicorn_running(env: dict[str, str], stdout: Path, stderr: Path) -> Iterator[subprocess.Popen]:
    """The shop under its own ``gunicorn.conf.py``, as the image runs it, its output in two
    files; stopped as a deploy stops it (SIGTERM, then killed if it lingers)."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=err,
        )
    try:
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=5)


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


# -- apps --------------------------------------------------------------------------------------


def fake_client(server: fakeredis.FakeServer) -> redis.Redis:
    return fakeredis.FakeRedis(server=server, decode_responses=True)


class MemoryBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates shared by every app of the run: each test builds its own app, and
    compiling the same templates again for each would cost more than most tests. Jinja checks
    each template's source checksum, so an edited template is compiled afresh."""

    def __init__(self) -> None:
        self.compiled: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.key in self.compiled:
            bucket.bytecode_from_string(self.compiled[bucket.key])

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self.compiled[bucket.key] = bucket.bytecode_to_string()


COMPILED_TEMPLATES = MemoryBytecodeCache()


def share_compiled_url_builders() -> None:
    """Let every app of the run share werkzeug's parsed rules and generated URL builders.

    Binding a route parses the rule into its parts and converters and compiles two small Python
    functions from an AST (most of building an app, and the fast tests build over a thousand
    apps). All of it depends only on the rule's text, its host or subdomain, whether slashes
    merge, its defaults and the map's converter classes, and the builders are bound to the rule
    when called, so apps with the same routes can share them. The converter objects are shared
    too: the shop's and werkzeug's keep no state of their map. The shop itself builds one app
    per process and never calls this.
    """
    from werkzeug.routing import Rule

    if getattr(Rule.compile, "shared", False):
        return
    compile_rule = Rule.compile
    parsed: dict[tuple, tuple] = {}

    def compile_once(self: Rule) -> None:
        assert self.map is not None
        key = (
            self.rule,
            self.host if self.map.host_matching else self.subdomain,
            self.merge_slashes,
            repr(sorted((self.defaults or {}).items())),
            tuple(sorted(self.map.converters.items())),
        )
        if key not in parsed:
            compile_rule(self)
            parsed[key] = (
                tuple(self._parts),
                tuple(self._trace),
                dict(self._converters),
                frozenset(self.arguments),
                self._build.__func__,  # type: ignore[attr-defined]
                self._build_unknown.__func__,  # type: ignore[attr-defined]
            )
            return
        parts, trace, converters, arguments, build, build_unknown = parsed[key]
        self._parts, self._trace = list(parts), list(trace)
        self._converters = dict(converters)
        self.arguments = set(arguments)
        self._build = build.__get__(self, None)
        self._build_unknown = build_unknown.__get__(self, None)

    compile_once.shared = True  # type: ignore[attr-defined]
    Rule.compile = compile_once  # type: ignore[method-assign]


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
        app.jinja_env.bytecode_cache = COMPILED_TEMPLATES
        self.apps.append(app)
        return app

    def dispose(self) -> None:
        for app in self.apps:
            app.extensions["shop"].close()


def wait_for_local_tier(app: Flask, timeout: float = 3.0) -> None:
    """The in-process catalogue tier is used once its listener has subscribed."""
    tier = app.extensions["shop"].catalogue.cache.local
    tier.get("-")  # starts the listener
    deadline = time.monotonic() + timeout
    while not tier.live:
        assert time.monotonic() < deadline, "the invalidation listener never subscribed"
        time.sleep(0.01)


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

    def add(self, product_id: int, quantity: int | str = 1, next: str | None = None):
        form = {"product_id": product_id, "quantity": quantity}
        return self.post_form("/cart/add", {**form, **({"next": next} if next else {})})

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


def shopper_on(app: Flask, cookie_from: Shopper | None = None) -> Shopper:
    """A browser talking to ``app``; with ``cookie_from``, the same browser moved there."""
    other = Shopper(app.test_client(), app)
    if cookie_from is not None and cookie_from.cookie:
        other.client.set_cookie(other.cookie_name, cookie_from.cookie)
    return other


def back_office_user(app: Flask, role: str = "admin", email: str | None = None) -> Shopper:
    """A browser signed in to an account with ``role`` (granted as ``flask user grant``
    does), its password just entered: ready for /admin."""
    from shop import staff
    from shop.audit import Actor

    email = email or f"{role}-{secrets.token_hex(3)}@example.com"
    browser = Shopper(app.test_client(), app)
    browser.sign_up(email)
    engine = app.extensions["shop"].engines.primary
    with engine.begin() as conn:
        staff.grant(conn, Actor.command_line(), email=email, role=role, at=utc_now())
    browser.login(email)
    return browser


def utc_now():
    import datetime

    return datetime.datetime.now(datetime.UTC)


def page_text(response) -> str:
    """What a person reads: the page without its per-session CSRF token and cookie noise."""
    text = html.unescape(response.get_data(as_text=True))
    return re.sub(r'name="csrf_token" value="[^"]*"', "", text)


def path_of(link: str) -> str:
    return re.sub(r"^https?://[^/]+", "", link)


def session_user(shopper: Shopper) -> dict | None:
    return shopper.client.get("/api/v1/session").get_json()["user"]


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


class RedisRoundTrips:
    """Counts what this thread sends to any Redis (fakeredis included): one per command, one
    per pipeline or script. A context manager; other threads (an invalidation listener) are
    not counted."""

    def __init__(self) -> None:
        self.count = 0
        self._thread = threading.get_ident()
        self._original: Any = None

    def __enter__(self) -> RedisRoundTrips:
        from redis.connection import AbstractConnection

        original = self._original = AbstractConnection.send_packed_command

        def counted(connection, *args, **kwargs):
            if threading.get_ident() == self._thread:
                self.count += 1
            return original(connection, *args, **kwargs)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *_exc: object) -> None:
        from redis.connection import AbstractConnection

        AbstractConnection.send_packed_command = self._original  # type: ignore[method-assign]


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
