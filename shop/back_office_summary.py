"""What the back office's overview shows first: the work waiting for staff (orders to ship,
orders awaiting payment, products running low), each count capped so the page costs the same
at any size of shop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, func, literal_column, select

from .models import orders, products
from .order_lifecycle import PAID, PENDING

CAP = 100


@dataclass(frozen=True)
class Summary:
    to_ship: int
    awaiting_payment: int
    low_stock: int
    cap: int = CAP

    def shown(self, count: int) -> str:
        return f"{self.cap}+" if count > self.cap else str(count)


def _capped(conn: Connection, query: Select[Any]) -> int:
    return conn.execute(
        select(func.count()).select_from(query.limit(CAP + 1).subquery())
    ).scalar_one()


def summary(engine: Engine, *, low_stock_default: int) -> Summary:
    """Counts up to CAP (then "100+"): an index range for each order status; the low-stock
    count stops at its CAP+1st product."""
    one: ColumnElement[Any] = literal_column("1")
    threshold = func.coalesce(products.c.low_stock_threshold, low_stock_default)
    with engine.connect() as conn:
        return Summary(
            to_ship=_capped(conn, select(one).select_from(orders).where(orders.c.status == PAID)),
            awaiting_payment=_capped(
                conn, select(one).select_from(orders).where(orders.c.status == PENDING)
            ),
            low_stock=_capped(
                conn,
                select(one)
                .select_from(products)
                .where(products.c.archived_at.is_(None), products.c.stock <= threshold),
            ),
        )
