"""Accounts as a shopper meets them: registration that reveals no account, e-mail
verification, the account page, and what an SMTP failure does. Mail is read from a real SMTP
server in this process (aiosmtpd)."""

from __future__ import annotations

import logging

from sqlalchemy import select

from shop.models import users
from tests.support import Mailbox, Shopper, page_text, path_of, session_user

PASSWORD = "correct horse 42"


def user_row(app, email: str):
    with app.extensions["shop"].engines.primary.connect() as conn:
        return conn.execute(select(users).where(users.c.email == email)).first()


# -- registration ----------------------------------------------------------------------------


def test_registration_mails_a_link_and_signs_nobody_in(app, shopper, mailbox: Mailbox):
    response = shopper.sign_up()
    assert response.status_code == 200
    assert (
        "We sent a message to ada@example.com: follow the link in it to confirm your address"
        in page_text(response)
    )
    assert session_user(shopper) is None
    mail = mailbox.last("ada@example.com")
    assert mail.subject == "Confirm your email address"
    assert mail.link("/verify/").startswith("http://localhost/verify/")
    assert user_row(app, "ada@example.com").email_verified_at is None
    assert shopper.login().status_code == 303  # before verifying too
    assert session_user(shopper)["email_verified"] is False


def test_registering_a_taken_address_answers_the_same_and_mails_the_owner(app, mailbox: Mailbox):
    first = Shopper(app.test_client(), app).sign_up()
    again = Shopper(app.test_client(), app).sign_up(" ADA@Example.com ", "another horse 77")
    assert again.status_code == first.status_code == 200
    assert page_text(again) == page_text(first)
    verify, notice = mailbox.to("ada@example.com")
    assert "/verify/" in verify.body
    assert notice.subject == "Someone tried to register with your address"
    assert "/login" in notice.body
    reset_link = notice.link("/password/reset/")
    # The owner's password is untouched; the reset link in the notice works.
    owner = Shopper(app.test_client(), app)
    assert owner.login(password="another horse 77").status_code == 401
    assert owner.login().status_code == 303
    assert owner.client.get(path_of(reset_link)).status_code == 200


def test_api_registration_answers_202_the_same_either_way(shopper, mailbox: Mailbox):
    body = {"email": "bo@example.com", "password": PASSWORD}
    cookie = shopper.cookie if shopper.csrf() else None
    first = shopper.api("POST", "/users", json=body)
    second = shopper.api("POST", "/users", json={**body, "password": "other horse 777"})
    assert first.status_code == second.status_code == 202
    assert first.get_json() == second.get_json()
    assert first.get_json() == {
        "email": "bo@example.com",
        "message": "We sent a message to bo@example.com: follow the link in it to confirm "
        "your address.",
    }
    assert shopper.cookie == cookie  # no sign-in, no rotation
    assert session_user(shopper) is None
    assert [m.subject for m in mailbox.to("bo@example.com")] == [
        "Confirm your email address",
        "Someone tried to register with your address",
    ]


def test_registration_costs_one_hash_whether_or_not_the_address_is_taken(app, monkeypatch):
    import shop.accounts

    calls = []
    real = shop.accounts.hash_password
    monkeypatch.setattr(shop.accounts, "hash_password", lambda s: calls.append(s) or real(s))
    Shopper(app.test_client(), app).sign_up()
    assert len(calls) == 1
    Shopper(app.test_client(), app).sign_up(password="other horse 777")
    assert len(calls) == 2


def test_links_use_the_public_url_when_set(make_app, mailbox: Mailbox):
    app = make_app(public_url="https://shop.example.com/")
    Shopper(app.test_client(), app).sign_up()
    assert (
        mailbox.last("ada@example.com")
        .link("/verify/")
        .startswith("https://shop.example.com/verify/")
    )


