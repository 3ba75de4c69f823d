"""Checkout and order pages (the primary database: a shopper sees their own writes)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from flask import Blueprint, redirect, render_template, request, url_for

from ..cart import parse_shown_prices
from ..errors import FormError, NotFound
from ..order_lifecycle import PENDING, utcnow
from ..order_records import Order, get_order, list_orders
from ..orders import Shipping
from .actions import current_cart
from .context import owner_key, require_login, require_session_store, services
from .errors import form_error
from .ordering import checkout as place_checkout
from .ordering import order_token, payment_url, sweep_expired_orders

bp = Blueprint("checkout", __name__)

FIELDS = ("email", "name", "address")


@bp.route("/checkout", methods=["GET", "POST"])
def checkout():
    require_session_store()
    if request.method == "GET":
        return render_template(
            "checkout/checkout.html",
            cart=current_cart(),
            error=None,
            form=dict.fromkeys(FIELDS, ""),
            idempotency_key=secrets.token_urlsafe(16),
        )
    form = {name: request.form.get(name, "") for name in FIELDS}
    key = request.form.get("idempotency_key", "")
    try:
        shipping = Shipping.parse(form["name"], form["address"])
        placed = place_checkout(
            shipping,
            key,
            email=form["email"],
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
    return redirect(url_for("checkout.pay", order_id=placed.order.id), code=303)


def viewed_order(order_id: int) -> Order:
    """The order if this browser may see it (its account, the guest session that placed it,
    or ``?token=``, the access link's secret); 404 for anyone else, as for a missing one. An
    unpaid order past its hold is shown expired (this request sweeps)."""
    found = _find(order_id)
    expires = found.hold_expires_at
    if found.status == PENDING and expires and _aware(expires) <= utcnow(services().clock):
        sweep_expired_orders()
        found = _find(order_id)
    return found


def _find(order_id: int) -> Order:
    current = require_session_store()
    found = get_order(
        services().engines.primary,
        order_id=order_id,
        user_id=current.user_id,
        owner_key=owner_key(current),
        token=request.args.get("token") or None,
    )
    if found is None:
        raise NotFound(f"There is no order {order_id} here.")
    return found


def _aware(moment: datetime) -> datetime:
    """SQLite gives back naive UTC times; PostgreSQL aware ones."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@bp.get("/orders/<id:order_id>/pay")
def pay(order_id: int):
    """The payment step: to the provider's page while the order waits for payment."""
    found = viewed_order(order_id)
    url = payment_url(found) if found.status == PENDING else None
    if url is None:
        return redirect(_order_link(found), code=303)
    return redirect(url, code=303)


def _order_link(order: Order) -> str:
    return url_for("checkout.order", order_id=order.id, token=request.args.get("token"))


@bp.get("/orders")
def orders():
    user_id = require_login()
    return render_template(
        "orders/list.html", orders=list_orders(services().engines.primary, user_id=user_id)
    )


@bp.get("/orders/<id:order_id>")
def order(order_id: int):
    found = viewed_order(order_id)
    token = order_token(found)
    return render_template(
        "orders/detail.html",
        order=found,
        access_link=url_for("checkout.order", order_id=found.id, token=token, _external=True),
        pay_link=url_for("checkout.pay", order_id=found.id, token=token),
        guest=found.user_id is None,
    )
