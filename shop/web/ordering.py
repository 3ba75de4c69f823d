"""The shopper's ordering actions, shared by the pages and the API: place an order, pay it at
the provider, take the provider's notification, sweep expired holds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from flask import current_app, url_for

from ..accounts import normalise_email
from ..cart import CartOwner
from ..config import Settings
from ..errors import NotFound, ProductsUnavailable
from ..metrics import ORDERS_PLACED
from ..order_lifecycle import utcnow
from ..order_records import Order, access_token, has_shipped_to
from ..orders import PlacedOrder, Shipping, place_order
from ..payments import Applied, apply_notification, ensure_payment
from ..redis_client import RedisUnavailable
from ..services import sweep_holds
from .actions import confirm_password, require_recent_password
from .context import cart_owner, owner_key, require_session_store, services
from .links import public_base

log = logging.getLogger(__name__)


def checkout(
    shipping: Shipping,
    idempotency_key: str,
    *,
    email: object = None,
    password: object = None,
    shown_prices: dict[int, int] | None = None,
) -> PlacedOrder:
    """Place the order, waiting for payment. An account's new shipping address needs a
    recently entered password (``password`` confirms it); a guest gives an e-mail address.
    The order is placed only at the prices the shopper saw: ``shown_prices`` (the checkout
    page's), else the ones the cart's lines were seen at; a product no longer sold must go
    first. The cart stays until the order is paid (a declined payment can be tried again)."""
    current = require_session_store()
    user_id = current.user_id
    primary = services().engines.primary
    if user_id is not None:
        if not has_shipped_to(primary, user_id=user_id, address=shipping.address):
            if password:
                confirm_password(password)
            require_recent_password()
        address = current.get("email")
    else:
        address = normalise_email(email)
    lines = services().carts.lines(cart_owner(current))
    gone = set(lines) - set(services().catalogue.products(list(lines)))
    if gone:
        raise ProductsUnavailable(sorted(gone))
    if shown_prices is None:
        shown_prices = {
            pid: line.seen_price_cents
            for pid, line in lines.items()
            if line.seen_price_cents is not None
        }
    sweep_expired_orders()  # stock held by unpaid orders comes back before it is taken
    placed = place_order(
        primary,
        owner_key=owner_key(current),
        user_id=user_id,
        email=address,
        cart={pid: line.quantity for pid, line in lines.items()},
        shipping=shipping,
        idempotency_key=idempotency_key,
        now=utcnow(services().clock),
        hold_seconds=services().settings.payment_hold_seconds,
        secret=order_secret(),
        seen_prices=shown_prices,
    )
    if placed.created:
        ORDERS_PLACED.inc()
        _invalidate([line.product_id for line in placed.order.lines], placed.order.id)
    return placed


def order_links(settings: Settings) -> Callable[[Order], str]:
    """Absolute links to orders, for their mails: on ``SHOP_PUBLIC_URL``, else on the host the
    request came to (a payment notification, a page), else on ``make run``'s address (the CLI
    without ``SHOP_PUBLIC_URL``). A guest's link carries the order's access token."""
    secret = settings.secret_key
    assert secret is not None

    def link(order: Order) -> str:
        path = f"/orders/{order.id}"
        if order.user_id is None:
            path += "?token=" + access_token(secret, order.id)
        return public_base(settings.public_url) + path

    return link


def order_secret() -> str:
    return current_app.config["SECRET_KEY"]


def order_token(order: Order) -> str:
    """The secret of the order's access link (a guest's way back to it)."""
    return access_token(order_secret(), order.id)


def payment_url(order: Order) -> str | None:
    """Where to pay the order (the provider's page, created once); None if the provider
    cannot be reached now: the order stands and "Pay now" tries again."""
    if order.payment_url:
        return order.payment_url
    return_url = public_base(services().settings.public_url) + url_for(
        "checkout.order", order_id=order.id
    )
    try:
        return ensure_payment(
            services().engines.primary,
            services().payment_provider,
            order,
            return_url=return_url,
        )
    except OSError as exc:
        log.error("order %s: the payment could not be created: %s", order.id, exc)
        return None


def receive_notification(provider_name: str, headers: Mapping[str, str], body: bytes) -> Applied:
    """The webhook's rule: verify and apply, then (after the commit) clear a paid order's cart
    and refresh the catalogue for stock that came back."""
    provider = services().payment_providers.get(provider_name)
    if provider is None:
        raise NotFound(f"There is no payment provider {provider_name!r}.")
    applied = apply_notification(
        services().engines.primary,
        provider,
        headers,
        body,
        now=utcnow(services().clock),
        listeners=services().order_listeners,
    )
    if applied.cart_owner is not None:
        kind, _, ident = applied.cart_owner.partition(":")
        try:
            services().carts.clear(CartOwner(kind, ident))
        except RedisUnavailable as exc:
            log.error("order %s paid but the cart could not be cleared: %s", applied.order_id, exc)
    if applied.restocked:
        _invalidate(applied.restocked, applied.order_id)
    return applied


def sweep_expired_orders() -> None:
    """Expire unpaid orders past their hold (any instance may: each expires once)."""
    try:
        sweep_holds(services())
    except RedisUnavailable as exc:
        log.warning("expired orders: catalogue cache not invalidated: %s", exc)


def _invalidate(product_ids: list[int], order_id: int | None) -> None:
    try:
        services().catalogue.invalidate(product_ids)
    except RedisUnavailable as exc:
        log.warning("order %s: catalogue cache not invalidated: %s", order_id, exc)
