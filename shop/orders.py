"""Checkout and order history, always on the primary.

:func:`place_order` is one transaction: a conditional decrement per line (``stock >= wanted``),
so stock never goes below zero whatever runs concurrently; lines are taken in product-id order
so two checkouts cannot deadlock. A (shopper, idempotency key) pair is unique in the database,
so a repeated submit returns the first order instead of creating a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from .cart import changed_prices
from .catalogue import MAX_TOTAL_CENTS
from .errors import EmptyCart, InvalidInput, OutOfStock, PricesChanged, ShortLine
from .models import order_lines, orders, products

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


@dataclass(frozen=True)
class OrderLine:
    product_id: int
    name: str
    unit_price_cents: int
    quantity: int
    line_total_cents: int


@dataclass(frozen=True)
class Order:
    id: int
    status: str
    total_cents: int
    shipping_name: str
    shipping_address: str
    created_at: datetime | None
    lines: list[OrderLine] = field(default_factory=list)

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "status": self.status,
            "total_cents": self.total_cents,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "shipping": {"name": self.shipping_name, "address": self.shipping_address},
            "lines": [
                {
                    "product_id": line.product_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_cents": line.unit_price_cents,
                    "line_total_cents": line.line_total_cents,
                }
                for line in self.lines
            ],
        }


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
    user_id: int,
    cart: dict[int, int],
    shipping: Shipping,
    idempotency_key: str,
    seen_prices: dict[int, int] | None = None,
) -> PlacedOrder:
    """Turn a cart into an order, or raise and write nothing. With ``seen_prices`` (id -> the
    unit price the shopper saw), a line whose price read here differs raises PricesChanged."""
    key = check_idempotency_key(idempotency_key)
    try:
        with engine.begin() as conn:
            existing = _order_id_for_key(conn, user_id, key)
            if existing is not None:
                return PlacedOrder(_load_order(conn, existing), created=False)
            if not cart:
                raise EmptyCart("Your cart is empty.")
            lines, short = _take_stock(conn, cart)
            if short:
                raise OutOfStock(short)
            _check_money(seen_prices, lines)
            order_id = _insert_order(conn, user_id, shipping, key, lines)
            order = _load_order(conn, order_id)
    except IntegrityError:
        # The same key committed by a concurrent submit: answer with that order.
        with engine.connect() as conn:
            existing = _order_id_for_key(conn, user_id, key)
            if existing is None:
                raise
            return PlacedOrder(_load_order(conn, existing), created=False)
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


def has_shipped_to(engine: Engine, *, user_id: int, address: str) -> bool:
    """Whether an earlier order of this account went to ``address`` (a new one asks for the
    password again in a session that has not been asked for a while)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(orders.c.id)
            .where(orders.c.user_id == user_id, orders.c.shipping_address == address)
            .limit(1)
        ).first()
    return found is not None


def _order_id_for_key(conn: Connection, user_id: int, key: str) -> int | None:
    return conn.execute(
        select(orders.c.id).where(orders.c.user_id == user_id, orders.c.idempotency_key == key)
    ).scalar()


def _take_stock(conn: Connection, cart: dict[int, int]) -> tuple[list[OrderLine], list[ShortLine]]:
    lines: list[OrderLine] = []
    short: list[ShortLine] = []
    for product_id in sorted(cart):
        wanted = cart[product_id]
        row = conn.execute(
            update(products)
            .where(products.c.id == product_id, products.c.stock >= wanted)
            .values(stock=products.c.stock - wanted, updated_at=func.now())
            .returning(products.c.name, products.c.price_cents)
        ).first()
        if row is None:
            current = conn.execute(
                select(products.c.name, products.c.stock).where(products.c.id == product_id)
            ).first()
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
    return lines, short


def _insert_order(
    conn: Connection, user_id: int, shipping: Shipping, key: str, lines: list[OrderLine]
) -> int:
    order_id = conn.execute(
        insert(orders)
        .values(
            user_id=user_id,
            status="placed",
            total_cents=sum(line.line_total_cents for line in lines),
            shipping_name=shipping.name,
            shipping_address=shipping.address,
            idempotency_key=key,
        )
        .returning(orders.c.id)
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


def _load_order(conn: Connection, order_id: int) -> Order:
    row = conn.execute(select(orders).where(orders.c.id == order_id)).one()
    return _order_from(conn, [row])[0]


def _order_from(conn: Connection, rows: Sequence[Row[Any]]) -> list[Order]:
    if not rows:
        return []
    by_order: dict[int, list[OrderLine]] = {row.id: [] for row in rows}
    for line in conn.execute(
        select(order_lines)
        .where(order_lines.c.order_id.in_(list(by_order)))
        .order_by(order_lines.c.order_id, order_lines.c.id)
    ):
        by_order[line.order_id].append(
            OrderLine(
                line.product_id,
                line.product_name,
                line.unit_price_cents,
                line.quantity,
                line.line_total_cents,
            )
        )
    return [
        Order(
            id=row.id,
            status=row.status,
            total_cents=row.total_cents,
            shipping_name=row.shipping_name,
            shipping_address=row.shipping_address,
            created_at=row.created_at,
            lines=by_order[row.id],
        )
        for row in rows
    ]


def get_order(engine: Engine, *, user_id: int, order_id: int) -> Order | None:
    """The shopper's own order, or None (someone else's is as absent as a missing one)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(orders).where(orders.c.id == order_id, orders.c.user_id == user_id)
        ).first()
        return _order_from(conn, [row])[0] if row else None


def list_orders(engine: Engine, *, user_id: int, limit: int = 50) -> list[Order]:
    """The shopper's latest orders with their lines, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(orders)
            .where(orders.c.user_id == user_id)
            .order_by(orders.c.id.desc())
            .limit(limit)
        ).all()
        return _order_from(conn, rows)
