"""What the operator's Prometheus sees of the stack: every request the instances answered,
summed over instances and workers, the cache tiers, the replica's lag, and the Redis and
PostgreSQL exporters up. The README's queries ("Metrics and logs") are asked here as written."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from tests.stack.conftest import _require, in_stock_products, instance_counter

HIT_RATIO = (
    "sum by (cache, tier) (rate(shop_cache_lookups_total[1m]))"
    " / ignoring (tier) group_left sum by (cache) (rate(shop_cache_lookups_total[1m]))"
)


@pytest.fixture(autouse=True)
def _monitoring_installed() -> None:
    for program in ("prometheus", "prometheus-redis-exporter", "prometheus-postgres-exporter"):
        _require(shutil.which(program) is not None, program)


def query(topology, promql: str) -> list[dict[str, Any]]:
    response = requests.get(
        topology.prometheus.url + "/api/v1/query", params={"query": promql}, timeout=5
    )
    response.raise_for_status()
    return response.json()["data"]["result"]


def scalar(topology, promql: str) -> float | None:
    result = query(topology, promql)
    return float(result[0]["value"][1]) if result else None


def eventually(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


def requests_at_instances(topology, route: str) -> float:
    return instance_counter(topology, "shop_http_requests_total", "route")[route]


def test_prometheus_counts_every_request_through_the_balancer(healthy_stack, shopper):
    topology = healthy_stack
    eventually(lambda: scalar(topology, 'sum(up{job="shop"})') == 3, "all instances scraped")
    promql = 'sum(shop_http_requests_total{route="/cart"}) or vector(0)'
    before = requests_at_instances(topology, "/cart")
    eventually(lambda: scalar(topology, promql) == before, "Prometheus caught up before")

    made = 30
    for _ in range(made):  # the cart is never kept by the edge cache: every one reaches an app
        assert requests.get(topology.url + "/cart", timeout=10).status_code == 200

    assert requests_at_instances(topology, "/cart") == before + made
    eventually(lambda: scalar(topology, promql) == before + made, f"{made} more in Prometheus")
    per_app = query(topology, 'sum by (app) (shop_http_requests_total{route="/cart"})')
    assert len(per_app) == 3  # round robin: every instance's share is in the sum


def test_the_cache_hit_ratio_and_the_replica_lag_are_there(healthy_stack, shopper):
    topology = healthy_stack
    products = in_stock_products(topology, 3)
    shopper.get(f"/products/{products[0]['id']}")
    added = shopper.submit("/cart/add", {"product_id": products[0]["id"], "quantity": 1})
    assert added.status_code == 200
    for _ in range(5):  # with a session: past the edge cache, to the instances' tiers
        for product in products:
            assert shopper.get(f"/products/{product['id']}").status_code == 200

    def page_hits() -> list[dict]:
        # A series needs two scrapes with lookups between them before rate() has a value (a
        # tier with none in the window is 0/0, NaN): keep browsing while waiting.
        for product in products:
            assert shopper.get(f"/products/{product['id']}").status_code == 200
        ratios = [r for r in query(topology, HIT_RATIO) if not math.isnan(float(r["value"][1]))]
        tiers = {(r["metric"]["cache"], r["metric"]["tier"]) for r in ratios}
        return ratios if tiers & {("page", "local"), ("page", "redis")} else []

    ratios = eventually(page_hits, "a page cache hit ratio per tier")
    values = [float(r["value"][1]) for r in ratios]
    assert all(0 <= v <= 1 for v in values), values

    rebuilds = eventually(
        lambda: query(topology, "sum by (cache, outcome) (shop_cache_rebuilds_total)"),
        "rebuilds by outcome",
    )
    assert ("page", "stored") in {(r["metric"]["cache"], r["metric"]["outcome"]) for r in rebuilds}

    lag = eventually(
        lambda: query(topology, "max by (replica) (shop_replica_lag_bytes)"), "replica lag"
    )
    assert {r["metric"]["replica"] for r in lag} == {"replica1"}
    reads = eventually(
        lambda: query(topology, "sum by (target) (shop_db_catalogue_reads_total)"),
        "reads by target",
    )
    assert {r["metric"]["target"] for r in reads} <= {"replica1", "primary"}


def test_the_redis_and_postgresql_exporters_are_up(healthy_stack):
    topology = healthy_stack
    eventually(lambda: scalar(topology, 'min(up{job=~"redis|postgres"})') == 1, "exporters up")
    eventually(lambda: scalar(topology, "redis_up") == 1, "redis_up == 1")
    eventually(lambda: scalar(topology, "min(pg_up)") == 1, "pg_up == 1")
    # Both servers, and the primary's own view of the standby (bytes it has not replayed).
    eventually(lambda: scalar(topology, "count(pg_static)") == 2, "both servers exported")
    eventually(lambda: query(topology, "pg_stat_replication_pg_wal_lsn_diff"), "the primary's view")
