"""The in-process tier's index by product: a drop visits only the entries that show the
product, and the index never holds a key the tier has let go of (evicted, expired, replaced,
dropped), whatever the order of operations and however many threads make them."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time

import pytest

from shop.local_tier import MISSING, LocalTier


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def tier(max_entries: int = 10_000, max_age: float = 30.0, clock=None) -> LocalTier:
    """A live tier with no listener thread: the tests play the messages themselves."""
    made = LocalTier(None, "t:invalidations", max_age=max_age, max_entries=max_entries)  # type: ignore[arg-type]
    if clock is not None:
        made.clock = clock
    made.live = True
    made._pid = -1
    return made


def put(t: LocalTier, key: str, tags=(), *, is_list: bool = True, value=None) -> None:
    t.put(key, value or {"key": key}, generation=t.generation, tags=tags, is_list=is_list)


def assert_index_exact(t: LocalTier) -> None:
    """The index is exactly the held entries' tags: nothing missing, nothing left over."""
    expected: dict[int, set[str]] = {}
    for key, entry in t._entries.items():
        for tag in entry.tags:
            expected.setdefault(tag, set()).add(key)
    assert t._by_tag == expected
    assert len(t._entries) <= t.max_entries


def test_dropping_a_product_drops_exactly_what_shows_it():
    t = tier()
    put(t, "p:1", [1], is_list=False)
    put(t, "grid:1", [1, 2, 3])
    put(t, "grid:2", [4, 5])
    put(t, "html:p:2", [2])
    t.drop([2], [], structural=False)
    assert t.get("grid:1") is MISSING and t.get("html:p:2") is MISSING
    assert t.get("p:1") == {"key": "p:1"} and t.get("grid:2") == {"key": "grid:2"}
    assert t.tagged(2) == frozenset() and t.tagged(1) == {"p:1"}
    assert t.tagged(3) == frozenset()  # grid:1 is gone from every product's entries
    assert_index_exact(t)
    t.drop([], ["p:1"], structural=False)  # by key
    assert t.get("p:1") is MISSING and t.tagged(1) == frozenset()
    assert_index_exact(t)


def test_eviction_takes_the_least_recently_used_and_its_index_entries():
    t = tier(max_entries=3)
    for n in range(3):
        put(t, f"k{n}", [n, 100])
    assert t.get("k0") is not MISSING  # k0 used: k1 is now the least recently used
    put(t, "k3", [3, 100])
    assert t.get("k1") is MISSING
    assert all(t.get(k) is not MISSING for k in ("k0", "k2", "k3"))
    assert t.tagged(1) == frozenset() and t.tagged(100) == {"k0", "k2", "k3"}
    assert_index_exact(t)


def test_an_expired_entry_leaves_the_index_when_met_or_evicted():
    clock = Clock()
    t = tier(max_entries=2, max_age=30, clock=clock)
    put(t, "a", [1])
    put(t, "b", [2])
    clock.now += 31
    assert t.get("a") is MISSING
    assert t.tagged(1) == frozenset() and len(t) == 1
    put(t, "c", [3])
    put(t, "d", [4])  # b, expired and never met, is evicted
    assert t.tagged(2) == frozenset() and len(t) == 2
    assert_index_exact(t)


def test_replacing_an_entry_forgets_the_products_it_no_longer_shows():
    t = tier()
    put(t, "grid:1", [1, 2], value={"v": 1})
    put(t, "grid:1", [2, 3], value={"v": 2})
    assert t.tagged(1) == frozenset() and t.tagged(3) == {"grid:1"}
    t.drop([1], [], structural=False)
    assert t.get("grid:1") == {"v": 2}
    assert_index_exact(t)


def test_a_structural_change_drops_every_list_and_no_single_entry():
    t = tier(max_entries=4)
    put(t, "p:1", [1], is_list=False)
    put(t, "grid:1", [1])
    put(t, "grid:2", [2])
    t.drop([], [], structural=True)
    assert t.get("p:1") is not MISSING
    assert t.get("grid:1") is MISSING and t.get("grid:2") is MISSING
    assert t.tagged(1) == {"p:1"} and t.tagged(2) == frozenset()
    put(t, "grid:1", [1])  # a list of the new generation is kept
    assert t.get("grid:1") is not MISSING
    assert_index_exact(t)


def test_a_value_read_before_a_drop_is_refused_even_if_the_drop_ran_in_between():
    t = tier()
    generation = t.generation
    t.drop([9], [], structural=False)
    t.put("p:9", {"stale": True}, generation=generation, tags=[9], is_list=False)
    assert t.get("p:9") is MISSING and t.tagged(9) == frozenset()


def test_a_value_read_before_drops_of_other_products_is_kept():
    """A sale: one product invalidated again and again must not keep the rest out."""
    t = tier()
    generation = t.generation  # a request reads product 5's entries from Redis ...
    for _ in range(10):
        t.drop([9], ["p:9"], structural=False)  # ... while orders invalidate product 9
    t.put("p:5", {"id": 5}, generation=generation, tags=(), is_list=False)
    t.put("grid:5", {"items": [5]}, generation=generation, tags=[5], is_list=True)
    assert t.get("p:5") == {"id": 5} and t.get("grid:5") == {"items": [5]}


