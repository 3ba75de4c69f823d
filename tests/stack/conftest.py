"""The whole topology (``make stack``) on ports of its own, for tests through the balancer.

The stack starts once per test session in a temporary work folder (ports from
``SHOP_TEST_STACK_PORT_BASE``, default 26400, and ``SHOP_TEST_STACK_PORT``, default 26480, so a
developer's own ``make stack`` on 8000 is left alone) and is stopped, by pid, at the end.
Missing binaries skip these tests by name, or fail them under ``SHOP_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
import requests
from prometheus_client.parser import text_string_to_metric_families

from deploy.stack import stack as stack_module
from deploy.stack.redis_server import stack_client
from tests.support import REQUIRE_SERVICES

PG_BIN = Path(os.environ.get("STACK_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _require(condition: bool, what: str) -> None:
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(
            f"{what} is missing; SHOP_TEST_REQUIRE_SERVICES=1 forbids skipping", pytrace=False
        )
    pytest.skip(f"needs {what}")


@pytest.fixture(scope="session")
def stack() -> Iterator[stack_module.Topology]:
    _require((PG_BIN / "initdb").exists(), f"PostgreSQL server binaries in {PG_BIN}")
    _require(shutil.which("redis-server") is not None, "redis-server")
    _require(shutil.which("haproxy") is not None, "haproxy")
    work = Path(tempfile.mkdtemp(prefix="shop-stack-test-"))
    work.chmod(0o755)  # the postgres user must reach its data directories
    base = int(os.environ.get("SHOP_TEST_STACK_PORT_BASE", "26400"))
    ports = stack_module.Ports.from_env(
        {
            "STACK_PORT_BASE": str(base),
            "STACK_PORT": os.environ.get("SHOP_TEST_STACK_PORT", str(base + 80)),
            # SHOP_TEST_STACK_REDIS=cluster: the same tests on a 6-node Redis Cluster.
            "STACK_REDIS": os.environ.get("SHOP_TEST_STACK_REDIS", ""),
        }
    )
    try:
        topology = stack_module.start_stack(work, ports=ports, seed_products=300)
        yield topology
    finally:
        stack_module.stop_stack(work, purge=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def healthy_stack(stack) -> stack_module.Topology:
    """The stack with every part running and every instance in rotation (a fault test may
    have left something down if it failed halfway)."""
    for name, alive in stack_module.stack_status(stack).items():
        if not alive:
            stack_module.start_component(stack, name)
    stack_module.wait_for_backends(stack, "UP", timeout=30)
    return stack


# -- talking to the servers directly -----------------------------------------------------------


def sql(topology: stack_module.Topology, server: str, query: str, *args: Any) -> list[tuple]:
    """Run a query on the stack's ``primary`` or ``replica`` itself, not through the app."""
    with psycopg2.connect(topology.component(server).dsn, connect_timeout=3) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []


def statement_calls(topology: stack_module.Topology, server: str, pattern: str) -> int:
    """How many times the server itself ran statements matching ``pattern`` (ILIKE), from
    pg_stat_statements, which is updated as each statement ends."""
    rows = sql(
        topology,
        server,
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
        "WHERE query ILIKE %s AND query NOT ILIKE %s",
        pattern,
        "%pg_stat_statements%",
    )
    return int(rows[0][0])


def instance_counter(topology: stack_module.Topology, name: str, label: str) -> Counter:
    """The counter ``name`` summed over every instance's metrics port (read directly, not
    through Prometheus), by the value of one of its labels."""
    counts: Counter = Counter()
    for app in topology.apps.values():
        url = f"http://127.0.0.1:{app.env['SHOP_METRICS_PORT']}/metrics"
        for family in text_string_to_metric_families(requests.get(url, timeout=5).text):
            for sample in family.samples:
                if sample.name == name:
                    counts[sample.labels[label]] += sample.value
    return counts


