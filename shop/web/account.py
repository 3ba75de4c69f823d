"""Account pages: register, log in, log out, verify the address, the account page."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from ..accounts import get_account, send_verification, verify_email
from ..errors import AlreadyVerified, FormError, InvalidToken, ShopError
from .actions import log_in_with_password, note_account, sign_out, sign_up
from .context import account_tokens, outbox, require_login, services
from .errors import form_error
from .inputs import safe_next

bp = Blueprint("account", __name__)

SENT_TO_CONFIRM = "We sent a message to {email}: follow the link in it to confirm your address."


@bp.route("/register", methods=["GET", "POST"])
def register_page():
    next_url = safe_next(request.values.get("next"), "")
    if request.method == "GET":
        return render_template("account/register.html", error=None, email="", next=next_url)
    email = request.form.get("email", "")
    try:
        address = sign_up(email, request.form.get("password", ""))
    except FormError as exc:
        return form_error("account/register.html", exc, email=email, next=next_url)
    # The same page whether or not the address had an account: the mail differs.
    return render_template(
        "account/sent.html",
        title="Check your mail",
        message=SENT_TO_CONFIRM.format(email=address),
        then="Then log in with your email and password (you may log in before confirming).",
        next=next_url,
    )


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template(
            "account/login.html", error=None, email="", next=next_url, notice=None
        )
    email = request.form.get("email", "")
    try:
        log_in_with_password(email, request.form.get("password", ""))
    except FormError as exc:
        return form_error("account/login.html", exc, email=email, next=next_url, notice=None)
    return redirect(safe_next(next_url, url_for("catalogue.grid")), code=303)


@bp.post("/logout")
def logout():
    sign_out()
    return redirect(url_for("catalogue.grid"), code=303)


@bp.get("/verify/<token>")
def verify(token: str):
    """The link mailed at registration. A GET, so one click in the mail is enough; the token
    is the proof, and it works once."""
    try:
        user = verify_email(services().engines.primary, account_tokens(), token)
    except InvalidToken as exc:
        return render_template("account/verified.html", error=exc, email=None), exc.status
    note_account(user)
    return render_template("account/verified.html", error=None, email=user.email)


def account_page(*, notice: str | None = None, error: ShopError | None = None, status: int = 200):
    account = get_account(services().engines.primary, require_login())
    note_account(account.user)
    return render_template(
        "account/account.html", account=account, notice=notice, error=error
    ), status


@bp.get("/account")
def account():
    return account_page()


@bp.post("/account/verify/resend")
def resend_verification():
    user_id = require_login()
    try:
        address = send_verification(services().engines.primary, account_tokens(), outbox(), user_id)
    except AlreadyVerified as exc:
        return account_page(notice=exc.message)
    return account_page(notice=SENT_TO_CONFIRM.format(email=address))
