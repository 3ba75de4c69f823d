"""Accounts on the real PostgreSQL and Redis: a password change signs the account's other
browsers out through Redis's session index, and a reset link is single-use even when two
requests race with it."""

from __future__ import annotations

import threading

from tests.support import KETTLE, Mailbox, Shopper, path_of, session_user

PASSWORD = "correct horse 42"


def test_a_password_change_signs_out_the_other_browsers(make_real_app, mailbox: Mailbox):
    first, second = make_real_app(), make_real_app()  # two instances
    here = Shopper(first.test_client(), first)
    assert here.register().status_code == 303
    there = Shopper(second.test_client(), second)
    assert there.login().status_code == 303
    assert there.add(KETTLE).status_code == 303
    changed = here.api(
        "PUT",
        "/account/password",
        json={"current_password": PASSWORD, "new_password": "a brand new horse 7"},
    )
    assert changed.status_code == 200 and changed.get_json()["sessions_ended"] == 1
    assert session_user(there) is None
    assert session_user(here)["email"] == "ada@example.com"


def test_a_reset_link_used_twice_at_once_works_once(make_real_app, mailbox: Mailbox):
    app = make_real_app(password_hash_slots=4)  # all four hash at once, none told "busy"
    Shopper(app.test_client(), app).sign_up()
    Shopper(app.test_client(), app).post_form("/password/reset", {"email": "ada@example.com"})
    link = path_of(mailbox.last("ada@example.com").link("/password/reset/"))
    token = link.rsplit("/", 1)[1]
    browsers = [Shopper(app.test_client(), app) for _ in range(4)]
    for browser in browsers:
        browser.csrf()
    start = threading.Barrier(len(browsers))
    statuses: list[int] = []

    def use(browser: Shopper, n: int) -> None:
        start.wait()
        response = browser.api(
            "POST",
            "/password/reset/confirm",
            json={"token": token, "new_password": f"racing horse number {n}"},
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=use, args=(b, n)) for n, b in enumerate(browsers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 400, 400, 400]


def test_migration_0003_down_and_up_on_postgresql(pg_url):
    from sqlalchemy import create_engine, inspect, select, text

    from shop.migrate import downgrade, upgrade
    from shop.models import users

    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'h')")
        )
    downgrade(engine, "0002")
    assert "email_verified_at" not in {c["name"] for c in inspect(engine).get_columns("users")}
    upgrade(engine)
    with engine.connect() as conn:
        row = conn.execute(select(users)).one()
    assert (row.email, row.email_verified_at, row.password_changed_at) == (
        "old@example.com",
        None,
        None,
    )
    engine.dispose()
