"""Products in the back office: creating, editing, archiving (the list: shop.product_list).

Every change is written on the primary with its audit entry in the caller's transaction; the
caller commits, then invalidates the catalogue (structurally when a list changes shape: a
product added, archived, restored or moved to another category). An edit is saved only over the
version the form was loaded at (``products.version``, optimistic locking): of two people editing
one product, the later save is refused with :class:`EditConflict` instead of undoing the earlier.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from . import audit, stock
from .errors import EditConflict, InvalidInput, NotFound
from .models import MAX_ID, audit_log, categories, products
from .money import parse_price

MAX_NAME = 200
MAX_DESCRIPTION = 5000
MAX_THRESHOLD = stock.MAX_STOCK
# The fields a product form edits, as the audit trail names them.
EDITED = ("name", "description", "price_cents", "category", "low_stock_threshold")


def load_product(conn: Connection, product_id: int) -> dict[str, Any]:
    """A product as the back office edits it, archived or not."""
    if not 1 <= product_id <= MAX_ID:
        raise NotFound(f"There is no product {product_id}.")
    row = conn.execute(
        select(products, categories.c.slug.label("category"))
        .join(categories, categories.c.id == products.c.category_id)
        .where(products.c.id == product_id)
    ).first()
    if row is None:
        raise NotFound(f"There is no product {product_id}.")
    return dict(row._mapping)


@dataclass(frozen=True)
class ProductForm:
    """What a person typed into the product form, checked."""

    name: str
    description: str
    price_cents: int
    category: str  # a slug
    low_stock_threshold: int | None

    @classmethod
    def parse(cls, form: Mapping[str, str]) -> ProductForm:
        name = " ".join(form.get("name", "").split())
        if not name:
            raise InvalidInput("Give the product a name.", field="name")
        if len(name) > MAX_NAME:
            raise InvalidInput(f"A name is at most {MAX_NAME} characters.", field="name")
        description = form.get("description", "").strip().replace("\r\n", "\n")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput(
                f"A description is at most {MAX_DESCRIPTION} characters.", field="description"
            )
        category = form.get("category", "").strip()
        if not category:
            raise InvalidInput("Choose a category.", field="category")
        price = form.get("price", "")
        if not price.strip():
            raise InvalidInput("Give a price like 12.34.", field="price")
        return cls(
            name=name,
            description=description,
            price_cents=parse_price(price),
            category=category,
            low_stock_threshold=_threshold(form.get("low_stock_threshold", "")),
        )

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in EDITED}


def _threshold(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 10 or int(text) > MAX_THRESHOLD:
        raise InvalidInput(
            "The low-stock level is a whole number of at least 0, or blank for the shop's default.",
            field="low_stock_threshold",
        )
    return int(text)


def parse_stock(text: str, field: str = "stock") -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 10 or int(text) > stock.MAX_STOCK:
        raise InvalidInput(f"Stock is a whole number from 0 to {stock.MAX_STOCK}.", field=field)
    return int(text)


def _category_id(conn: Connection, slug: str) -> int:
    found = conn.execute(select(categories.c.id).where(categories.c.slug == slug)).scalar()
    if found is None:
        raise InvalidInput(f"There is no category {slug!r}.", field="category")
    return found


def count_in_category(conn: Connection, category_id: int, change: int) -> None:
    """Keep ``categories.product_count`` (active products only) as products come and go."""
    conn.execute(
        update(categories)
        .where(categories.c.id == category_id)
        .values(product_count=categories.c.product_count + change)
    )


def create_product(
    conn: Connection, actor: audit.Actor, form: ProductForm, *, initial_stock: int, at: datetime
) -> int:
    category_id = _category_id(conn, form.category)
    values = {
        "name": form.name,
        "description": form.description,
        "price_cents": form.price_cents,
        "low_stock_threshold": form.low_stock_threshold,
    }
    product_id = conn.execute(
        insert(products)
        .values(**values, category_id=category_id, stock=0, version=1)
        .returning(products.c.id)
    ).scalar_one()
    count_in_category(conn, category_id, +1)
    audit.record(
        conn,
        actor,
        "product.create",
        entity="product",
        entity_id=product_id,
        after={**form.values(), "version": 1},
        at=at,
    )
    if initial_stock:
        stock.adjust(
            conn, actor, product_id, new_stock=initial_stock, reason="initial stock", at=at
        )
    return product_id


def edit_product(
    conn: Connection,
    actor: audit.Actor,
    product_id: int,
    form: ProductForm,
    *,
    version: int,
    at: datetime,
) -> dict[str, Any]:
    """Save the form over ``version`` (the one it was loaded at); returns the fields that
    changed (empty: nothing to save). A newer version raises EditConflict and saves nothing."""
    current = load_product(conn, product_id)
    if current["version"] != version:
        raise _conflict(conn, current, version)
    before, after = audit.diff({name: current[name] for name in EDITED}, form.values())
    if not after:
        return after
    values: dict[str, Any] = {k: v for k, v in after.items() if k != "category"}
    if "category" in after:
        values["category_id"] = _category_id(conn, form.category)
    saved = conn.execute(
        update(products)
        .where(products.c.id == product_id, products.c.version == version)
        .values(**values, version=version + 1, updated_at=func.now())
    )
    if saved.rowcount != 1:  # changed between the read above and this update
        raise _conflict(conn, load_product(conn, product_id), version)
    if "category_id" in values and current["archived_at"] is None:
        count_in_category(conn, current["category_id"], -1)
        count_in_category(conn, values["category_id"], +1)
    audit.record(
        conn,
        actor,
        "product.update",
        entity="product",
        entity_id=product_id,
        before={**before, "version": version},
        after={**after, "version": version + 1},
        at=at,
    )
    return after


def set_archived(
    conn: Connection, actor: audit.Actor, product_id: int, *, archived: bool, at: datetime
) -> bool:
    """Archive (gone from the shop, kept on past orders) or restore; False when it already
    was. Either raises the version, so a form opened before is refused."""
    current = load_product(conn, product_id)
    if (current["archived_at"] is not None) == archived:
        return False
    state = products.c.archived_at.is_(None) if archived else products.c.archived_at.is_not(None)
    conn.execute(
        update(products)
        .where(products.c.id == product_id, state)
        .values(
            archived_at=at if archived else None,
            version=products.c.version + 1,
            updated_at=func.now(),
        )
    )
    count_in_category(conn, current["category_id"], -1 if archived else +1)
    audit.record(
        conn,
        actor,
        "product.archive" if archived else "product.unarchive",
        entity="product",
        entity_id=product_id,
        before={"archived": not archived, "version": current["version"]},
        after={"archived": archived, "version": current["version"] + 1},
        at=at,
    )
    return True


def _conflict(conn: Connection, current: dict[str, Any], loaded: int) -> EditConflict:
    """Name what changed since version ``loaded``, and by whom, from the audit trail."""
    rows = conn.execute(
        select(audit_log.c.actor, audit_log.c.after)
        .where(audit_log.c.entity == "product", audit_log.c.entity_id == str(current["id"]))
        .order_by(audit_log.c.id.desc())
        .limit(20)
    ).all()
    fields: list[str] = []
    people: list[str] = []
    for row in rows:
        after = json.loads(row.after) if row.after else {}
        if not isinstance(after.get("version"), int) or after["version"] <= loaded:
            continue
        fields += [
            name.replace("_cents", "").replace("_", " ") for name in after if name != "version"
        ]
        people.append(row.actor)
    what = ""
    if fields:
        what = f" ({', '.join(dict.fromkeys(fields))}, by {', '.join(dict.fromkeys(people))})"
    return EditConflict(
        f"{current['name']} was changed by someone else since you opened it{what}; your changes "
        "were not saved. Here is the product as it is now."
    )
