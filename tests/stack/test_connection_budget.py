"""The connection budget through the balancer: the instances reach both databases through
PgBouncer, so however many shoppers browse and buy, each server sees at most PgBouncer's pool,
and the instances themselves hold at most instances x workers x threads connections to it
(shop.db.pool_sizes). When PgBouncer crashes, orders and catalogue misses get a 503 with a
message, and everything works again once it is started, with no instance restarted."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psycopg2
import pytest

from deploy.stack import stack as stack_module
from deploy.stack.pgbouncer import admin_rows
from tests.stack.conftest import Shopper, drop_catalogue_cache, in_stock_products, sql

SHOPPERS = 36


def _server_connections(topology, server: str) -> int:
    """Connections to the shop's database on ``server``, from anyone but this query."""
    with psycopg2.connect(topology.component(server).dsn, connect_timeout=3) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' "
                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            return int(cur.fetchone()[0])


def _shop_clients(topology) -> dict[str, int]:
    """The instances' connections to PgBouncer, per database (SHOW POOLS: linked + waiting)."""
    rows = admin_rows(topology.pgbouncer, "SHOW POOLS")
    return {
        str(row["database"]): int(row["cl_active"]) + int(row["cl_waiting"])  # type: ignore[call-overload]
        for row in rows
        if row["database"] in ("shop", "shop_replica")
    }


class Peaks:
    """Samples the connection counts every 20 ms in a thread of its own; keeps the highest that
    held for two samples in a row. A connection the pool replaces (its pre-ping found it dead)
    is closed before its successor opens, but PgBouncer can accept the new one before it reads
    the old one's close, and list both for one sample; a pool that grows past its size keeps
    the extra connections for as long as the load lasts."""

    def __init__(self, topology) -> None:
        self.topology = topology
        self.most: Counter = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        previous: dict[str, int] = {}
        while not self._stop.wait(0.02):
            seen = {
                f"server_{s}": _server_connections(self.topology, s) for s in ("primary", "replica")
            }
            seen.update({f"clients_{db}": n for db, n in _shop_clients(self.topology).items()})
            for name, count in seen.items():
                held = min(count, previous.get(name, count))
                self.most[name] = max(self.most[name], held)
            previous = seen
            self.samples += 1


def _guest_buys(base: str, product_ids: list[int], pages: list[str]) -> list[int]:
    """Browse the grid and products (catalogue misses: the replica), then buy as a guest and
    pay (the primary); every status seen."""
    shopper = Shopper(base)
    statuses = []
    for path in pages:
        statuses.append(shopper.get(path).status_code)
    for product_id in product_ids:
        statuses.append(shopper.get(f"/api/v1/products/{product_id}").status_code)
    added = shopper.api("POST", "/cart/items", json={"product_id": product_ids[0], "quantity": 1})
    statuses.append(added.status_code)
    placed = shopper.api(
        "POST",
        "/orders",
        headers={"Idempotency-Key": secrets.token_hex(8)},
        json={
            "email": f"budget-{secrets.token_hex(5)}@example.com",
            "shipping": {"name": "Budget", "address": "1 Pool Lane"},
        },
    )
    statuses.append(placed.status_code)
    if placed.status_code == 201:
        pay = urlsplit(placed.json()["order"]["payment_url"]).path
        statuses.append(shopper.request("POST", pay, json={"outcome": "succeed"}).status_code)
    return statuses


