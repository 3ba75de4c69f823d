"""Account pages: register, log in, log out."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from ..errors import ShopError
from .actions import log_in_with_password, sign_out, sign_up
from .inputs import safe_next

bp = Blueprint("account", __name__)


@bp.route("/register", methods=["GET", "POST"])
def register_page():
    if request.method == "GET":
        return render_template("account/register.html", error=None, email="")
    email = request.form.get("email", "")
    try:
        sign_up(email, request.form.get("password", ""))
    except ShopError as exc:
        if exc.status == 503:
            raise
        return (
            render_template("account/register.html", error=exc, email=email),
            exc.status,
            exc.headers(),
        )
    return redirect(url_for("catalogue.grid"), code=303)


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template("account/login.html", error=None, email="", next=next_url)
    email = request.form.get("email", "")
    try:
        log_in_with_password(email, request.form.get("password", ""))
    except ShopError as exc:
        if exc.status == 503:
            raise
        return (
            render_template("account/login.html", error=exc, email=email, next=next_url),
            exc.status,
            exc.headers(),
        )
    return redirect(safe_next(next_url, url_for("catalogue.grid")), code=303)


@bp.post("/logout")
def logout():
    sign_out()
    return redirect(url_for("catalogue.grid"), code=303)
