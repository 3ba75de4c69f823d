"""Checkout and order history, always on the primary.

:func:`place_order` is one transaction: a conditional decrement per line (``stock >= wanted``),
so stock never goes below zero whatever runs concurrently; lines are taken in product-id order
so two checkouts cannot deadlock. The order waits for payment, holding that stock until
``hold_expires_at`` (shop.order_lifecycle expires it after). A (owner, idempotency key) pair is
unique in the database, so a repeated submit returns the first order instead of creating a
second, and the same key with another request is refused; one cart (owner, lines) has at most
one order waiting for payment, so two tabs with two keys cannot both place it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .cart import changed_prices
from .catalogue import MAX_TOTAL_CENTS
from .errors import (
    EmptyCart,
    IdempotencyKeyReused,
    InvalidInput,
    OutOfStock,
    PricesChanged,
    ProductsUnavailable,
    ShortLine,
)
from .models import order_lines, orders, products
from .order_lifecycle import PENDING, record
from .order_records import Order, OrderLine, access_token, load_order, token_hash

MAX_IDEMPOTENCY_KEY = 100


@dataclass(frozen=True)
class Shipping:
    name: str
    address: str

    @classmethod
    def parse(cls, name: object, address: object) -> Shipping:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput("Enter the name to ship to.", field="name")
        if not isinstance(address, str) or not address.strip():
            raise InvalidInput("Enter the shipping address.", field="address")
        if len(name.strip()) > 200:
            raise InvalidInput("The name is limited to 200 characters.", field="name")
        if len(address.strip()) > 1000:
            raise InvalidInput("The address is limited to 1000 characters.", field="address")
        return cls(name.strip(), address.strip())


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PlacedOrder:
    order: Order
    created: bool  # False when an earlier submit with the same key already placed it


def check_idempotency_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput(
            "An Idempotency-Key is required to place an order.", field="idempotency_key"
        )
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise InvalidInput(
            f"The Idempotency-Key must be printable and at most {MAX_IDEMPOTENCY_KEY} characters.",
            field="idempotency_key",
        )
    return key


def place_order(
    engine: Engine,
    *,
    owner_key: str,
    user_id: int | None,
    email: str | None,
    cart: dict[int, int],
    shipping: Shipping,
    idempotency_key: str,
    now: datetime,
    hold_seconds: int,
    secret: str,
    seen_prices: dict[int, int] | None = None,
) -> PlacedOrder:
    """Turn a cart into an order waiting for payment, or raise and write nothing. With
    ``seen_prices`` (id -> the unit price the shopper saw), a line whose price read here
    differs raises PricesChanged."""
    key = check_idempotency_key(idempotency_key)
    asked = _fingerprint([shipping.name, shipping.address, email])
    cart_hash = _fingerprint(sorted(cart.items()))
    try:
        with engine.begin() as conn:
            earlier = _earlier_order(conn, owner_key, key, asked, cart_hash)
            if earlier is not None:
                return PlacedOrder(load_order(conn, earlier), created=False)
            if not cart:
                raise EmptyCart("Your cart is empty.")
            lines, short = _take_stock(conn, cart)
            if short:
                raise OutOfStock(short)
            _check_money(seen_prices, lines)
            order_id = _insert_order(
                conn,
                {
                    "user_id": user_id,
                    "owner_key": owner_key,
                    "email": email,
                    "status": PENDING,
                    "shipping_name": shipping.name,
                    "shipping_address": shipping.address,
                    "idempotency_key": key,
                    "request_hash": asked,
                    "cart_hash": cart_hash,
                    "hold_expires_at": now + timedelta(seconds=hold_seconds),
                    "created_at": now,
                },
                lines,
            )
            conn.execute(
                update(orders)
                .where(orders.c.id == order_id)
                .values(access_token_hash=token_hash(access_token(secret, order_id)))
            )
            record(conn, order_id, PENDING, now, None)
            order = load_order(conn, order_id)
    except IntegrityError:
        # A concurrent submit with this key, or of this cart, committed first: its order.
        with engine.connect() as conn:
            earlier = _earlier_order(conn, owner_key, key, asked, cart_hash)
            if earlier is None:
                raise
            return PlacedOrder(load_order(conn, earlier), created=False)
    return PlacedOrder(order, created=True)


def _check_money(seen: dict[int, int] | None, lines: list[OrderLine]) -> None:
    """The prices read with the stock decrement (the same transaction) are the ones the shopper
    saw, and the total fits the money columns."""
    if seen is not None:
        current = {line.product_id: (line.name, line.unit_price_cents) for line in lines}
        changed = changed_prices(seen, current)
        if changed:
            raise PricesChanged(changed)
    if sum(line.line_total_cents for line in lines) > MAX_TOTAL_CENTS:
        raise InvalidInput("This order is larger than the shop can take; order fewer items.")


def _earlier_order(
    conn: Connection, owner_key: str, key: str, asked: str, cart_hash: str
) -> int | None:
    """The order this submit repeats: the same key (refused if it asked for something else),
    or the same cart still waiting for payment."""
    same_key = conn.execute(
        select(orders.c.id, orders.c.request_hash).where(
            orders.c.owner_key == owner_key, orders.c.idempotency_key == key
        )
    ).first()
    if same_key is not None:
        if same_key.request_hash not in (None, asked):
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different order; use a new key.",
                field="idempotency_key",
            )
        return same_key.id
    return conn.execute(
        select(orders.c.id).where(
            orders.c.owner_key == owner_key,
            orders.c.cart_hash == cart_hash,
            orders.c.status == PENDING,
        )
    ).scalar()


def _take_stock(conn: Connection, cart: dict[int, int]) -> tuple[list[OrderLine], list[ShortLine]]:
    """Decrement each line's stock if there is enough of it and the product is still sold; a
    product archived (or gone) since the cart was priced raises ProductsUnavailable, whatever a
    cached page said."""
    lines: list[OrderLine] = []
    short: list[ShortLine] = []
    gone: list[int] = []
    for product_id in sorted(cart):
        wanted = cart[product_id]
        row = conn.execute(
            update(products)
            .where(
                products.c.id == product_id,
                products.c.stock >= wanted,
                products.c.archived_at.is_(None),
            )
            .values(stock=products.c.stock - wanted, updated_at=func.now())
            .returning(products.c.name, products.c.price_cents)
        ).first()
        if row is None:
            current = conn.execute(
                select(products.c.name, products.c.stock, products.c.archived_at).where(
                    products.c.id == product_id
                )
            ).first()
            if current is None or current.archived_at is not None:
                gone.append(product_id)
                continue
            short.append(
                ShortLine(
                    product_id=product_id,
                    name=current.name if current else f"product {product_id}",
                    requested=wanted,
                    available=current.stock if current else 0,
                )
            )
            continue
        lines.append(
            OrderLine(product_id, row.name, row.price_cents, wanted, row.price_cents * wanted)
        )
    if gone:
        raise ProductsUnavailable(gone)
    return lines, short


def _insert_order(conn: Connection, values: dict, lines: list[OrderLine]) -> int:
    total = sum(line.line_total_cents for line in lines)
    order_id = conn.execute(
        insert(orders).values(**values, total_cents=total).returning(orders.c.id)
    ).scalar_one()
    conn.execute(
        insert(order_lines),
        [
            {
                "order_id": order_id,
                "product_id": line.product_id,
                "product_name": line.name,
                "unit_price_cents": line.unit_price_cents,
                "quantity": line.quantity,
                "line_total_cents": line.line_total_cents,
            }
            for line in lines
        ],
    )
    return order_id
