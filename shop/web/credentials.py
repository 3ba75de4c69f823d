"""Changing what signs an account in: its password (changed, or reset by mail) and its
address (confirmed by a link mailed to the new one)."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from ..account_changes import check_reset_link, confirm_email_change
from ..errors import FormError, InvalidToken
from .account import account_page
from .actions import (
    ask_email_change,
    ask_password_reset,
    change_own_password,
    note_account,
    reset_with_link,
)
from .context import account_tokens, outbox, require_login, services
from .errors import form_error

bp = Blueprint("credentials", __name__)

PASSWORD_CHANGED = "Your password was changed, and your other sessions were signed out."
RESET_DONE = "Your password was changed and every session signed out: log in with the new one."
SENT_RESET = (
    "We sent a message to {email} with what to do next. If it does not arrive within a few "
    "minutes, check the address and your spam folder."
)
SENT_NEW_ADDRESS = (
    "We sent a message to {email}: follow the link in it to confirm your new address. Until "
    "then your account keeps its current address."
)


@bp.route("/account/password", methods=["GET", "POST"])
def password_change():
    require_login()
    if request.method == "GET":
        return render_template("account/password.html", error=None)
    try:
        change_own_password(
            request.form.get("current_password", ""), request.form.get("new_password", "")
        )
    except FormError as exc:
        return form_error("account/password.html", exc)
    return account_page(notice=PASSWORD_CHANGED)


@bp.route("/password/reset", methods=["GET", "POST"])
def reset_request():
    if request.method == "GET":
        return render_template("account/reset_request.html", error=None, email="")
    email = request.form.get("email", "")
    try:
        address = ask_password_reset(email)
    except FormError as exc:
        return form_error("account/reset_request.html", exc, email=email)
    return render_template(
        "account/sent.html",
        title="Check your mail",
        message=SENT_RESET.format(email=address),
        then=None,
    )


@bp.route("/password/reset/<token>", methods=["GET", "POST"])
def reset_password_page(token: str):
    engine, tokens = services().engines.primary, account_tokens()
    try:
        if request.method == "GET":
            user = check_reset_link(engine, tokens, token)
            return render_template("account/reset.html", error=None, token=token, email=user.email)
        user, _ = reset_with_link(token, request.form.get("new_password"))
    except InvalidToken as exc:
        return render_template("account/reset.html", error=exc, token=None, email=None), 400
    except FormError as exc:
        return form_error("account/reset.html", exc, token=token, email=None)
    return render_template(
        "account/login.html", error=None, email=user.email, next="", notice=RESET_DONE
    )


@bp.route("/account/email", methods=["GET", "POST"])
def email_change():
    require_login()
    if request.method == "GET":
        return render_template("account/email.html", error=None, email="")
    email = request.form.get("email", "")
    try:
        address = ask_email_change(request.form.get("password", ""), email)
    except FormError as exc:
        return form_error("account/email.html", exc, email=email)
    return render_template(
        "account/sent.html",
        title="Check your mail",
        message=SENT_NEW_ADDRESS.format(email=address),
        then=None,
    )


@bp.get("/account/email/confirm/<token>")
def confirm_email(token: str):
    """The link mailed to the new address: one click moves the account there."""
    try:
        user = confirm_email_change(services().engines.primary, account_tokens(), outbox(), token)
    except FormError as exc:
        return form_error("account/verified.html", exc, email=None)
    note_account(user)
    return render_template("account/verified.html", error=None, email=user.email, changed=True)