def stack_redis(topology: stack_module.Topology) -> redis.Redis:
    """A client of the stack's Redis, or of its Redis Cluster (``SHOP_TEST_STACK_REDIS``)."""
    return stack_client(topology, decode_responses=True)


def set_stock(topology: stack_module.Topology, product_id: int, stock: int) -> None:
    """As an operator does: ``flask product set`` on an instance's settings (committed, then
    invalidated)."""
    app = topology.apps["app1"]
    flask = app.command[0].replace("gunicorn", "flask")
    command = subprocess.run(
        [flask, "--app", "shop", "product", "set", str(product_id), "--stock", str(stock)],
        cwd=app.cwd,
        env=dict(app.env, SHOP_INSTANCE_NAME="cli"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 0, command.stderr


def drop_catalogue_cache(topology: stack_module.Topology) -> None:
    """Forget every cached catalogue entry and page, in every tier, so the next reads are misses
    that hit a database: Redis's keys, each instance's memory (the shop's own structural
    invalidation message) and the edge's copies (a purge of the tag every page carries)."""
    from deploy.stack.edge_purger import VarnishPurge
    from shop.local_tier import LocalTier

    client = stack_redis(topology)
    for key in list(client.scan_iter("shop:cat:*", count=1000)):
        client.delete(key)  # one by one: a cluster's keys live on several nodes
    client.publish(topology.purger.channel, LocalTier.message([], [], True))
    VarnishPurge("127.0.0.1", topology.cache.purge_port)(["shop"])
    time.sleep(0.2)  # the instances' listeners apply the message as it arrives


# -- a shopper with a browser's cookie jar ---------------------------------------------------------

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_COUNT = re.compile(r'data-testid="cart-count">([^<]*)<')
_KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


@dataclass
class Shopper:
    """Talks to the balancer like a browser: one cookie jar, forms sent with Fetch Metadata."""

    base: str
    http: requests.Session = field(default_factory=requests.Session)
    served_by: list[str] = field(default_factory=list)
    last_page: str = ""

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 15)
        response = self.http.request(method, self.base + path, **kwargs)
        for hop in [*response.history, response]:
            if "X-Served-By" in hop.headers:
                self.served_by.append(hop.headers["X-Served-By"])
        if "text/html" in response.headers.get("Content-Type", ""):
            self.last_page = response.text
        return response

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def submit(self, path: str, data: dict[str, Any], page: str | None = None) -> requests.Response:
        """Post a form of the page it is on (the last page by default) as a browser does: with
        Fetch Metadata saying it comes from the shop's own page (catalogue pages carry no
        token, README "Security"), and the page's CSRF token when it has one."""
        token = _CSRF.search(page or self.last_page)
        fields = {"csrf_token": token.group(1)} if token else {}
        browser = {"Sec-Fetch-Site": "same-origin", "Origin": self.base}
        return self.request("POST", path, data={**fields, **data}, headers=browser)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        token = self.get("/api/v1/session").json()["csrf_token"]
        headers = {"X-CSRF-Token": token, **kwargs.pop("headers", {})}
        return self.request(method, "/api/v1" + path, headers=headers, **kwargs)

    @property
    def cart_count(self) -> str | None:
        found = _COUNT.search(self.last_page)
        return found.group(1) if found else None

    def checkout_key(self) -> str:
        found = _KEY.search(self.last_page)
        assert found, "not on the checkout page"
        return found.group(1)


@pytest.fixture
def shopper(healthy_stack) -> Shopper:
    return Shopper(healthy_stack.url)


def in_stock_products(topology: stack_module.Topology, count: int, minimum: int = 20) -> list[dict]:
    listing = requests.get(topology.url + "/api/v1/products?per_page=96", timeout=10).json()
    chosen = [p for p in listing["items"] if p["stock"] >= minimum][:count]
    assert len(chosen) == count, "the seeded catalogue has too few products in stock"
    return chosen
