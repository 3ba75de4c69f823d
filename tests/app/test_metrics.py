"""What the metrics record per request, in one process (the sums over gunicorn's workers and the
metrics port: tests/integration/test_metrics_gunicorn.py)."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import REGISTRY

from shop.log_format import ShopJsonFormatter
from tests.support import wait_for_local_tier


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def metered(make_app):
    return make_app(metrics_port=9999)


def test_a_request_is_counted_under_its_url_rule_and_status(metered):
    client = metered.test_client()
    labels = {"route": "/products/<id:product_id>", "method": "GET", "status": "200"}
    before = sample("shop_http_requests_total", **labels)
    timed_before = sample("shop_http_request_duration_seconds_count", **labels)
    assert client.get("/products/1").status_code == 200
    assert client.get("/products/2").status_code == 200
    assert sample("shop_http_requests_total", **labels) == before + 2
    assert sample("shop_http_request_duration_seconds_count", **labels) == timed_before + 2
    unmatched = {"route": "<unmatched>", "method": "GET", "status": "404"}
    before = sample("shop_http_requests_total", **unmatched)
    client.get("/no/such/page/4711")
    assert sample("shop_http_requests_total", **unmatched) == before + 1


def test_an_invented_method_is_not_a_label_of_its_own(metered):
    labels = {"route": "<unmatched>", "method": "other", "status": "405"}  # no rule matched
    before = sample("shop_http_requests_total", **labels)
    metered.test_client().open("/", method="BREW")
    assert sample("shop_http_requests_total", **labels) == before + 1


def test_the_tier_that_answered_each_page_lookup(metered):
    wait_for_local_tier(metered)
    client = metered.test_client()

    def lookups() -> dict[str, float]:
        return {t: sample("shop_cache_lookups_total", cache="page", tier=t) for t in TIERS}

    start = lookups()
    client.get("/products/3")  # rendered: the database
    client.get("/products/3")  # this process's memory
    end = lookups()
    assert end["database"] - start["database"] == 1
    assert end["local"] - start["local"] == 1
    # The render read the product through the catalogue's own cache: counted as such.
    assert sample("shop_cache_lookups_total", cache="catalogue", tier="database") >= 1


TIERS = ("local", "redis", "database")


def test_how_each_rebuild_ended(metered):
    """A miss rebuilt and kept is ``stored``; a list read while an order changed a product on
    it is served but not kept (``invalidated``); a product's own entry, whose lock the order
    deletes, is ``lock_lost``."""
    client = metered.test_client()
    catalogue = metered.extensions["shop"].catalogue
    grid = "/api/v1/products?page=1"

    def rebuilds() -> dict[str, float]:
        return {
            outcome: sample("shop_cache_rebuilds_total", cache="catalogue", outcome=outcome)
            for outcome in ("stored", "invalidated", "lock_lost")
        }

    before = rebuilds()
    shown = client.get(grid).json["items"][0]["id"]
    assert rebuilds() == before | {"stored": before["stored"] + 1}
    read = catalogue.engines.read

    def read_during_an_order(query, **options):
        catalogue.engines.read = read  # the order commits while this rebuild reads
        catalogue.invalidate([shown])
        return read(query, **options)

    for path in (grid, f"/api/v1/products/{shown}"):
        catalogue.invalidate([shown])
        catalogue.engines.read = read_during_an_order
        assert client.get(path).status_code == 200
    assert rebuilds() == before | {
        "stored": before["stored"] + 1,
        "invalidated": before["invalidated"] + 1,
        "lock_lost": before["lock_lost"] + 1,
    }


def test_statements_and_round_trips_per_request_and_the_replica_choice(metered):
    client = metered.test_client()
    sql_before = sample("shop_request_sql_statements_sum")
    reads_before = sample("shop_db_catalogue_reads_total", target="primary")
    client.get("/products/4")  # a cold page: SQL on the primary (no replica configured)
    assert sample("shop_request_sql_statements_sum") > sql_before
    assert sample("shop_db_catalogue_reads_total", target="primary") > reads_before
    assert sample("shop_db_pool_connections_in_use", engine="primary") == 0  # all returned


def test_sessions_created_and_orders_placed(metered):
    from tests.support import Shopper

    shopper = Shopper(metered.test_client(), metered)
    sessions = sample("shop_sessions_created_total")
    orders = sample("shop_orders_placed_total")
    shopper.add(1)
    assert sample("shop_sessions_created_total") == sessions + 1
    shopper.add(2)  # the same session
    assert sample("shop_sessions_created_total") == sessions + 1
    shopper.register(email="metrics@example.com")
    assert shopper.checkout().status_code == 303
    assert sample("shop_orders_placed_total") == orders + 1


def test_no_metrics_port_no_middleware(make_app):
    app = make_app()
    before = sample("shop_http_requests_total", route="/", method="GET", status="200")
    app.test_client().get("/")
    assert sample("shop_http_requests_total", route="/", method="GET", status="200") == before


def test_json_log_lines_carry_the_request_id(metered, caplog):
    formatter = ShopJsonFormatter()
    with caplog.at_level(logging.INFO, logger="shop.access"):
        response = metered.test_client().post(
            "/cart/add", data={"product_id": 1}, headers={"X-Request-ID": "lb-1234.abc"}
        )
    assert response.status_code == 403  # no CSRF token: refused, and logged
    lines = [json.loads(formatter.format(r)) for r in caplog.records if r.name == "shop.access"]
    assert lines, "the refusal was not logged"
    line = lines[-1]
    assert set(line) >= {"time", "level", "logger", "message", "request_id"}
    assert line["request_id"] == "lb-1234.abc"
    assert line["level"] == "INFO" and line["logger"] == "shop.access"
    assert "refused POST /cart/add" in line["message"]


def test_an_unusable_incoming_request_id_is_replaced(metered):
    response = metered.test_client().get("/healthz", headers={"X-Request-ID": "bad id\u00e9" * 10})
    rid = response.headers["X-Request-ID"]
    assert rid and " " not in rid and len(rid) <= 64


def test_redis_errors_and_the_breaker_per_node(metered):
    from shop.redis_client import RedisUnavailable, connect
    from tests.support import free_port

    node = f"127.0.0.1:{free_port()}"  # nothing listens there
    client = connect(f"redis://{node}/0", socket_timeout=0.2, down_for=30)
    for _ in range(2):
        with pytest.raises(RedisUnavailable):
            client.get("x")
    assert sample("shop_redis_errors_total", node=node, error="ConnectionError") >= 1
    assert sample("shop_redis_errors_total", node=node, error="BreakerOpen") >= 1
    assert sample("shop_redis_breaker_open", node=node) == 1