def test_the_servers_see_pgbouncers_pool_however_many_shoppers(healthy_stack):
    topology = healthy_stack
    env = topology.apps["app1"].env
    budget = len(topology.apps) * int(env["SHOP_WORKERS"]) * int(env["SHOP_THREADS"])
    products = [p["id"] for p in in_stock_products(topology, 8, minimum=SHOPPERS)]
    drop_catalogue_cache(topology)
    orders_before = sql(topology, "primary", "SELECT count(*) FROM orders")[0][0]

    with Peaks(topology) as peaks, ThreadPoolExecutor(max_workers=SHOPPERS) as pool:
        futures = [
            pool.submit(
                _guest_buys,
                topology.url,
                products[i % 8 :] + products[: i % 8],
                [f"/?page={1 + (i + k) % 12}&per_page=12" for k in range(4)] + [f"/?q=item{i}"],
            )
            for i in range(SHOPPERS)
        ]
        statuses = Counter(status for future in futures for status in future.result())

    assert set(statuses) <= {200, 201}, statuses
    placed = sql(topology, "primary", "SELECT count(*) FROM orders")[0][0] - orders_before
    assert placed == SHOPPERS
    assert peaks.samples > 10, peaks.samples
    server_budget = topology.pgbouncer.server_connections
    # Each server saw at most PgBouncer's pool for the shop's database ...
    assert 1 <= peaks.most["server_primary"] <= server_budget, peaks.most
    assert 1 <= peaks.most["server_replica"] <= server_budget, peaks.most
    # ... while the instances held at most their own budget of connections to PgBouncer.
    assert peaks.most["clients_shop"] <= budget, (peaks.most, budget)
    assert peaks.most["clients_shop_replica"] <= budget, (peaks.most, budget)


def _patiently(check, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def test_pgbouncer_crashed_503_with_a_message_then_back_without_a_restart(healthy_stack):
    topology = healthy_stack
    product = in_stock_products(topology, 1)[0]
    shopper = Shopper(topology.url)
    assert (
        shopper.api(
            "POST", "/cart/items", json={"product_id": product["id"], "quantity": 1}
        ).status_code
        == 200
    )
    order = {
        "email": f"crash-{secrets.token_hex(5)}@example.com",
        "shipping": {"name": "Crash", "address": "1 Bouncer Rd"},
    }
    app_pids = {name: app.pid for name, app in topology.apps.items()}
    search = f"bouncer{secrets.token_hex(4)}"

    stack_module.crash_component(topology, "pgbouncer")
    try:
        refused = shopper.api(
            "POST", "/orders", headers={"Idempotency-Key": "bouncer-down"}, json=order
        )
        assert refused.status_code == 503, refused.text[:300]
        assert refused.json()["error"]["code"] == "service_unavailable"
        assert "try again" in refused.json()["error"]["message"]
        assert refused.headers.get("Retry-After")

        # A search nobody made before is a miss in every tier: it needs a database, and
        # neither can be reached.
        miss = shopper.get(f"/?q={search}")
        assert miss.status_code == 503 and "try again" in miss.text, miss.status_code
        api_miss = shopper.get(f"/api/v1/products?q={search}")
        assert api_miss.status_code == 503
        assert api_miss.json()["error"]["code"] == "service_unavailable"
    finally:
        stack_module.start_component(topology, "pgbouncer")

    # Back: the instances reconnect by themselves (their pools re-make dead connections).
    placed = _patiently(
        lambda: (
            (
                answer := shopper.api(
                    "POST", "/orders", headers={"Idempotency-Key": "bouncer-back"}, json=order
                )
            ).status_code
            == 201
            and answer
        ),
        timeout=10,
    )
    assert placed, "no order within 10 s of PgBouncer's start"
    assert shopper.get(f"/?q={search}").status_code == 200
    assert shopper.get(f"/api/v1/products?q={search}").status_code == 200
    stack_module.wait_for_backends(topology, "UP", timeout=30)
    assert {name: app.pid for name, app in topology.apps.items()} == app_pids
    # Nothing half-written by the refused order: one order for this address, the later one.
    orders = sql(
        topology, "primary", "SELECT count(*) FROM orders WHERE email = %s", order["email"]
    )
    assert orders[0][0] == 1


@pytest.fixture(autouse=True)
def _pgbouncer_running(healthy_stack):
    """A test that failed halfway may leave PgBouncer down: the next one starts it again."""
    yield
    if not stack_module.is_alive(healthy_stack, "pgbouncer"):
        stack_module.start_component(healthy_stack, "pgbouncer")
