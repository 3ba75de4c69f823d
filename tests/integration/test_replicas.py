"""Replica routing on the real PostgreSQL: catalogue misses read a replica engine, writes and
the shopper's own pages use the primary, and a replica that goes away and comes back is
skipped and then used again without a restart."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from tests.support import KETTLE, MUG, Shopper, StatementCounter
from tests.support.tcp_proxy import TcpProxy


def _via_proxy(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    return parts._replace(netloc=netloc).geturl()


def _statements(counter: StatementCounter, engine) -> int:
    return counter.by_engine.get(str(engine.url), 0)


def test_catalogue_misses_go_to_the_replica_and_orders_to_the_primary(pg_url, make_real_app):
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname, parts.port).start()
    try:
        app = make_real_app(replica_urls=(_via_proxy(pg_url, proxy),), replica_retry_after=0.3)
        engines = app.extensions["shop"].engines
        replica = engines.replicas[0].engine
        counter = StatementCounter(engines.primary, replica)
        shopper = Shopper(app.test_client(), app)
        for path in ("/", "/?page=2", f"/products/{KETTLE}", "/?q=mug"):
            assert shopper.client.get(path).status_code == 200
        assert _statements(counter, engines.primary) == 0
        assert _statements(counter, replica) > 0

        shopper.add(MUG, 1)
        shopper.register()
        before = _statements(counter, replica)
        placed = shopper.checkout()
        assert placed.status_code == 303  # to the payment step; the order's page is beside it
        order_page = placed.headers["Location"].removesuffix("/pay")
        assert shopper.client.get(order_page).status_code == 200
        assert _statements(counter, engines.primary) > 0
        assert _statements(counter, replica) == before  # checkout and its page: primary only

        proxy.stop()  # the replica disappears
        for page in (2, 3):
            assert shopper.client.get(f"/?page={page}&per_page=12").status_code == 200
        ready = shopper.client.get("/readyz")
        assert ready.status_code == 200
        assert ready.get_json()["replicas"]["replica1"]["ok"] is False

        proxy.start()  # and comes back: reads return to it, no restart
        time.sleep(0.4)
        before = _statements(counter, replica)
        assert shopper.client.get("/?per_page=48").status_code == 200
        assert _statements(counter, replica) > before
        assert shopper.client.get("/readyz").get_json()["replicas"]["replica1"]["ok"] is True
    finally:
        proxy.stop()


def test_primary_outage_answers_503_and_recovers_without_restart(pg_url, make_real_app):
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname, parts.port).start()
    try:
        app = make_real_app(
            database_url=_via_proxy(pg_url, proxy), replica_urls=(pg_url,), db_connect_timeout=1
        )
        shopper = Shopper(app.test_client(), app)
        shopper.register()
        shopper.add(KETTLE)
        proxy.stop()  # the primary disappears
        refused = shopper.checkout()
        assert refused.status_code == 503
        assert "try again" in refused.get_data(as_text=True)
        api = shopper.api(
            "POST",
            "/orders",
            json={"shipping": {"name": "A", "address": "B"}},
            headers={"Idempotency-Key": "during-outage"},
        )
        assert api.status_code == 503
        assert api.get_json()["error"]["code"] == "service_unavailable"
        assert shopper.client.get("/?page=3&per_page=12").status_code == 200  # from the replica
        assert shopper.client.get("/readyz").status_code == 503
        assert shopper.cart()["count"] == 1  # nothing half-done: the cart is intact

        proxy.start()
        placed = shopper.checkout()
        assert placed.status_code == 303
        assert shopper.client.get("/readyz").status_code == 200
    finally:
        proxy.stop()


def test_a_read_that_must_see_a_write_skips_a_replica_that_has_not_replayed_it(pg_url):
    """A server that is not a standby has every write; a standby is asked how far it is."""
    from sqlalchemy import text

    from shop.db import Engines

    engines = Engines.from_urls(pg_url, [pg_url + "&sslmode=disable"])  # told apart by URL
    position = engines.write_position()
    assert position > 0
    counter = StatementCounter(engines.primary, engines.replicas[0].engine)
    assert engines.read(lambda c: c.execute(text("SELECT 1")).scalar(), min_position=position)
    assert _statements(counter, engines.replicas[0].engine) == 2  # the position check + query
    assert _statements(counter, engines.primary) == 0
    engines.dispose()
