"""The order's life cycle: every status change goes through :func:`transition`.

``pending_payment -> paid -> shipped -> delivered``; ``pending_payment -> payment_failed |
expired``; ``paid -> cancelled``. A change is one conditional ``UPDATE ... WHERE status =
<expected>`` inside the caller's transaction, so of two instances trying the same change only
one applies it (and only that one returns the stock). Each change is written to
``order_events`` and handed to the listeners in the same transaction (the mail outbox writes
its mails there, so a mail exists exactly when its status change committed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, func, insert, select, update

from .errors import IllegalTransition
from .models import order_events, order_lines, orders, products

if TYPE_CHECKING:
    from .order_records import Order

log = logging.getLogger(__name__)

PENDING, PAID, SHIPPED, DELIVERED = "pending_payment", "paid", "shipped", "delivered"
FAILED, EXPIRED, CANCELLED = "payment_failed", "expired", "cancelled"
LEGACY_PLACED = "placed"  # orders taken before payments existed (migration 0004)

ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({PAID, FAILED, EXPIRED}),
    PAID: frozenset({SHIPPED, CANCELLED}),
    SHIPPED: frozenset({DELIVERED}),
    LEGACY_PLACED: frozenset({SHIPPED, CANCELLED}),
}
# What a shopper reads for each status (pages and mails show these, the API the codes).
LABELS: dict[str, str] = {
    PENDING: "Awaiting payment",
    PAID: "Paid",
    SHIPPED: "Shipped",
    DELIVERED: "Delivered",
    FAILED: "Payment declined",
    EXPIRED: "Expired (not paid in time)",
    CANCELLED: "Cancelled",
    LEGACY_PLACED: "Placed",
}
# Statuses whose order no longer holds its stock: reaching one puts the lines back.
RESTOCKING = frozenset({FAILED, EXPIRED, CANCELLED})

# Called inside the transaction that changed the status, with the order as it now is and its
# new status; raising rolls the change back.
Listener = Callable[[Connection, "Order", str], None]


def utcnow(clock: Callable[[], float]) -> datetime:
    return datetime.fromtimestamp(clock(), tz=UTC)


def record(conn: Connection, order_id: int, status: str, at: datetime, note: str | None) -> None:
    conn.execute(insert(order_events).values(order_id=order_id, status=status, note=note, at=at))


def transition(
    conn: Connection,
    order_id: int,
    to: str,
    *,
    expected: str | None = None,
    at: datetime,
    listeners: Sequence[Listener] = (),
    note: str | None = None,
    values: dict | None = None,
) -> str:
    """Move the order to ``to`` (from ``expected``, or from whatever it is if that allows it),
    return the status it left. Raises :class:`IllegalTransition`, changing nothing, when the
    move is not allowed or a concurrent change got there first."""
    current = conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar()
    if current is None:
        raise IllegalTransition(f"There is no order {order_id}.")
    source = expected or current
    if to not in ALLOWED.get(source, ()) or current != source:
        raise IllegalTransition(f"Order {order_id} is {current}: it cannot become {to}.")
    changed = conn.execute(
        update(orders)
        .where(orders.c.id == order_id, orders.c.status == source)
        .values(status=to, **(values or {}))
    ).rowcount
    if changed != 1:
        raise IllegalTransition(f"Order {order_id} changed meanwhile: it cannot become {to}.")
    if to in RESTOCKING:
        _return_stock(conn, order_id)
    record(conn, order_id, to, at, note)
    if listeners:
        from .order_records import load_order

        order = load_order(conn, order_id)
        for listener in listeners:
            listener(conn, order, to)
    return source


def _return_stock(conn: Connection, order_id: int) -> None:
    lines = conn.execute(
        select(order_lines.c.product_id, order_lines.c.quantity)
        .where(order_lines.c.order_id == order_id)
        .order_by(order_lines.c.product_id)  # the order checkout takes them in: no deadlock
    ).all()
    for line in lines:
        conn.execute(
            update(products)
            .where(products.c.id == line.product_id)
            .values(stock=products.c.stock + line.quantity, updated_at=func.now())
        )


def product_ids(conn: Connection, order_id: int) -> list[int]:
    return list(
        conn.execute(
            select(order_lines.c.product_id).where(order_lines.c.order_id == order_id)
        ).scalars()
    )


def expire_overdue(
    engine: Engine,
    *,
    now: datetime,
    listeners: Sequence[Listener] = (),
    limit: int = 100,
) -> list[int]:
    """Expire orders whose payment hold has passed, one transaction each, and return the
    product ids whose stock came back. Safe to run on every instance at once: an order is
    expired (and its stock returned) by whichever gets there first, exactly once."""
    with engine.connect() as conn:
        overdue = list(
            conn.execute(
                select(orders.c.id)
                .where(orders.c.status == PENDING, orders.c.hold_expires_at <= now)
                .order_by(orders.c.id)
                .limit(limit)
            ).scalars()
        )
    restocked: list[int] = []
    expired = 0
    for order_id in overdue:
        try:
            with engine.begin() as conn:
                transition(
                    conn,
                    order_id,
                    EXPIRED,
                    expected=PENDING,
                    at=now,
                    listeners=listeners,
                    note="not paid in time",
                )
                restocked += product_ids(conn, order_id)
            expired += 1
        except IllegalTransition:
            continue  # paid, failed or expired by someone else meanwhile
    if expired:
        log.info("expired %d unpaid orders", expired)
    return sorted(set(restocked))
