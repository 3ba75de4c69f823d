"""The shopper's actions, shared by the pages and the JSON API so both follow one set of rules."""

from __future__ import annotations

import logging

from ..accounts import User
from ..cart import CartOwner, PricedCart, price_cart
from ..orders import PlacedOrder, Shipping, place_order
from ..redis_client import RedisUnavailable
from .context import cart_owner, require_login, require_session_store, services, shop_session

log = logging.getLogger(__name__)


def current_cart() -> PricedCart:
    current = require_session_store()
    quantities = services().carts.get(cart_owner(current))
    return price_cart(quantities, services().catalogue.products(list(quantities)))


def add_to_cart(product_id: int, quantity: int) -> int:
    current = require_session_store()
    product = services().catalogue.product(product_id)
    new_quantity = services().carts.add(
        cart_owner(current), product_id, quantity, stock=product["stock"]
    )
    current.ensure_stored()
    return new_quantity


def set_cart_quantity(product_id: int, quantity: int) -> None:
    current = require_session_store()
    stock = services().catalogue.product(product_id)["stock"] if quantity else 0
    services().carts.set(cart_owner(current), product_id, quantity, stock=stock)
    current.ensure_stored()


def remove_from_cart(product_id: int) -> None:
    current = require_session_store()
    services().carts.remove(cart_owner(current), product_id)


def sign_in(user: User) -> None:
    """Log in: the visitor's cart joins the account's (capped by stock), and the id rotates."""
    current = require_session_store()
    carts = services().carts
    visitor = CartOwner.session(current.ref)
    quantities = carts.get(visitor)
    if quantities:
        stock = {
            pid: product["stock"]
            for pid, product in services().catalogue.products(list(quantities)).items()
        }
        carts.merge(
            visitor, CartOwner.account(user.id), {pid: stock.get(pid, 0) for pid in quantities}
        )
    current.log_in(user.id, user.email, now=services().sessions.clock())


def sign_out() -> None:
    current = require_session_store()
    current.log_out()


def checkout(shipping: Shipping, idempotency_key: str) -> PlacedOrder:
    """Place the order; the cart is cleared and the catalogue refreshed only after the commit."""
    user_id = require_login()
    current = shop_session()
    owner = cart_owner(current)
    quantities = services().carts.get(owner)
    placed = place_order(
        services().engines.primary,
        user_id=user_id,
        cart=quantities,
        shipping=shipping,
        idempotency_key=idempotency_key,
    )
    if placed.created:
        try:
            services().carts.clear(owner)
        except RedisUnavailable as exc:
            log.error("order %s placed but the cart could not be cleared: %s", placed.order.id, exc)
        try:
            services().catalogue.invalidate([line.product_id for line in placed.order.lines])
        except RedisUnavailable as exc:
            log.warning("order %s: catalogue cache not invalidated: %s", placed.order.id, exc)
    return placed
