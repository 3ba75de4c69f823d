"""Sessions and carts written under the key layout before Redis Cluster support are carried to
today's by ``flask --app shop redis upgrade-keys``: nobody is signed out, no cart is lost."""

from __future__ import annotations

import time

from shop.session_ids import new_session_id, session_ref
from tests.support import KETTLE, MUG, fake_client


def test_old_sessions_and_carts_are_found_after_upgrade_keys(make_app, fake_redis_server):
    app = make_app()
    redis = fake_client(fake_redis_server)
    store = app.extensions["shop"].sessions
    prefix = app.extensions["shop"].settings.redis_prefix
    now = int(time.time())
    visitor, member, ended = new_session_id(), new_session_id(), new_session_id()
    v, m, e = (session_ref(sid) for sid in (visitor, member, ended))
    # What the previous release wrote (shop/sessions.py and shop/cart.py before the hash tags).
    redis.hset(f"{prefix}s:{v}", mapping={"d": "{}", "c": now, "seen": now, "ua": "old"})
    redis.hset(f"{prefix}cart:s:{v}", mapping={KETTLE: "2:1999"})
    redis.hset(f"{prefix}s:{m}", mapping={"d": '{"email":"ada@example.com"}', "c": now, "uid": 7})
    redis.hset(f"{prefix}cart:u:7", mapping={MUG: "1:599"})
    redis.zadd(f"{prefix}us:7", {m: now + 3600})
    redis.set(f"{prefix}s:{e}:ended", "1", ex=3600)
    for key in redis.scan_iter(f"{prefix}*"):
        redis.expire(key, 3600)
    assert store.load(visitor) is None  # today's instances do not read the old layout

    result = app.test_cli_runner().invoke(args=["redis", "upgrade-keys"])

    assert result.exit_code == 0 and "moved 6 keys" in result.output, result.output
    loaded = store.load(visitor)
    assert loaded is not None and loaded != "ended" and loaded.cart == {KETTLE: 2}
    signed_in = store.load(member)
    assert signed_in is not None and signed_in != "ended"
    assert signed_in.user_id == 7 and signed_in.cart == {MUG: 1}
    assert [s.ref for s in store.user_sessions(7)] == [m]  # "log out everywhere" finds it
    assert store.load(ended) == "ended"  # an ended id still never works again
    assert 3500 < redis.ttl(store.account_cart_key(7)) <= 3600  # TTLs kept
    again = app.test_cli_runner().invoke(args=["redis", "upgrade-keys"])
    assert "moved 0 keys" in again.output