def test_without_smtp_the_mail_is_logged_with_its_link(make_app, mailbox, caplog):
    app = make_app(smtp_url=None)
    with caplog.at_level(logging.WARNING, logger="shop.mail"):
        assert Shopper(app.test_client(), app).sign_up().status_code == 200
    assert "To: ada@example.com" in caplog.text
    assert "http://localhost/verify/" in caplog.text
    assert mailbox.to("ada@example.com") == []


# -- verification ----------------------------------------------------------------------------


def test_following_the_link_verifies_the_address_once(app, shopper, mailbox: Mailbox):
    shopper.register()
    page = shopper.client.get("/")
    assert b'data-testid="unverified"' in page.data
    link = path_of(mailbox.last("ada@example.com").link("/verify/"))
    verified = shopper.client.get(link)
    assert verified.status_code == 200
    assert "ada@example.com is confirmed" in page_text(verified)
    assert user_row(app, "ada@example.com").email_verified_at is not None
    assert session_user(shopper)["email_verified"] is True
    assert b'data-testid="unverified"' not in shopper.client.get("/").data
    again = shopper.client.get(link)
    assert again.status_code == 400
    assert "expired or was already used" in page_text(again)


def test_a_verification_link_expires(app, shopper, mailbox: Mailbox):
    shopper.sign_up()
    link = path_of(mailbox.last("ada@example.com").link("/verify/"))
    services = app.extensions["shop"]
    later = services.clock() + services.settings.email_link_ttl + 1
    services.clock = lambda: later
    assert shopper.client.get(link).status_code == 400
    assert user_row(app, "ada@example.com").email_verified_at is None


def test_a_tampered_verification_link_does_nothing(app, shopper, mailbox: Mailbox):
    shopper.sign_up()
    shopper.sign_up("eve@example.com")
    link = path_of(mailbox.last("ada@example.com").link("/verify/"))
    eve_id = user_row(app, "eve@example.com").id
    assert eve_id < 36  # one base-36 digit
    _, rest = link.removeprefix("/verify/").split(".", 1)
    forged = f"/verify/{'0123456789abcdefghijklmnopqrstuvwxyz'[eve_id]}.{rest}"
    assert shopper.client.get(forged).status_code == 400
    assert user_row(app, "eve@example.com").email_verified_at is None


def test_resend_mails_a_new_link_and_then_says_already_confirmed(shopper, mailbox: Mailbox):
    shopper.register()
    resent = shopper.post_form("/account/verify/resend")
    assert resent.status_code == 200
    assert "We sent a message to ada@example.com" in page_text(resent)
    first, second = mailbox.to("ada@example.com")
    assert first.subject == second.subject == "Confirm your email address"
    assert shopper.client.get(path_of(second.link("/verify/"))).status_code == 200
    assert "already confirmed" in page_text(shopper.post_form("/account/verify/resend"))
    api = shopper.api("POST", "/account/verify/resend")
    assert (api.status_code, api.get_json()["error"]["code"]) == (409, "already_verified")


# -- the account page ------------------------------------------------------------------------


def test_the_account_page_shows_the_address_and_its_state(shopper, mailbox: Mailbox):
    assert shopper.client.get("/account").headers["Location"].startswith("/login?next=")
    shopper.register()
    page = page_text(shopper.client.get("/account"))
    assert 'data-testid="account-email">ada@example.com<' in page
    assert 'data-testid="email-status">not confirmed<' in page
    for path in ("/account/password", "/account/email", "/account/verify/resend"):
        assert f'"{path}"' in page
    shopper.client.get(path_of(mailbox.last("ada@example.com").link("/verify/")))
    page = page_text(shopper.client.get("/account"))
    assert 'data-testid="email-status">confirmed<' in page
    assert "/account/verify/resend" not in page
    body = shopper.client.get("/api/v1/account").get_json()
    assert body["email"] == "ada@example.com" and body["email_verified"] is True
    assert body["email_verified_at"] and body["password_changed_at"] is None


# -- mail failures -----------------------------------------------------------------------------


