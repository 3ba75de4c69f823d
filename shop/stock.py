"""Stock changed by hand (the back office): every change has a reason, is kept in
``stock_adjustments`` and in the audit trail, in the transaction of the change.

Checkout and cancellations move stock on their own (shop/orders.py, shop/order_lifecycle.py);
this module is for people: a count, damage, a delivery, a CSV import. The caller commits, then
invalidates the catalogue for the product.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update

from . import audit
from .errors import InvalidInput, NotFound
from .models import products, stock_adjustments

MAX_STOCK = 2**31 - 1
MAX_REASON = 300


def check_reason(reason: object) -> str:
    text = " ".join(reason.split()) if isinstance(reason, str) else ""
    if not text:
        raise InvalidInput(
            "Say why the stock changes (a count, damage, a delivery...).", field="reason"
        )
    if len(text) > MAX_REASON:
        raise InvalidInput(f"A reason is at most {MAX_REASON} characters.", field="reason")
    return text


def adjust(
    conn: Connection,
    actor: audit.Actor,
    product_id: int,
    *,
    reason: object,
    at: datetime,
    change: int | None = None,
    new_stock: int | None = None,
) -> tuple[int, int]:
    """Add ``change`` to the stock, or set it to ``new_stock``; returns (before, after). The row
    is locked, so concurrent adjustments and checkouts add up instead of overwriting."""
    why = check_reason(reason)
    if (change is None) == (new_stock is None):
        raise ValueError("give change or new_stock")
    before = conn.execute(
        select(products.c.stock).where(products.c.id == product_id).with_for_update()
    ).scalar()
    if before is None:
        raise NotFound(f"There is no product {product_id}.")
    after = before + change if change is not None else new_stock
    assert after is not None
    if after < 0:
        raise InvalidInput(
            f"Stock cannot go below zero (it is {before}; the change is {after - before}).",
            field="change",
        )
    if after > MAX_STOCK:
        raise InvalidInput(f"Stock is at most {MAX_STOCK}.", field="change")
    if after == before:
        return before, after
    conn.execute(
        update(products)
        .where(products.c.id == product_id)
        .values(stock=after, updated_at=func.now())
    )
    conn.execute(
        insert(stock_adjustments).values(
            product_id=product_id,
            change=after - before,
            stock_after=after,
            reason=why,
            actor_id=actor.id,
            at=at,
        )
    )
    audit.record(
        conn,
        actor,
        "stock.adjust",
        entity="product",
        entity_id=product_id,
        before={"stock": before},
        after={"stock": after, "reason": why},
        at=at,
    )
    return before, after
