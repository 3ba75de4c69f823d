"""Sessions an attacker cannot take over: only ids the server issued, ended ids stay ended, Redis
holds no usable id, and an account can see and end its sessions."""

from __future__ import annotations

from shop.session_ids import new_session_id, session_ref
from shop.sessions import SessionStore
from tests.support import KETTLE, SECRET, Shopper, fake_client, shopper_on


def _user(shopper: Shopper) -> dict | None:
    return shopper.client.get("/api/v1/session").get_json()["user"]


def test_a_made_up_id_is_never_adopted(app, shopper):
    made_up = "A" * 43
    shopper.client.set_cookie("shop_sid", made_up)
    assert shopper.client.get("/login").status_code == 200  # a form: an id is issued
    assert shopper.session_id != made_up
    # Even one that looks like ours: a real id signed with another key.
    from shop.session_ids import SessionIds

    forged = SessionIds("another-secret-key-0123", max_age=3600).issue(new_session_id())
    shopper.client.set_cookie("shop_sid", forged)
    shopper.client.get("/login")
    assert shopper.cookie != forged


def test_a_planted_cookie_cannot_fill_a_victims_cart(app):
    """An attacker who plants a made-up id in a victim's browser cannot act as that id."""
    planted = new_session_id()
    attacker = Shopper(app.test_client(), app)
    attacker.client.set_cookie("shop_sid", planted)
    from shop.session_ids import csrf_token_for

    refused = attacker.client.post(
        "/cart/add",
        data={"product_id": KETTLE, "quantity": 1, "csrf_token": csrf_token_for(SECRET, planted)},
    )
    assert refused.status_code == 403
    assert not app.extensions["shop"].redis.keys("*cart*")


def test_an_id_ended_by_logout_never_works_again(app, shopper):
    shopper.register()
    signed_in = shopper.cookie
    shopper.logout()
    thief = Shopper(app.test_client(), app)
    thief.client.set_cookie("shop_sid", signed_in)
    assert _user(thief) is None
    assert thief.cookie != signed_in  # a fresh id, not the ended one
    # The ended id cannot be used to store anything either.
    thief.client.set_cookie("shop_sid", signed_in)
    assert thief.add(KETTLE).status_code == 403


def test_the_anonymous_id_is_ended_at_login(app, shopper):
    shopper.add(KETTLE)
    anonymous = shopper.cookie
    shopper.register()
    again = Shopper(app.test_client(), app)
    again.client.set_cookie("shop_sid", anonymous)
    assert again.cart()["count"] == 0
    again.client.get("/login")  # a form's token: it issues an id, and not the ended one
    assert again.cookie != anonymous


def test_redis_holds_no_session_id(app, shopper):
    shopper.add(KETTLE)
    shopper.register()
    shopper.add(KETTLE)
    client = app.extensions["shop"].redis
    dump = " ".join(f"{key} {client.dump(key)!r}" for key in client.scan_iter("*"))
    assert shopper.session_id not in dump
    assert session_ref(shopper.session_id) in dump  # keyed by the hash instead


def test_a_save_in_flight_cannot_bring_back_a_logged_out_session(app, shopper):
    """The request that loaded the session before logout ran saves after it: nothing returns."""
    shopper.register()
    cookie = shopper.cookie
    interface = app.session_interface
    with app.test_request_context("/cart", headers={"Cookie": f"shop_sid={cookie}"}) as ctx:
        in_flight = interface.open_session(app, ctx.request)
        assert in_flight.user_id is not None
        shopper.logout()  # meanwhile, the owner logs out
        in_flight.ensure_stored()  # the in-flight request changed something
        interface.save_session(app, in_flight, app.response_class())
    store = app.extensions["shop"].sessions
    assert not store.client.exists(store.key(in_flight.sid))
    replay = Shopper(app.test_client(), app)
    replay.client.set_cookie("shop_sid", cookie)
    assert _user(replay) is None


def test_ended_records_and_tombstones_expire(fake_redis_server):
    now = [1_000_000.0]
    store = SessionStore(
        fake_client(fake_redis_server),
        "t:",
        idle_timeout=60,
        absolute_lifetime=100,
        clock=lambda: now[0],
    )
    sid = new_session_id()
    store.save(sid, {}, user_id=3, created=now[0])
    store.delete(sid, user_id=3)
    assert store.load(sid) == "ended"
    assert 0 < store.client.ttl(store.tombstone_key(session_ref(sid))) <= 100
    assert store.save(sid, {}, user_id=3, created=now[0]) is False


# -- an account's sessions ---------------------------------------------------------------


def test_an_account_lists_its_sessions_and_ends_one(app, shopper):
    shopper.register()
    phone = Shopper(app.test_client(), app)
    phone.client.environ_base["HTTP_USER_AGENT"] = "Mozilla/5.0 (iPhone) Mobile Safari"
    phone.login()
    store = app.extensions["shop"].sessions
    user_id = _user(shopper)["id"]
    sessions = store.user_sessions(user_id)
    assert {s.ref for s in sessions} == {
        session_ref(shopper.session_id),
        session_ref(phone.session_id),
    }
    assert any("iPhone" in s.user_agent for s in sessions)
    assert store.end_user_session(user_id, session_ref(phone.session_id))
    assert _user(phone) is None
    assert _user(shopper) is not None
    assert not store.end_user_session(user_id + 1, session_ref(shopper.session_id))


def test_end_user_sessions_keeps_only_the_current_one(make_app):
    first, second = make_app(), make_app()
    here = Shopper(first.test_client(), first)
    here.register()
    elsewhere = [Shopper(second.test_client(), second) for _ in range(3)]
    for browser in elsewhere:
        browser.login()
    store = first.extensions["shop"].sessions
    user_id = _user(here)["id"]
    assert store.end_user_sessions(user_id, keep=here.session_id) == 3
    assert all(_user(browser) is None for browser in elsewhere)
    assert _user(here)["id"] == user_id
    assert [s.ref for s in store.user_sessions(user_id)] == [session_ref(here.session_id)]


def test_the_session_cookie_carries_the_host_prefix_outside_development(make_app):
    app = make_app(env="production")
    browser = Shopper(app.test_client(), app)
    response = browser.client.get("/login")
    assert any(h.startswith("__Host-shop_sid=") for h in response.headers.getlist("Set-Cookie"))
    # A cookie without the prefix (which a sibling subdomain could plant) is not read.
    browser.register()
    stolen = browser.client.get_cookie("__Host-shop_sid").value
    plain = app.test_client()
    plain.set_cookie("shop_sid", stolen)
    assert plain.get("/api/v1/session").get_json()["user"] is None


def test_moved_browser_keeps_its_session(make_app):
    first, second = make_app(), make_app()
    browser = Shopper(first.test_client(), first)
    browser.register()
    assert _user(shopper_on(second, cookie_from=browser))["email"] == "ada@example.com"