def test_an_smtp_failure_at_registration_keeps_the_account_and_says_try_again(
    app, shopper, mailbox: Mailbox
):
    mailbox.refuse = "451 4.3.0 try later"
    refused = shopper.sign_up()
    assert refused.status_code == 503
    assert "could not send the e-mail" in page_text(refused)
    assert refused.headers["Retry-After"]
    assert user_row(app, "ada@example.com") is not None  # the write stands
    assert shopper.login().status_code == 303
    api = shopper.api("POST", "/account/verify/resend")
    assert (api.status_code, api.get_json()["error"]["code"]) == (503, "mail_unavailable")
    mailbox.refuse = None
    assert shopper.api("POST", "/account/verify/resend").status_code == 202
    assert mailbox.last("ada@example.com").link("/verify/")


def test_an_unreachable_mail_server_is_a_503_not_a_500(make_app):
    from tests.support import free_port

    app = make_app(smtp_url=f"smtp://127.0.0.1:{free_port()}", smtp_timeout=1)
    shopper = Shopper(app.test_client(), app)
    response = shopper.api("POST", "/password/reset", json={"email": "ada@example.com"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "mail_unavailable"


# -- the migration ---------------------------------------------------------------------------


def test_migration_0003_keeps_accounts_and_leaves_them_unverified(tmp_path):
    from sqlalchemy import create_engine, inspect, text

    from shop.migrate import upgrade

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (email, password_hash) VALUES ('old@example.com', 'h')")
        )
    upgrade(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("users")}
    assert {"email_verified_at", "password_changed_at"} <= columns
    with engine.connect() as conn:
        row = conn.execute(select(users)).one()
    assert (row.email, row.email_verified_at, row.password_changed_at) == (
        "old@example.com",
        None,
        None,
    )
    from shop.migrate import downgrade

    downgrade(engine, "0002")
    assert "email_verified_at" not in {c["name"] for c in inspect(engine).get_columns("users")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT email FROM users")).scalar() == "old@example.com"
    engine.dispose()


def test_a_shop_without_public_url_or_smtp_warns_at_start(make_app, caplog):
    with caplog.at_level(logging.WARNING, logger="shop"):
        make_app(smtp_url=None)
    assert "SHOP_PUBLIC_URL is not set" in caplog.text
    assert "SHOP_SMTP_URL is not set" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shop"):
        make_app(public_url="https://shop.example.com")
    assert "SHOP_PUBLIC_URL" not in caplog.text and "SHOP_SMTP_URL" not in caplog.text


def test_a_slow_mail_server_does_not_hold_a_password_hash_slot(make_app):
    """The sign-up's mail is sent after its hash slot is freed: a login meanwhile is answered
    (here 401, wrong password), not "busy" (503), even with one slot and no queue."""
    import asyncio
    import threading

    from aiosmtpd.controller import Controller

    from tests.support import free_port

    class SlowMailbox(Mailbox):
        """Holds the message's DATA until the test lets it through."""

        def __init__(self) -> None:
            super().__init__()
            self.receiving, self.release = threading.Event(), threading.Event()

        async def handle_DATA(self, server, session, envelope) -> str:
            self.receiving.set()
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return await super().handle_DATA(server, session, envelope)

    slow = SlowMailbox()
    controller = Controller(slow, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        app = make_app(
            smtp_url=f"smtp://127.0.0.1:{controller.port}",
            password_hash_slots=1,
            password_hash_queue=0,
        )
        signing_up = Shopper(app.test_client(), app)
        signing_up.csrf()
        result = {}
        thread = threading.Thread(target=lambda: result.update(up=signing_up.sign_up()))
        thread.start()
        assert slow.receiving.wait(10)  # the hash is done; the mail is on its way, and stuck
        login = Shopper(app.test_client(), app).login("bo@example.com", "wrong horse 42")
        slow.release.set()
        thread.join()
    finally:
        slow.release.set()
        controller.stop()
    assert login.status_code == 401
    assert result["up"].status_code == 200
    assert slow.to("ada@example.com")
