"""The connection budget (shop.db.pool_sizes): a worker holds at most ``threads`` connections to
each database server, and the premise that makes that enough: a request thread never holds
two connections to one server at once."""

from __future__ import annotations

import runpy
import threading
from collections import Counter

import fakeredis
import pytest
from sqlalchemy import event

from shop.config import ConfigError, Settings
from shop.db import pool_sizes
from shop.services import build_services
from tests.support import KETTLE, MUG, SECRET, back_office_user

PRIMARY = "postgresql+psycopg2://shop@db.invalid/shop"
REPLICAS = ("postgresql+psycopg2://shop@replica1.invalid/shop",) * 2


@pytest.mark.parametrize("threads", [1, 4, 16])
def test_a_pool_holds_the_threads_and_no_more(threads):
    sizes = pool_sizes(threads, pool_timeout=2.5)
    assert (sizes.size, sizes.overflow, sizes.most, sizes.timeout) == (threads, 0, threads, 2.5)


def test_every_engine_of_an_instance_is_sized_from_its_threads(tmp_path):
    settings = Settings(
        database_url=PRIMARY,
        replica_urls=REPLICAS,
        redis_url="redis://fake",
        secret_key=SECRET,
        threads=6,
        db_pool_timeout=1.5,
    )
    services = build_services(
        settings, str(tmp_path), redis_client=fakeredis.FakeRedis(decode_responses=True)
    )
    try:  # no connection is made: engines connect on first use
        engines = [services.engines.primary, *(r.engine for r in services.engines.replicas)]
        assert len(engines) == 3
        for engine in engines:
            assert (engine.pool.size(), engine.pool._max_overflow) == (6, 0)  # type: ignore[attr-defined]
            assert engine.pool._timeout == 1.5  # type: ignore[attr-defined]
        # The mail outbox's deliveries borrow from the same pool: no engine of their own.
        assert services.mail_worker.make_delivery().engine is services.engines.primary
    finally:
        services.close()


def test_gunicorn_and_the_shop_agree_on_the_threads(monkeypatch):
    """One number sizes both the worker and its pools: the same variable, the same default."""
    from tests.support import ROOT

    monkeypatch.delenv("SHOP_THREADS", raising=False)
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"] == Settings().threads
    monkeypatch.setenv("SHOP_THREADS", "7")
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["threads"] == 7
    assert Settings.from_env({"SHOP_THREADS": "7"}).threads == 7


@pytest.mark.parametrize(("name", "value"), [("SHOP_THREADS", "0"), ("SHOP_DB_POOL_TIMEOUT", "0")])
def test_a_pool_that_could_not_serve_is_refused_at_start(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


class HeldConnections:
    """Counts, per thread and engine, the connections checked out of the pool; remembers the
    most one thread ever held from one engine."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.most = 0
        self.checkouts = 0

    def watch(self, engine) -> None:
        key = id(engine)

        def checkout(*_args) -> None:
            held = self._held()
            held[key] += 1
            self.checkouts += 1
            self.most = max(self.most, held[key])

        def checkin(*_args) -> None:
            held = self._held()
            held[key] = max(0, held[key] - 1)

        event.listen(engine.pool, "checkout", checkout)
        event.listen(engine.pool, "checkin", checkin)

    def _held(self) -> Counter:
        if not hasattr(self._local, "held"):
            self._local.held = Counter()
        return self._local.held


def test_a_request_never_holds_two_connections_to_one_server(app, shopper):
    """Why ``threads`` connections are enough: a whole journey (browse, cart, sign-up,
    checkout, payment, the order page, the back office) takes one connection at a time.
    Were a request to take a second, a pool of ``threads`` could run dry with every thread
    waiting for another's connection."""
    held = HeldConnections()
    engines = app.extensions["shop"].engines
    for engine in [engines.primary, *(r.engine for r in engines.replicas)]:
        held.watch(engine)

    assert shopper.client.get("/").status_code == 200
    assert shopper.client.get(f"/products/{KETTLE}").status_code == 200
    shopper.add(KETTLE, 2)
    shopper.add(MUG)
    shopper.sign_up("budget@example.com")
    shopper.login("budget@example.com")
    placed = shopper.checkout()
    assert placed.status_code in (200, 303), placed.status_code
    orders = shopper.api("GET", "/orders")
    assert orders.status_code == 200, orders.status_code
    order_id = orders.get_json()["items"][0]["id"]
    assert shopper.client.get(f"/orders/{order_id}").status_code == 200
    admin = back_office_user(app)
    for path in ("/admin/", "/admin/orders", "/admin/products", "/admin/stock"):
        assert admin.client.get(path).status_code == 200, path

    assert held.checkouts > 10, "the journey used no database: the watch saw nothing"
    assert held.most == 1
