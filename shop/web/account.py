"""Account pages: register, log in, log out."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from ..accounts import authenticate, register
from ..errors import ShopError
from .actions import sign_in, sign_out
from .context import require_session_store, services
from .inputs import safe_next

bp = Blueprint("account", __name__)


@bp.route("/register", methods=["GET", "POST"])
def register_page():
    if request.method == "GET":
        return render_template("account/register.html", error=None, email="")
    email = request.form.get("email", "")
    try:
        require_session_store()
        user = register(services().engines.primary, email, request.form.get("password", ""))
        sign_in(user)
    except ShopError as exc:
        if exc.status == 503:
            raise
        return render_template("account/register.html", error=exc, email=email), exc.status
    return redirect(url_for("catalogue.grid"), code=303)


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template("account/login.html", error=None, email="", next=next_url)
    email = request.form.get("email", "")
    try:
        require_session_store()
        user = authenticate(services().engines.primary, email, request.form.get("password", ""))
        sign_in(user)
    except ShopError as exc:
        if exc.status == 503:
            raise
        return render_template(
            "account/login.html", error=exc, email=email, next=next_url
        ), exc.status
    return redirect(safe_next(next_url, url_for("catalogue.grid")), code=303)


@bp.post("/logout")
def logout():
    sign_out()
    return redirect(url_for("catalogue.grid"), code=303)
