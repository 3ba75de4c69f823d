"""Changing a password, resetting it by mail, changing the address: each needs proof (the
current password or a mailed single-use link), ends the sessions it must, sends the notices
the rule allows, and answers without revealing other accounts."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from shop.account_mail import MailKind, mail_allowed
from shop.accounts import User
from shop.models import users
from tests.support import KETTLE, Mailbox, Shopper, page_text, path_of, session_user

PASSWORD = "correct horse 42"
NEW_PASSWORD = "a brand new horse 7"


def verified_member(app, mailbox: Mailbox, email: str = "ada@example.com") -> Shopper:
    """A signed-in shopper whose address is confirmed."""
    shopper = Shopper(app.test_client(), app)
    assert shopper.register(email).status_code == 303
    assert shopper.client.get(path_of(mailbox.last(email).link("/verify/"))).status_code == 200
    return shopper


def second_browser(app, email: str = "ada@example.com", password: str = PASSWORD) -> Shopper:
    other = Shopper(app.test_client(), app)
    assert other.login(email, password).status_code == 303
    assert other.add(KETTLE).status_code == 303
    return other


# -- the rule ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MailKind))
def test_an_unverified_address_gets_only_links_that_prove_it_and_order_confirmations(kind):
    unverified, verified = User(1, "a@example.com", False), User(1, "a@example.com", True)
    assert mail_allowed(kind, verified)
    assert mail_allowed(kind, None)  # no account at the address: it asked for this mail
    expected = kind in {
        MailKind.VERIFY_ADDRESS,
        MailKind.ALREADY_REGISTERED,
        MailKind.PASSWORD_RESET,
        MailKind.ORDER_CONFIRMATION,
    }
    assert mail_allowed(kind, unverified) is expected


# -- password change ---------------------------------------------------------------------------


def test_a_password_change_ends_the_other_sessions_and_notifies(app, mailbox: Mailbox):
    shopper = verified_member(app, mailbox)
    other = second_browser(app)
    changed = shopper.post_form(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200
    assert "other sessions were signed out" in page_text(changed)
    assert session_user(shopper)["email"] == "ada@example.com"  # this one stays
    assert session_user(other) is None  # the other browser is signed out
    assert other.cart()["count"] == 0  # and no longer sees the account's cart
    notice = mailbox.last("ada@example.com")
    assert notice.subject == "Your password was changed"
    fresh = Shopper(app.test_client(), app)
    assert fresh.login(password=PASSWORD).status_code == 401
    assert fresh.login(password=NEW_PASSWORD).status_code == 303
    with app.extensions["shop"].engines.primary.connect() as conn:
        assert conn.execute(select(users.c.password_changed_at)).scalar() is not None


def test_an_unverified_address_gets_no_password_notice(app, shopper, mailbox: Mailbox):
    shopper.register()
    before = len(mailbox.to("ada@example.com"))
    response = shopper.api(
        "PUT",
        "/account/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert response.get_json()["sessions_ended"] == 0
    assert len(mailbox.to("ada@example.com")) == before


def test_the_api_password_change_reports_the_sessions_it_ended(app, mailbox: Mailbox):
    shopper = verified_member(app, mailbox)
    second_browser(app)
    second_browser(app)
    response = shopper.api(
        "PUT",
        "/account/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["sessions_ended"] == 2 and body["user"]["email"] == "ada@example.com"


def test_a_wrong_current_password_changes_nothing_and_costs_one_hash(app, monkeypatch):
    import shop.account_changes

    shopper = Shopper(app.test_client(), app)
    shopper.register()
    other = second_browser(app)
    calls = []
    real = shop.account_changes.password_matches
    monkeypatch.setattr(
        shop.account_changes, "password_matches", lambda h, s: calls.append(s) or real(h, s)
    )
    refused = shopper.post_form(
        "/account/password", {"current_password": "wrong horse 42", "new_password": NEW_PASSWORD}
    )
    assert refused.status_code == 400 and "not right" in page_text(refused)
    assert calls == ["wrong horse 42"]
    assert session_user(other) is not None
    assert Shopper(app.test_client(), app).login().status_code == 303


def test_a_mail_failure_does_not_undo_a_password_change(app, mailbox: Mailbox):
    shopper = verified_member(app, mailbox)
    mailbox.refuse = "451 try later"
    changed = shopper.post_form(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert changed.status_code == 200
    assert Shopper(app.test_client(), app).login(password=NEW_PASSWORD).status_code == 303


# -- password reset ----------------------------------------------------------------------------


def test_a_reset_request_answers_the_same_for_any_address(app, mailbox: Mailbox):
    Shopper(app.test_client(), app).sign_up()
    known = Shopper(app.test_client(), app).post_form(
        "/password/reset", {"email": "ada@example.com"}
    )
    unknown = Shopper(app.test_client(), app).post_form(
        "/password/reset", {"email": "nobody@example.com"}
    )
    assert known.status_code == unknown.status_code == 200
    assert page_text(known).replace("ada@", "X@") == page_text(unknown).replace("nobody@", "X@")
    assert mailbox.last("ada@example.com").subject == "Reset your password"
    assert "has no account here" in mailbox.last("nobody@example.com").body
    api = Shopper(app.test_client(), app)
    a = api.api("POST", "/password/reset", json={"email": "ada@example.com"})
    b = api.api("POST", "/password/reset", json={"email": "nobody@example.com"})
    assert a.status_code == b.status_code == 202
    assert a.get_json()["message"].replace("ada@", "X@") == b.get_json()["message"].replace(
        "nobody@", "X@"
    )


def test_a_reset_link_sets_a_new_password_once_and_ends_every_session(app, mailbox: Mailbox):
    shopper = Shopper(app.test_client(), app)
    shopper.register()  # unverified
    other = second_browser(app)
    shopper.post_form("/password/reset", {"email": "ada@example.com"})
    link = path_of(mailbox.last("ada@example.com").link("/password/reset/"))
    form = shopper.client.get(link)
    assert form.status_code == 200 and f'action="{link}"' in page_text(form)
    done = shopper.post_form(link, {"new_password": NEW_PASSWORD})
    assert done.status_code == 200
    assert "log in with the new one" in page_text(done)
    assert session_user(shopper) is None and session_user(other) is None
    # Following the mailed link proved the address.
    with app.extensions["shop"].engines.primary.connect() as conn:
        assert conn.execute(select(users.c.email_verified_at)).scalar() is not None
    assert mailbox.last("ada@example.com").subject == "Your password was changed"
    assert Shopper(app.test_client(), app).login(password=NEW_PASSWORD).status_code == 303
    again = shopper.post_form(link, {"new_password": "yet another horse 9"})
    assert again.status_code == 400 and "already used" in page_text(again)
    assert shopper.client.get(link).status_code == 400


def test_a_reset_link_expires_after_the_configured_ttl(make_app, mailbox: Mailbox):
    app = make_app(password_reset_ttl=600)
    shopper = Shopper(app.test_client(), app)
    shopper.sign_up()
    response = shopper.api("POST", "/password/reset", json={"email": "ada@example.com"})
    assert response.status_code == 202
    mail = mailbox.last("ada@example.com")
    assert "for 10 minutes" in mail.body
    token = mail.link("/password/reset/").rsplit("/", 1)[1]
    services = app.extensions["shop"]
    start = services.clock()
    services.clock = lambda: start + 601
    late = shopper.api(
        "POST", "/password/reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert (late.status_code, late.get_json()["error"]["code"]) == (400, "invalid_token")
    services.clock = lambda: start + 599
    ok = shopper.api(
        "POST", "/password/reset/confirm", json={"token": token, "new_password": NEW_PASSWORD}
    )
    assert ok.status_code == 200 and ok.get_json()["user"] is None


def test_a_reset_refuses_a_weak_password_and_keeps_the_link(app, shopper, mailbox: Mailbox):
    shopper.sign_up()
    shopper.post_form("/password/reset", {"email": "ada@example.com"})
    link = path_of(mailbox.last("ada@example.com").link("/password/reset/"))
    weak = shopper.post_form(link, {"new_password": "qwertyuiop123"})
    assert weak.status_code == 400 and "stolen" in page_text(weak)
    assert shopper.post_form(link, {"new_password": NEW_PASSWORD}).status_code == 200


def test_a_tampered_reset_token_is_refused(app, shopper, mailbox: Mailbox):
    shopper.sign_up()
    shopper.post_form("/password/reset", {"email": "ada@example.com"})
    token = mailbox.last("ada@example.com").link("/password/reset/").rsplit("/", 1)[1]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    response = shopper.api(
        "POST", "/password/reset/confirm", json={"token": forged, "new_password": NEW_PASSWORD}
    )
    assert response.status_code == 400
    assert Shopper(app.test_client(), app).login().status_code == 303


# -- address change ----------------------------------------------------------------------------


def test_an_address_change_is_confirmed_from_the_new_address(app, mailbox: Mailbox):
    shopper = verified_member(app, mailbox)
    asked = shopper.post_form("/account/email", {"email": "ada@new.example", "password": PASSWORD})
    assert asked.status_code == 200
    assert "We sent a message to ada@new.example" in page_text(asked)
    assert session_user(shopper)["email"] == "ada@example.com"  # not yet
    link = path_of(mailbox.last("ada@new.example").link("/account/email/confirm/"))
    confirmed = shopper.client.get(link)
    assert confirmed.status_code == 200
    assert "address is now ada@new.example" in page_text(confirmed)
    assert session_user(shopper) == {
        "id": session_user(shopper)["id"],
        "email": "ada@new.example",
        "email_verified": True,
    }
    notice = mailbox.last("ada@example.com")
    assert notice.subject == "Your account's email address was changed"
    assert "ada@new.example" in notice.body
    assert Shopper(app.test_client(), app).login("ada@new.example").status_code == 303
    assert Shopper(app.test_client(), app).login("ada@example.com").status_code == 401
    assert shopper.client.get(link).status_code == 400  # used


def test_an_address_change_to_a_taken_address_answers_the_same(app, mailbox: Mailbox):
    verified_member(app, mailbox, "bo@example.com")
    shopper = verified_member(app, mailbox)
    free = shopper.api(
        "POST", "/account/email", json={"email": "ada@new.example", "password": PASSWORD}
    )
    taken = shopper.api(
        "POST", "/account/email", json={"email": "bo@example.com", "password": PASSWORD}
    )
    assert free.status_code == taken.status_code == 202
    assert free.get_json()["message"].replace("ada@new.example", "X") == taken.get_json()[
        "message"
    ].replace("bo@example.com", "X")
    note = mailbox.last("bo@example.com")
    assert note.subject == "Someone tried to move an account to your address"
    assert "/account/email/confirm/" not in note.body
    assert session_user(shopper)["email"] == "ada@example.com"


def test_an_address_change_needs_the_password(app, mailbox: Mailbox):
    shopper = verified_member(app, mailbox)
    before = len(mailbox.received)
    refused = shopper.api(
        "POST", "/account/email", json={"email": "x@new.example", "password": "nope"}
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"] == {
        "code": "wrong_password",
        "message": "Your password is not right.",
        "field": "password",
    }
    assert len(mailbox.received) == before


def test_a_password_change_voids_a_pending_address_link(app, mailbox: Mailbox):
    shopper = verified_member(app, mailbox)
    shopper.post_form("/account/email", {"email": "ada@new.example", "password": PASSWORD})
    link = path_of(mailbox.last("ada@new.example").link("/account/email/confirm/"))
    shopper.post_form(
        "/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert shopper.client.get(link).status_code == 400
    assert session_user(shopper)["email"] == "ada@example.com"


def test_a_reset_is_refused_whole_while_sessions_cannot_be_ended(
    app, fake_redis_server, mailbox: Mailbox
):
    shopper = Shopper(app.test_client(), app)
    shopper.sign_up()
    shopper.post_form("/password/reset", {"email": "ada@example.com"})
    token = mailbox.last("ada@example.com").link("/password/reset/").rsplit("/", 1)[1]
    body = {"token": token, "new_password": NEW_PASSWORD}
    shopper.csrf()
    fake_redis_server.connected = False  # Redis down: no session could be ended
    down = shopper.api("POST", "/password/reset/confirm", json=body)
    assert down.status_code == 503
    fake_redis_server.connected = True
    assert Shopper(app.test_client(), app).login().status_code == 303  # unchanged
    assert shopper.api("POST", "/password/reset/confirm", json=body).status_code == 200


def test_a_wrong_current_password_counts_as_a_failed_login(make_app):
    app = make_app(login_free_failures=1, limit_login="")
    shopper = Shopper(app.test_client(), app)
    shopper.register()
    wrong = {"current_password": "wrong horse 42", "new_password": NEW_PASSWORD}
    first = shopper.api("PUT", "/account/password", json=wrong)
    assert (first.status_code, first.get_json()["error"]["code"]) == (400, "wrong_password")
    second = shopper.api("PUT", "/account/password", json=wrong)
    assert (second.status_code, second.get_json()["error"]["code"]) == (429, "rate_limited")
    assert Shopper(app.test_client(), app).login().status_code == 429  # the account waits


def test_a_reset_ends_the_failed_login_wait(make_app, mailbox: Mailbox, redis_clock):
    app = make_app(login_free_failures=1, limit_login="")
    shopper = Shopper(app.test_client(), app)
    shopper.sign_up()
    assert shopper.login(password="wrong horse 42").status_code == 401
    assert shopper.login(password="wrong horse 42").status_code == 429  # waits 1 s
    redis_clock.advance(1.05)
    assert shopper.login(password="wrong horse 42").status_code == 401
    assert shopper.login(password="wrong horse 42").status_code == 429  # now waits 2 s
    shopper.post_form("/password/reset", {"email": "ada@example.com"})
    link = path_of(mailbox.last("ada@example.com").link("/password/reset/"))
    assert shopper.post_form(link, {"new_password": NEW_PASSWORD}).status_code == 200
    assert shopper.login(password=NEW_PASSWORD).status_code == 303