@pytest.mark.parametrize(
    ("drop", "key", "tags", "is_list", "kept"),
    [
        (([9], ["p:5"], False), "p:5", (), False, False),  # its key
        (([5], [], False), "grid:5", [4, 5], True, False),  # a product it shows
        (([], [], True), "grid:5", [5], True, False),  # structural: any list
        (([], [], True), "p:5", (), False, True),  # ... and no single entry
        (([6], ["p:6"], False), "grid:5", [4, 5], True, True),  # another product
    ],
)
def test_a_value_read_before_a_drop_is_kept_only_if_the_drop_does_not_concern_it(
    drop, key, tags, is_list, kept
):
    t = tier()
    generation = t.generation
    ids, keys, structural = drop
    t.drop(ids, keys, structural)
    t.put(key, {"v": 1}, generation=generation, tags=tags, is_list=is_list)
    assert (t.get(key) is not MISSING) is kept
    assert_index_exact(t)


def test_a_value_read_before_a_clear_or_too_many_drops_ago_is_not_kept():
    from shop.local_tier import RECENT_DROPS

    t = tier()
    generation = t.generation
    t.clear()
    t.put("p:5", {"v": 1}, generation=generation, tags=(), is_list=False)
    assert t.get("p:5") is MISSING
    generation = t.generation
    for n in range(RECENT_DROPS + 1):
        t.drop([1000 + n], [], structural=False)
    t.put("p:5", {"v": 1}, generation=generation, tags=(), is_list=False)
    assert t.get("p:5") is MISSING  # what happened since is no longer known


def test_random_operations_never_leave_the_index_out_of_step():
    rng = random.Random(13)
    clock = Clock()
    t = tier(max_entries=40, max_age=5, clock=clock)
    history: list[tuple[set[int], set[str], bool]] = []  # each generation's drop, in order
    for _ in range(4000):
        op = rng.random()
        key = f"k{rng.randrange(80)}"
        if op < 0.45:
            tags = rng.sample(range(30), rng.randrange(0, 4))
            put(t, key, tags, is_list=rng.random() < 0.7)
        elif op < 0.7:
            value = t.get(key)
            if value is not MISSING:
                assert value["key"] == key
        elif op < 0.8:
            dropped = rng.sample(range(30), rng.randrange(1, 3))
            t.drop(dropped, [], structural=False)
            history.append((set(dropped), set(), False))
            for pid in dropped:
                assert t.tagged(pid) == frozenset()
        elif op < 0.85:
            structural = rng.random() < 0.3
            t.drop([], [key], structural=structural)
            history.append((set(), {key}, structural))
            assert t.get(key) is MISSING
        elif op < 0.93:  # a value read some drops ago, kept only if none of them concerns it
            read_at = rng.randrange(max(0, len(history) - 8), len(history) + 1)
            tags, is_list = set(rng.sample(range(30), 2)), rng.random() < 0.5
            late = {"key": key, "read_at": read_at}
            t.put(key, late, generation=read_at, tags=tags, is_list=is_list)
            concerned = any(
                ids & tags or key in keys or (structural and is_list)
                for ids, keys, structural in history[read_at:]
            )
            assert (t.get(key) is late) is not concerned
        else:
            clock.now += rng.random() * 2
        assert_index_exact(t)
    assert len(t) > 0, "the run kept nothing"


def test_threads_putting_reading_and_dropping_leave_the_index_exact():
    t = tier(max_entries=200)
    stop = time.monotonic() + 0.4
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < stop:
                key = f"k{rng.randrange(400)}"
                op = rng.random()
                if op < 0.5:
                    put(t, key, rng.sample(range(50), 2))
                elif op < 0.9:
                    t.get(key)
                else:
                    t.drop([rng.randrange(50)], [key], structural=rng.random() < 0.05)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert_index_exact(t)


def _drop_one_product_seconds(entries: int, repetitions: int = 200) -> float:
    """The median time to drop one product's two entries from a tier of ``entries``."""
    t = tier(max_entries=entries + 10)
    for n in range(entries):
        put(t, f"k{n}", [n % 5000 + 10])
    timings = []
    for n in range(repetitions):
        put(t, f"grid:{n}", [1])
        put(t, f"page:{n}", [1])
        started = time.perf_counter()
        t.drop([1], [], structural=False)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def test_dropping_one_product_costs_the_same_in_a_small_and_a_large_tier():
    small, large = _drop_one_product_seconds(100), _drop_one_product_seconds(20_000)
    # A scan of the whole tier makes the large tier ~200 x slower; the index, about the same.
    assert large < 10 * small + 20e-6, (small, large)


def _message(ids, keys=(), structural=False) -> dict:
    return {"type": "message", "data": LocalTier.message(ids, keys, structural)}


def test_a_burst_of_messages_is_one_pass():
    t = tier()
    for n in range(100):
        put(t, f"p:{n}", [n], is_list=False)
    put(t, "grid:1", [500])
    t.apply([_message([n], [f"p:{n}"]) for n in range(100)])
    assert (t.messages, t.passes) == (100, 1)
    assert len(t) == 1 and t.tagged(7) == frozenset()
    t.apply([_message([], [], True)])
    assert t.get("grid:1") is MISSING and t.passes == 2


def test_a_subscription_in_a_batch_empties_the_tier_and_makes_it_live():
    t = tier()
    put(t, "p:1", [1], is_list=False)
    t.live = False
    t.apply([{"type": "subscribe", "data": 1}, _message([2])])
    assert t.live and len(t) == 0


@pytest.mark.parametrize("data", ["{}", "not json", json.dumps({"ids": [1]})])
def test_an_unreadable_message_fails_the_pass(data):
    """The listener then drops everything and resubscribes (shop.local_tier._listen)."""
    t = tier()
    with pytest.raises((KeyError, ValueError)):
        t.apply([{"type": "message", "data": data}])
