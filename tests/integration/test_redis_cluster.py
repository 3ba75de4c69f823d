"""What only a real Redis Cluster shows: a primary frozen under shoppers, slots moving under
them, and a plain client sent to one node of a cluster. Each answer is a page or a 503 with a
message, never a 500, and the shop recovers without a restart.

The failover and the resharding change the cluster's layout, so they run on a cluster of their
own (started for this module), not the session's."""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from flask import Flask

from deploy.stack.redis_server import (
    RedisServerError,
    RedisServerMissing,
    ThrowawayCluster,
    ThrowawayRedis,
)
from shop.redis_client import connect
from shop.session_ids import session_ref
from shop.throttle import RULES
from tests.support import (
    KETTLE,
    MUG,
    AppFactory,
    Mailbox,
    Shopper,
    free_port,
    missing,
    wait_for_local_tier,
)

PRODUCTS = (KETTLE, MUG)


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory) -> Iterator[ThrowawayCluster]:
    cluster = ThrowawayCluster(tmp_path_factory.mktemp("own-cluster"), node_timeout=1000)
    try:
        cluster.start()
    except (RedisServerMissing, RedisServerError) as exc:
        missing("a Redis Cluster (redis-server and redis-cli)", exc)
    yield cluster
    for node in cluster.nodes:  # a test may leave one frozen
        if node.pid is not None:
            os.kill(node.pid, signal.SIGCONT)
    cluster.stop()


def cluster_app(
    pg_url: str, url: str, mailbox: Mailbox, *, cluster: bool, prefix: str | None = None
) -> AppFactory:
    # A prefix of its own, and no per-address rate rules: a shopper loop makes far more cart
    # writes from one address than a person would, and a 429 is not what these tests look for.
    prefix = prefix or f"cl{secrets.token_hex(4)}:"
    return AppFactory(
        {
            "database_url": pg_url,
            "redis_url": url,
            "redis_cluster": cluster,
            "redis_prefix": prefix,
            "smtp_url": mailbox.url,
            **{f"limit_{rule}": "" for rule in RULES},
        },
        lambda: connect(url, socket_timeout=0.3, cluster=cluster),
    )


class ShopperLoop:
    """A shopper browsing and adding to the cart in a thread; every status it saw, in order,
    with when it saw it."""

    def __init__(self, app: Flask) -> None:
        self.shopper = Shopper(app.test_client(), app)
        self.seen: list[tuple[float, str, int]] = []
        self.added = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            product = PRODUCTS[i % len(PRODUCTS)]
            page = self.shopper.client.get(f"/products/{product}")
            self.seen.append((time.monotonic(), "page", page.status_code))
            if i % 10 == 0:  # keep within the stock: quantities, not a sale
                added = self.shopper.add(product)
                self.seen.append((time.monotonic(), "add", added.status_code))
                self.added += added.status_code == 303
            i += 1
            time.sleep(0.02)

    def __enter__(self) -> ShopperLoop:
        first = self.shopper.add(KETTLE)  # the session and its cart exist before anything moves
        assert first.status_code == 303
        self.added += 1
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def statuses(self) -> Counter:
        return Counter(status for _, _, status in self.seen)

    def first_success_after(self, moment: float) -> float | None:
        """When an add to the cart was first answered after ``moment`` (added, or refused as
        past the stock, 409: either needs the session and the cart from Redis; a 503 does
        not count)."""
        for when, kind, status in self.seen:
            if when > moment and kind == "add" and status in (303, 409):
                return when
        return None


def node_of(cluster: ThrowawayCluster, key: str) -> ThrowawayRedis:
    """The primary that serves ``key``'s slot now, as the first node that answers sees it (a
    frozen one does not)."""
    for node in cluster.nodes:
        try:
            with node.client() as client:
                slot = client.cluster("keyslot", key)
                layout = client.cluster("slots")
        except redis.RedisError:
            continue
        for start, end, primary, *_ in layout:
            if start <= slot <= end:
                return next(
                    n for n in cluster.nodes if (n.host, n.port) == (primary[0], int(primary[1]))
                )
    raise AssertionError("no node answered")


def test_a_plain_client_sent_to_one_cluster_node_answers_503_and_is_not_ready(
    pg_url, redis_cluster, mailbox
):
    factory = cluster_app(pg_url, redis_cluster.url, mailbox, cluster=False)
    try:
        app = factory()
        statuses = Counter()
        for i in range(12):  # twelve visitors: their keys fall on every node's slots
            shopper = Shopper(app.test_client(), app)
            statuses[shopper.add(PRODUCTS[i % 2]).status_code] += 1
            statuses[shopper.client.get(f"/products/{PRODUCTS[i % 2]}").status_code] += 1
            statuses[shopper.client.get("/cart").status_code] += 1
        assert 500 not in statuses and statuses[503] > 0, statuses
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503
        assert "SHOP_REDIS_CLUSTER=1" in ready.get_json()["redis"]["reason"]
    finally:
        factory.dispose()


def test_the_catalogue_is_spread_over_every_primary_and_invalidated_there(
    pg_url, redis_cluster, mailbox
):
    prefix = f"spread{os.getpid()}:"
    factory = cluster_app(pg_url, redis_cluster.url, mailbox, cluster=True, prefix=prefix)
    try:
        app = factory(catalogue_local_ttl=0)
        browser = app.test_client()
        for path in (
            "/",
            "/?category=kitchen",
            "/?q=blue",
            *(f"/products/{p}" for p in range(1, 20)),
        ):
            assert browser.get(path).status_code == 200
        keys_per_node = {}
        for node in redis_cluster.primary_nodes():
            with node.client() as client:
                keys_per_node[node.port] = list(client.scan_iter(f"{prefix}cat:*"))
        assert len(keys_per_node) == 3 and all(keys_per_node.values()), keys_per_node
        # A change to the kettle drops every entry that shows it, whichever node holds it.
        shown = [
            k for keys in keys_per_node.values() for k in keys if k.endswith(f"{{p:{KETTLE}}}")
        ]
        assert shown
        app.extensions["shop"].catalogue.invalidate([KETTLE])
        cluster_client = connect(redis_cluster.url, cluster=True)
        assert cluster_client.exists(*shown) == 0
        tag = app.extensions["shop"].catalogue.cache.tag_key(KETTLE)
        assert cluster_client.exists(tag) == 0
        assert browser.get(f"/products/{KETTLE}").status_code == 200
    finally:
        factory.dispose()


