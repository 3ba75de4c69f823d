"""The back office's product list: search, filters, sorts, a page at a time.

Pages are keyset pages on (sort column, id): each is an index walk from the previous page's last
row (the cursor), whatever its depth, with the indexes of migration 0008; nothing is skipped
with OFFSET and the table is never counted (the count stops at COUNT_CAP). The search is the
shop's own (:func:`shop.catalogue.search_condition`).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    func,
    literal_column,
    select,
    true,
    tuple_,
    type_coerce,
)

from .catalogue import ACTIVE, normalise_query, search_condition
from .errors import InvalidInput
from .models import MAX_ID, categories, products

PAGE_SIZE = 50
COUNT_CAP = 1000  # the list says "1000+" rather than count a million rows
SORTS = ("id", "name", "price", "stock", "updated")
_SORT_COLUMNS = {
    "id": products.c.id,
    "name": products.c.name,
    "price": products.c.price_cents,
    "stock": products.c.stock,
    "updated": products.c.updated_at,
}
STOCK_STATES = {"in_stock": "In stock", "low": "Low", "sold_out": "Sold out"}
STATUSES = {"active": "Active", "archived": "Archived", "all": "All"}


@dataclass(frozen=True)
class ProductFilter:
    """What the staff's list shows: ``sort`` is a key of SORTS, ``-`` first for descending;
    ``after`` the cursor of the previous page's last row."""

    q: str = ""
    category: str = ""
    stock: str = ""
    status: str = "active"
    sort: str = "id"
    after: str = ""

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> ProductFilter:
        found = cls(
            q=normalise_query(args.get("q", "")),
            category=args.get("category", "").strip(),
            stock=args.get("stock", "").strip(),
            status=args.get("status", "").strip() or "active",
            sort=args.get("sort", "").strip() or "id",
            after=args.get("after", "").strip(),
        )
        if found.stock and found.stock not in STOCK_STATES:
            raise InvalidInput("Stock is in_stock, low or sold_out.", field="stock")
        if found.status not in STATUSES:
            raise InvalidInput("Status is active, archived or all.", field="status")
        if found.sort.removeprefix("-") not in SORTS:
            raise InvalidInput(f"Sort by one of {', '.join(SORTS)}.", field="sort")
        return found

    @property
    def sort_key(self) -> str:
        return self.sort.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")

    def args(self, **changes: str) -> dict[str, str]:
        """The non-default values as query arguments (for links), with ``changes``."""
        values = {
            "q": self.q,
            "category": self.category,
            "stock": self.stock,
            "status": "" if self.status == "active" else self.status,
            "sort": "" if self.sort == "id" else self.sort,
            **changes,
        }
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class ProductPage:
    items: list[dict[str, Any]]
    next_cursor: str | None
    total: int  # at most COUNT_CAP
    total_capped: bool


def _cursor(sort: str, value: Any, product_id: int) -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps([sort, value, product_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_cursor(text: str, sort: str, *, postgres: bool) -> tuple[Any, int]:
    bad = InvalidInput("This page link is out of date; start from the first page.", field="after")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        name, value, product_id = json.loads(raw)
    except (ValueError, TypeError, binascii.Error):
        raise bad from None
    if name != sort or not isinstance(product_id, int) or not 0 <= product_id <= MAX_ID:
        raise bad
    expected = {"name": str, "updated": str}.get(sort, int)
    if not isinstance(value, expected) or isinstance(value, bool):
        raise bad
    if sort == "updated" and postgres:
        try:
            value = datetime.fromisoformat(str(value))
        except ValueError:
            raise bad from None
    return value, product_id


def _sort_column(conn: Connection, sort: str):
    column = _SORT_COLUMNS[sort]
    if sort == "updated" and conn.dialect.name == "sqlite":
        # SQLite keeps the time as text: compare and hand out the text itself, so that the
        # cursor matches the stored value exactly.
        return type_coerce(column, String)
    return column


def filter_condition(conn: Connection, wanted: ProductFilter, *, low_stock_default: int):
    """The WHERE of the list (and of its CSV download)."""
    conditions: list[ColumnElement[bool]] = []
    if wanted.status == "active":
        conditions.append(ACTIVE)
    elif wanted.status == "archived":
        conditions.append(products.c.archived_at.is_not(None))
    if wanted.category:
        category_id = conn.execute(
            select(categories.c.id).where(categories.c.slug == wanted.category)
        ).scalar()
        if category_id is None:
            raise InvalidInput(f"There is no category {wanted.category!r}.", field="category")
        conditions.append(products.c.category_id == category_id)
    threshold = func.coalesce(products.c.low_stock_threshold, low_stock_default)
    if wanted.stock == "sold_out":
        conditions.append(products.c.stock <= 0)
    elif wanted.stock == "low":
        conditions.append(and_(products.c.stock > 0, products.c.stock <= threshold))
    elif wanted.stock == "in_stock":
        conditions.append(products.c.stock > threshold)
    if wanted.q:
        conditions.append(search_condition(conn, wanted.q))
    return and_(true(), *conditions)


def list_products(
    conn: Connection, wanted: ProductFilter, *, low_stock_default: int, per_page: int = PAGE_SIZE
) -> ProductPage:
    """One page in (sort column, id) order after ``wanted.after``: an index walk from the
    cursor (migration 0008), never OFFSET, and a count that stops at COUNT_CAP."""
    where = filter_condition(conn, wanted, low_stock_default=low_stock_default)
    matches: Select[Any] = (
        select(literal_column("1")).select_from(products).where(where).limit(COUNT_CAP + 1)
    )
    counted = conn.execute(select(func.count()).select_from(matches.subquery())).scalar_one()

    column = _sort_column(conn, wanted.sort_key)
    page_where = where
    if wanted.after:
        value, last_id = _read_cursor(
            wanted.after, wanted.sort_key, postgres=conn.dialect.name == "postgresql"
        )
        key, seen = tuple_(column, products.c.id), tuple_(value, last_id)
        page_where = and_(where, key < seen if wanted.descending else key > seen)
    order = column
    if wanted.q and counted <= COUNT_CAP and wanted.sort_key != "id":
        # Few matches: let the search index find them and sort those, rather than walk the
        # sort's index through the whole table looking for them (as the shop's grid does).
        order = func.coalesce(column, column)
    rows = conn.execute(
        select(
            products.c.id,
            products.c.name,
            products.c.price_cents,
            products.c.stock,
            products.c.low_stock_threshold,
            products.c.archived_at,
            products.c.updated_at,
            categories.c.slug.label("category"),
            categories.c.name.label("category_name"),
            column.label("sort_value"),
        )
        .join(categories, categories.c.id == products.c.category_id)
        .where(page_where)
        .order_by(
            order.desc() if wanted.descending else order,
            products.c.id.desc() if wanted.descending else products.c.id,
        )
        .limit(per_page + 1)
    ).all()
    items = [dict(row._mapping) for row in rows[:per_page]]
    for item in items:
        limit = item["low_stock_threshold"]
        item["low"] = 0 < item["stock"] <= (low_stock_default if limit is None else limit)
    next_cursor = None
    if len(rows) > per_page:
        last = items[-1]
        next_cursor = _cursor(wanted.sort_key, last.pop("sort_value"), last["id"])
    return ProductPage(items, next_cursor, min(counted, COUNT_CAP), counted > COUNT_CAP)
