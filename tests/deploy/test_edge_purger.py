"""The edge purger (deploy/stack/edge_purger.py): which tags each of the shop's invalidation
messages purges, how bursts become one purge, the second purge that closes the race with the
instances' in-process tiers, and what happens while Varnish or Redis is away. No servers: the
messages are the ones the shop's own code writes, the channel is fakeredis'."""

from __future__ import annotations

import threading

import fakeredis
import pytest

from deploy.stack.edge_purger import (
    SHOP_TAG,
    EdgePurger,
    PurgeFailed,
    header_values,
    tags_for,
)
from deploy.stack.topology import _DEFAULT_REDIS_PREFIX, INVALIDATIONS_CHANNEL
from shop.catalogue_cache import CacheAside
from shop.local_tier import LocalTier


@pytest.mark.parametrize(
    ("ids", "keys", "structural", "tags"),
    [
        ([12], ["shop:cat:{p:12}"], False, {"p12"}),  # a price change (Catalogue.invalidate)
        ([3, 4], [], False, {"p3", "p4"}),  # an order's lines (stock)
        ([12], ["shop:cat:{p:12}"], True, {SHOP_TAG}),  # added, archived, moved
        ([], ["shop:cat:{categories}"], True, {SHOP_TAG}),  # categories renamed
        ([], ["shop:cat:{categories}"], False, {SHOP_TAG}),  # a key that is not a product's
        ([], [], False, set()),  # nothing to purge
    ],
)
def test_each_message_names_the_tags_to_purge(ids, keys, structural, tags):
    assert tags_for(LocalTier.message(ids, keys, structural)) == tags


@pytest.mark.parametrize(
    "message", [b"not json", b"{}", b'{"ids": ["12"], "keys": [], "structural": false}', b"[1, 2]"]
)
def test_a_message_it_cannot_read_purges_everything(message):
    assert tags_for(message) == {SHOP_TAG}


def test_the_channel_is_the_one_the_shop_publishes_on():
    """The stack's instances leave SHOP_REDIS_PREFIX alone; the shop's catalogue cache publishes
    on its prefix ``<SHOP_REDIS_PREFIX>cat:`` plus ``invalidations``."""
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    cache = CacheAside(client, f"{_DEFAULT_REDIS_PREFIX}cat:", ttl=60, local_ttl=30)
    assert cache.local is not None
    channel = INVALIDATIONS_CHANNEL.format(prefix=_DEFAULT_REDIS_PREFIX)
    assert cache.local.channel == channel
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=1)  # the confirmation
    cache.invalidate([7], keys=[cache.key("p", 7)])
    message = pubsub.get_message(timeout=1)
    assert message is not None and tags_for(message["data"]) == {"p7"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Varnish:
    """Records each purge; ``down`` makes it fail like a refused connection."""

    def __init__(self) -> None:
        self.purges: list[set[str]] = []
        self.down = False

    def __call__(self, tags) -> int:
        if self.down:
            raise PurgeFailed("connection refused")
        self.purges.append(set(tags))
        return len(tags)


class Channel:
    """A subscription's messages, as redis-py's ``get_message`` hands them out."""

    def __init__(self, *payloads: str) -> None:
        self.messages = [{"type": "message", "channel": b"c", "data": p} for p in payloads]

    def get_message(self, timeout: float = 0.0):
        return self.messages.pop(0) if self.messages else None


def change(*ids: int, structural: bool = False) -> str:
    return LocalTier.message(ids, [f"shop:cat:{{p:{i}}}" for i in ids], structural)


def test_a_burst_of_messages_is_one_purge_then_one_repeat():
    clock, varnish = Clock(), Varnish()
    purger = EdgePurger(varnish, repeat_after=1.0, clock=clock)
    purger.step(Channel(change(1), change(2), change(2, 3)))
    assert varnish.purges == [{"p1", "p2", "p3"}]
    purger.step(Channel())
    assert len(varnish.purges) == 1, "nothing again before repeat_after"
    assert purger.wait(5.0) == pytest.approx(1.0)
    clock.now += 1.0
    purger.step(Channel())
    assert varnish.purges[-1] == {"p1", "p2", "p3"}
    clock.now += 5
    purger.step(Channel())
    assert len(varnish.purges) == 2, "repeated once, not forever"


def test_a_structural_change_purges_everything_in_one_tag():
    varnish = Varnish()
    purger = EdgePurger(varnish, clock=Clock())
    purger.step(Channel(change(1), change(9, structural=True)))
    assert varnish.purges == [{SHOP_TAG}]


def test_every_subscription_purges_everything():
    """Changes made while the purger was not listening were never heard."""
    varnish = Varnish()
    purger = EdgePurger(varnish, clock=Clock())
    purger.take({"type": "subscribe", "channel": b"shop:cat:invalidations", "data": 1})
    purger.flush()
    assert varnish.purges == [{SHOP_TAG}]


def test_tags_wait_while_varnish_is_away_and_go_when_it_answers():
    clock, varnish = Clock(), Varnish()
    purger = EdgePurger(varnish, repeat_after=0, clock=clock)
    varnish.down = True
    purger.step(Channel(change(1)))
    purger.step(Channel(change(2)))
    assert varnish.purges == [] and purger.pending == {"p1", "p2"}
    varnish.down = False
    clock.now += 0.5
    purger.step(Channel())
    assert varnish.purges == [{"p1", "p2"}] and not purger.pending


def test_long_tag_lists_are_split_into_headers_varnish_takes():
    tags = {f"p{n}" for n in range(2000)}
    values = header_values(tags, budget=4000)
    assert all(len(v) <= 4000 for v in values) and len(values) > 1
    assert set(" ".join(values).split()) == tags


def test_it_follows_the_channel_until_stopped():
    """The real loop on a fakeredis channel: the subscription purges everything, a published
    change purges its product."""
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    varnish = Varnish()
    purger = EdgePurger(varnish, repeat_after=0)
    stop = threading.Event()
    thread = threading.Thread(target=purger.run, args=(client, "shop:cat:invalidations", stop))
    thread.start()
    try:
        for _ in range(100):
            if varnish.purges:
                break
            threading.Event().wait(0.02)
        client.publish("shop:cat:invalidations", change(42))
        for _ in range(100):
            if {"p42"} in varnish.purges:
                break
            threading.Event().wait(0.02)
    finally:
        stop.set()
        thread.join(5)
    assert varnish.purges[0] == {SHOP_TAG}
    assert {"p42"} in varnish.purges
    assert not thread.is_alive()
