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
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from .errors import EmptyCart, IdempotencyKeyReused, InvalidInput, OutOfStock, ShortLine
from .models import order_events, order_lines, orders, products
from .order_lifecycle import PENDING, record

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
class OrderEvent:
    status: str
    at: datetime
    note: str | None


@dataclass(frozen=True)
class Order:
    id: int
    status: str
    total_cents: int
    shipping_name: str
    shipping_address: str
    created_at: datetime | None
    lines: list[OrderLine] = field(default_factory=list)
    user_id: int | None = None
    owner_key: str = ""
    email: str | None = None
    hold_expires_at: datetime | None = None
    payment_ref: str | None = None
    payment_url: str | None = None
    tracking: str | None = None
    history: list[OrderEvent] = field(default_factory=list)

    def as_json(self, *, access_token: str | None = None) -> dict:
        """The API's order; ``access_token`` (the guest link's secret) only for its owner."""
        found: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "total_cents": self.total_cents,
            "created_at": _iso(self.created_at),
            "email": self.email,
            "payment_url": self.payment_url if self.status == PENDING else None,
            "hold_expires_at": _iso(self.hold_expires_at) if self.status == PENDING else None,
            "tracking": self.tracking,
        }
        if access_token is not None:
            found["access_token"] = access_token
        return found | {
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
            "history": [
                {"status": event.status, "at": _iso(event.at), "note": event.note}
                for event in self.history
            ],
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def access_token(secret: str, order_id: int) -> str:
    """The secret of an order's access link: derived from the shop's key, so its owner can be
    given it again (a repeated submit, a mail), and stored only as a hash."""
    digest = hmac.new(secret.encode(), f"order-access:{order_id}".encode(), hashlib.sha256)
    return digest.hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
) -> PlacedOrder:
    """Turn a cart into an order waiting for payment, or raise and write nothing."""
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


def load_order(conn: Connection, order_id: int) -> Order:
    row = conn.execute(select(orders).where(orders.c.id == order_id)).one()
    return _order_from(conn, [row])[0]


def _order_from(conn: Connection, rows: Sequence[Row[Any]]) -> list[Order]:
    if not rows:
        return []
    by_order: dict[int, list[OrderLine]] = {row.id: [] for row in rows}
    history: dict[int, list[OrderEvent]] = {row.id: [] for row in rows}
    for event in conn.execute(
        select(order_events)
        .where(order_events.c.order_id.in_(list(by_order)))
        .order_by(order_events.c.order_id, order_events.c.id)
    ):
        history[event.order_id].append(OrderEvent(event.status, event.at, event.note))
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
            user_id=row.user_id,
            owner_key=row.owner_key,
            email=row.email,
            hold_expires_at=row.hold_expires_at,
            payment_ref=row.payment_ref,
            payment_url=row.payment_url,
            tracking=row.tracking,
            history=history[row.id],
        )
        for row in rows
    ]


def get_order(
    engine: Engine,
    *,
    order_id: int,
    user_id: int | None = None,
    owner_key: str | None = None,
    token: str | None = None,
) -> Order | None:
    """The order if this viewer may see it: its account, the guest session that placed it (not
    yet claimed by an account), or the holder of its access link. Anyone else gets None, as for
    a missing order."""
    allowed = []
    if user_id is not None:
        allowed.append(orders.c.user_id == user_id)
    if owner_key is not None:
        allowed.append(and_(orders.c.user_id.is_(None), orders.c.owner_key == owner_key))
    if token:
        allowed.append(orders.c.access_token_hash == token_hash(token))
    if not allowed:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(orders).where(orders.c.id == order_id, or_(*allowed))).first()
        return _order_from(conn, [row])[0] if row else None


def claim_guest_orders(engine: Engine, *, owner_key: str, user_id: int) -> int:
    """A guest who signs in from the browser that placed their orders: the orders become the
    account's. Returns how many."""
    with engine.begin() as conn:
        return conn.execute(
            update(orders)
            .where(orders.c.owner_key == owner_key, orders.c.user_id.is_(None))
            .values(user_id=user_id)
        ).rowcount


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