def test_the_cluster_client_is_ready_on_a_cluster_and_not_on_a_standalone_server(
    pg_url, redis_cluster, redis_server, mailbox
):
    on_cluster = cluster_app(pg_url, redis_cluster.url, mailbox, cluster=True)
    on_standalone = cluster_app(pg_url, redis_server, mailbox, cluster=True)
    try:
        assert on_cluster().test_client().get("/readyz").status_code == 200
        ready = on_standalone().test_client().get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["redis"]["ok"] is False
    finally:
        on_cluster.dispose()
        on_standalone.dispose()


def test_a_frozen_primary_gives_503s_then_recovers_after_its_replica_takes_over(
    pg_url, own_cluster, mailbox
):
    factory = cluster_app(pg_url, own_cluster.url, mailbox, cluster=True)
    try:
        app = factory()
        with ShopperLoop(app) as loop:
            time.sleep(0.5)
            ref = session_ref(loop.shopper.session_id)
            frozen = node_of(own_cluster, f"cl:{{s:{ref}}}")
            assert frozen.pid is not None
            os.kill(frozen.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            promoted_at = None
            try:
                deadline = time.monotonic() + 30
                while promoted_at is None and time.monotonic() < deadline:
                    if node_of(own_cluster, f"cl:{{s:{ref}}}") is not frozen:
                        promoted_at = time.monotonic()
                    time.sleep(0.1)
                assert promoted_at is not None, "no replica took over"
                recovered = None
                while recovered is None and time.monotonic() < promoted_at + 10:
                    recovered = loop.first_success_after(promoted_at)
                    time.sleep(0.1)
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
        statuses = loop.statuses()
        assert 500 not in statuses, statuses
        during = {s for when, _, s in loop.seen if frozen_at < when < promoted_at}
        # 409: the loop's cart asked for more kettles than are in stock (a shopper's answer)
        assert during <= {200, 303, 409, 503}, during
        assert recovered is not None and recovered - promoted_at < 10, loop.seen[-20:]
        assert loop.shopper.cart()["count"] >= 1  # the cart survived on the promoted replica
    finally:
        factory.dispose()


def move_slot(cluster: ThrowawayCluster, slot: int, source: ThrowawayRedis, target: ThrowawayRedis):
    """Move one slot as ``redis-cli --cluster reshard`` does (IMPORTING / MIGRATING, MIGRATE
    key by key, then SETSLOT NODE everywhere), slowly, so shoppers meet ASK and TRYAGAIN."""
    with source.client() as src, target.client() as dst:
        source_id, target_id = src.cluster("myid"), dst.cluster("myid")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 1):
            time.sleep(0.3)
            src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        for node in cluster.primary_nodes():
            with node.client() as client:
                client.execute_command("CLUSTER SETSLOT", slot, "NODE", target_id)


def test_moving_slots_under_shoppers_gives_no_500_and_keeps_carts(pg_url, own_cluster, mailbox):
    own_cluster.wait_healthy()
    factory = cluster_app(pg_url, own_cluster.url, mailbox, cluster=True)
    try:
        app = factory()
        with ShopperLoop(app) as loop:
            time.sleep(0.5)
            ref = session_ref(loop.shopper.session_id)
            key = f"cl:{{s:{ref}}}"
            source = node_of(own_cluster, key)
            target = next(n for n in own_cluster.primary_nodes() if n is not source)
            with source.client() as client:
                slot = client.cluster("keyslot", key)
            move_slot(own_cluster, slot, source, target)
            assert node_of(own_cluster, key) is target
            time.sleep(1)
        statuses = loop.statuses()
        assert 500 not in statuses, statuses
        assert statuses[200] > 0
        assert loop.shopper.cart()["count"] == loop.added  # every add that succeeded is there
    finally:
        factory.dispose()


def test_a_cluster_down_at_start_makes_503s_then_works_once_it_is_up(pg_url, mailbox, tmp_path):
    cluster = ThrowawayCluster(tmp_path / "late", ports=tuple(free_port() for _ in range(6)))
    url = f"redis://127.0.0.1:{cluster.ports[0]}/0"  # nothing listens there yet
    factory = cluster_app(pg_url, url, mailbox, cluster=True)
    try:
        app = factory()  # the process starts all the same
        shopper = Shopper(app.test_client(), app)
        assert shopper.client.get(f"/products/{KETTLE}").status_code == 200  # from the database
        assert shopper.add(KETTLE).status_code == 503
        assert app.test_client().get("/readyz").status_code == 503
        try:
            cluster.start()
        except (RedisServerMissing, RedisServerError) as exc:
            missing("a Redis Cluster (redis-server and redis-cli)", exc)
        time.sleep(1.1)  # the breaker's window
        assert shopper.add(KETTLE).status_code == 303  # no restart
        assert shopper.cart()["count"] == 1
        assert app.test_client().get("/readyz").status_code == 200
        wait_for_local_tier(app)  # the invalidation listener found the cluster too
    finally:
        factory.dispose()
        cluster.stop()
