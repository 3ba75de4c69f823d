"""What stock needs attention, and what people did to it: the low-stock report, each product's
threshold, and the history of adjustments (made through :func:`shop.stock.adjust`).

A product is low when its stock is at or below its own threshold, or ``SHOP_LOW_STOCK_DEFAULT``
when it has none. Archived products are not sold, so never low. The report reads the active
products (a back-office page, not a shopper's path); both lists page by keyset, so a later
page costs what the first does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, func, or_, select, update

from . import audit
from .errors import InvalidInput, NotFound
from .models import MAX_ID, categories, products, stock_adjustments, users
from .stock import MAX_STOCK

_CURSOR = re.compile(r"(-?\d{1,11})_(\d{1,10})")
_CHANGE = re.compile(r"\s*([+-]?)\s*(\d{1,10})\s*")


@dataclass(frozen=True)
class LowStock:
    id: int
    name: str
    category: str
    stock: int
    threshold: int  # the one that applies
    own_threshold: int | None  # None: the shop's default applies

    @property
    def shortfall(self) -> int:
        """How far below (or at) its threshold: the report's order, worst first."""
        return self.stock - self.threshold

    @property
    def cursor(self) -> str:
        return f"{self.shortfall}_{self.id}"


def parse_cursor(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise InvalidInput("That page of the report does not exist.", field="after")
    return int(match.group(1)), int(match.group(2))


def low_stock(
    engine: Engine,
    *,
    default: int,
    category_id: int | None = None,
    after: tuple[int, int] | None = None,
    limit: int = 50,
) -> tuple[list[LowStock], str | None]:
    """Active products at or below their threshold, furthest below first, ``limit`` at a
    time; and the cursor of the next page (None: the last)."""
    threshold = func.coalesce(products.c.low_stock_threshold, default)
    shortfall = products.c.stock - threshold
    query = (
        select(
            products.c.id,
            products.c.name,
            categories.c.name.label("category"),
            products.c.stock,
            threshold.label("threshold"),
            products.c.low_stock_threshold,
        )
        .join(categories, categories.c.id == products.c.category_id)
        .where(products.c.archived_at.is_(None), products.c.stock <= threshold)
        .order_by(shortfall, products.c.id)
        .limit(limit + 1)
    )
    if category_id is not None:
        query = query.where(products.c.category_id == category_id)
    if after is not None:
        gap, last_id = after
        query = query.where(or_(shortfall > gap, and_(shortfall == gap, products.c.id > last_id)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found = [
        LowStock(r.id, r.name, r.category, r.stock, r.threshold, r.low_stock_threshold)
        for r in rows[:limit]
    ]
    return found, (found[-1].cursor if len(rows) > limit else None)


def category_choices(engine: Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(categories.c.id, categories.c.name).order_by(
                categories.c.position, categories.c.name
            )
        ).all()
    return [(row.id, row.name) for row in rows]


# -- thresholds ----------------------------------------------------------------------------


def parse_threshold(text: str | None) -> int | None:
    """A threshold as typed: blank is the shop's default (None), else a whole number."""
    if text is None:
        raise InvalidInput(
            "Give a threshold, or leave it blank for the default.", field="threshold"
        )
    if not text.strip():
        return None
    if not text.strip().isdigit() or len(text.strip()) > 10 or int(text) > MAX_STOCK:
        raise InvalidInput(
            "A threshold is a whole number of units (0 or more), or blank for the default.",
            field="threshold",
        )
    return int(text)


def set_threshold(
    conn: Connection,
    actor: audit.Actor,
    product_id: int,
    threshold: int | None,
    *,
    at: datetime,
) -> bool:
    """Set the product's own threshold (None: the default), audited in the caller's
    transaction. Returns whether anything changed."""
    before = conn.execute(
        select(products.c.id, products.c.low_stock_threshold, products.c.version)
        .where(products.c.id == product_id)
        .with_for_update()
    ).first()
    if before is None:
        raise NotFound(f"There is no product {product_id}.")
    if before.low_stock_threshold == threshold:
        return False
    conn.execute(
        update(products)
        .where(products.c.id == product_id)
        .values(low_stock_threshold=threshold, version=products.c.version + 1)
    )
    audit.record(
        conn,
        actor,
        "product.threshold",
        entity="product",
        entity_id=product_id,
        # The version too: an edit form opened before this change is refused, and says why.
        before={"low_stock_threshold": before.low_stock_threshold, "version": before.version},
        after={"low_stock_threshold": threshold, "version": before.version + 1},
        at=at,
    )
    return True


# -- adjustments ---------------------------------------------------------------------------


def parse_change(text: str | None) -> int:
    """A signed whole number of units, like ``-3``, ``+12`` or ``5``; never zero."""
    match = _CHANGE.fullmatch(text or "")
    if match is None:
        raise InvalidInput("A change is a whole number of units, like -3 or +12.", field="change")
    change = int(match.group(2)) * (-1 if match.group(1) == "-" else 1)
    if change == 0:
        raise InvalidInput("A change of 0 changes nothing.", field="change")
    if abs(change) > MAX_STOCK:
        raise InvalidInput(f"Stock is at most {MAX_STOCK}.", field="change")
    return change


@dataclass(frozen=True)
class Adjustment:
    id: int
    at: datetime
    actor: str  # the account's address now, or "command line"
    product_id: int
    product_name: str
    change: int
    stock_after: int
    reason: str


def adjustments(
    engine: Engine,
    *,
    product_id: int | None = None,
    before: int | None = None,
    limit: int = 50,
) -> tuple[list[Adjustment], int | None]:
    """Newest first, ``limit`` at a time, and the cursor of the next page (None: the last)."""
    query = (
        select(
            stock_adjustments,
            products.c.name.label("product_name"),
            users.c.email.label("actor_email"),
        )
        .join(products, products.c.id == stock_adjustments.c.product_id)
        .outerjoin(users, users.c.id == stock_adjustments.c.actor_id)
        .order_by(stock_adjustments.c.id.desc())
        .limit(limit + 1)
    )
    if product_id is not None:
        query = query.where(stock_adjustments.c.product_id == product_id)
    if before is not None:
        query = query.where(stock_adjustments.c.id < before)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found = [
        Adjustment(
            r.id,
            r.at,
            r.actor_email or "command line",
            r.product_id,
            r.product_name,
            r.change,
            r.stock_after,
            r.reason,
        )
        for r in rows[:limit]
    ]
    return found, (found[-1].id if len(rows) > limit else None)


@dataclass(frozen=True)
class ProductStock:
    id: int
    name: str
    stock: int
    own_threshold: int | None


def product_stock(engine: Engine, product_id: int) -> ProductStock:
    found = None
    if product_id <= MAX_ID:
        with engine.connect() as conn:
            found = conn.execute(
                select(
                    products.c.id,
                    products.c.name,
                    products.c.stock,
                    products.c.low_stock_threshold,
                ).where(products.c.id == product_id)
            ).first()
    if found is None:
        raise NotFound(f"There is no product {product_id}.")
    return ProductStock(found.id, found.name, found.stock, found.low_stock_threshold)
