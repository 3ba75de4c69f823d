"""Checkout and order pages (the primary database: a shopper sees their own writes)."""

from __future__ import annotations

import secrets

from flask import Blueprint, redirect, render_template, request, url_for

from ..cart import parse_shown_prices
from ..errors import FormError, NotFound
from ..orders import Shipping, get_order, list_orders
from .actions import checkout as place_checkout
from .actions import current_cart
from .context import require_login, services
from .errors import form_error

bp = Blueprint("checkout", __name__)


@bp.route("/checkout", methods=["GET", "POST"])
def checkout():
    require_login()
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
        placed = place_checkout(
            shipping,
            key,
            password=request.form.get("password"),
            shown_prices=parse_shown_prices(request.form.get("shown_prices")),
        )
    except FormError as exc:
        return form_error(
            "checkout/checkout.html",
            exc,
            cart=current_cart(),
            form=form,
            idempotency_key=key or secrets.token_urlsafe(16),
        )
    return redirect(url_for("checkout.order", order_id=placed.order.id, placed=1), code=303)


@bp.get("/orders")
def orders():
    user_id = require_login()
    return render_template(
        "orders/list.html", orders=list_orders(services().engines.primary, user_id=user_id)
    )


@bp.get("/orders/<id:order_id>")
def order(order_id: int):
    user_id = require_login()
    found = get_order(services().engines.primary, user_id=user_id, order_id=order_id)
    if found is None:
        raise NotFound(f"There is no order {order_id} in your account.")
    placed = bool(request.args.get("placed"))
    return render_template("orders/detail.html", order=found, placed=placed)
