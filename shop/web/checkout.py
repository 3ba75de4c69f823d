"""Checkout and order pages (the primary database: a shopper sees their own writes)."""

from __future__ import annotations

import secrets

from flask import Blueprint, redirect, render_template, request, url_for

from ..errors import LoginRequired, NotFound, ShopError
from ..orders import Shipping, get_order, list_orders
from .actions import checkout as place_checkout
from .actions import current_cart
from .context import require_login, services

bp = Blueprint("checkout", __name__)


def _login_first():
    return redirect(url_for("account.login", next=request.path), code=303)


@bp.route("/checkout", methods=["GET", "POST"])
def checkout():
    try:
        require_login()
    except LoginRequired:
        return _login_first()
    if request.method == "GET":
        return render_template(
            "checkout/checkout.html",
            cart=current_cart(),
            error=None,
            form={"name": "", "address": ""},
            idempotency_key=secrets.token_urlsafe(16),
        )
    form = {"name": request.form.get("name", ""), "address": request.form.get("address", "")}
    key = request.form.get("idempotency_key", "")
    try:
        shipping = Shipping.parse(form["name"], form["address"])
        placed = place_checkout(shipping, key, password=request.form.get("password"))
    except ShopError as exc:
        if exc.status == 503:
            raise
        return (
            render_template(
                "checkout/checkout.html",
                cart=current_cart(),
                error=exc,
                form=form,
                idempotency_key=key or secrets.token_urlsafe(16),
            ),
            exc.status,
            exc.headers(),
        )
    return redirect(url_for("checkout.order", order_id=placed.order.id, placed=1), code=303)


@bp.get("/orders")
def orders():
    try:
        user_id = require_login()
    except LoginRequired:
        return _login_first()
    return render_template(
        "orders/list.html", orders=list_orders(services().engines.primary, user_id=user_id)
    )


@bp.get("/orders/<id:order_id>")
def order(order_id: int):
    try:
        user_id = require_login()
    except LoginRequired:
        return _login_first()
    found = get_order(services().engines.primary, user_id=user_id, order_id=order_id)
    if found is None:
        raise NotFound(f"There is no order {order_id} in your account.")
    placed = bool(request.args.get("placed"))
    return render_template("orders/detail.html", order=found, placed=placed)
