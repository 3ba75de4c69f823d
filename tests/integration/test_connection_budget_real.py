"""The connection budget on the real PostgreSQL: a worker's pool holds ``threads`` connections;
when every one stays busy, a request waits ``SHOP_DB_POOL_TIMEOUT`` and gets a 503 with a
message (never a 500, never a hang), and the next request after one is returned works."""

from __future__ import annotations

import time
from contextlib import ExitStack

from sqlalchemy import text

from tests.support import KETTLE, MUG, Shopper

THREADS = 2
POOL_TIMEOUT = 0.5


def test_an_exhausted_pool_answers_503_with_a_message_and_recovers(make_real_app, pg_url):
    app = make_real_app(threads=THREADS, db_pool_timeout=POOL_TIMEOUT, catalogue_local_ttl=0)
    primary = app.extensions["shop"].engines.primary
    shopper = Shopper(app.test_client(), app)
    assert shopper.client.get("/readyz").status_code == 200  # the pool has made a connection

    with ExitStack() as held:  # what `threads` slow requests of this worker would hold
        for _ in range(THREADS):
            conn = held.enter_context(primary.connect())
            conn.execute(text("SELECT 1"))
        assert primary.pool.checkedout() == THREADS  # type: ignore[attr-defined]

        started = time.monotonic()
        api = shopper.client.get(f"/api/v1/products/{KETTLE}")  # a cache miss: the database
        waited = time.monotonic() - started
        assert api.status_code == 503, api.get_data(as_text=True)[:300]
        assert api.get_json()["error"]["code"] == "service_unavailable"
        assert "try again" in api.get_json()["error"]["message"]
        assert api.headers["Retry-After"]
        assert POOL_TIMEOUT <= waited < POOL_TIMEOUT + 2, waited  # the pool's wait, no hang

        page = shopper.client.get(f"/products/{MUG}")
        assert page.status_code == 503 and "try again" in page.get_data(as_text=True)
        assert primary.pool.checkedout() == THREADS  # type: ignore[attr-defined]

    # The connections are back: the very next requests are served, nothing was restarted.
    assert shopper.client.get(f"/api/v1/products/{KETTLE}").status_code == 200
    assert shopper.client.get(f"/products/{MUG}").status_code == 200
    assert primary.pool.checkedout() == 0  # type: ignore[attr-defined]
    # The pool never grew past the budget, on our side or the server's.
    assert primary.pool.size() == THREADS and primary.pool.overflow() <= 0  # type: ignore[attr-defined]
