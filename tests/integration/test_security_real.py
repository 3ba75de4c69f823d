"""Security that only a real Redis shows: a logout racing requests of the same session in
flight, and failed-login counts every instance shares."""

from __future__ import annotations

import threading

import pytest

from tests.support import KETTLE, Shopper, session_user


def failed_login(shopper: Shopper):
    return shopper.api(
        "POST", "/session/login", {"email": "ada@example.com", "password": "wrong password!"}
    )


@pytest.mark.both_redis
def test_logout_sticks_with_requests_in_flight_on_real_redis(make_real_app):
    """The audit's race: four requests of the session in flight while logout runs."""
    app = make_real_app()
    owner = Shopper(app.test_client(), app)
    owner.register()
    for _ in range(10):
        owner.login()
        cookie, token = owner.cookie, owner.csrf()
        start = threading.Barrier(5)

        def in_flight(cookie=cookie, token=token, start=start) -> None:
            browser = app.test_client()
            browser.set_cookie("shop_sid", cookie)
            start.wait()
            for _ in range(3):
                browser.post(
                    "/api/v1/cart/items",
                    json={"product_id": KETTLE, "quantity": 1},
                    headers={"X-CSRF-Token": token},
                )

        threads = [threading.Thread(target=in_flight) for _ in range(4)]
        for thread in threads:
            thread.start()
        start.wait()
        assert owner.logout().status_code == 303
        for thread in threads:
            thread.join()
        replay = Shopper(app.test_client(), app)
        replay.client.set_cookie("shop_sid", cookie)
        assert session_user(replay) is None


@pytest.mark.both_redis
def test_failures_are_shared_by_every_instance(make_real_app):
    first, second = make_real_app(login_free_failures=2), make_real_app(login_free_failures=2)
    shopper = Shopper(first.test_client(), first)
    shopper.register()
    assert failed_login(shopper).status_code == 401
    elsewhere = Shopper(second.test_client(), second)
    assert failed_login(elsewhere).status_code == 401
    assert failed_login(Shopper(first.test_client(), first)).status_code == 429
