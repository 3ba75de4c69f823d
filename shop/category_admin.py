"""Categories in the back office: create, rename, and the order of the shop's category bar.

Each change is written with its audit entry in the caller's transaction; the caller commits and
invalidates the catalogue structurally (every page shows the category bar).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update

from . import audit
from .errors import InvalidInput, NotFound
from .models import MAX_ID, categories

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_SLUG = 80
MAX_NAME = 120


@dataclass(frozen=True)
class Category:
    id: int
    slug: str
    name: str
    position: int
    product_count: int


def list_categories(conn: Connection) -> list[Category]:
    """In the shop's order: position, then name."""
    rows = conn.execute(
        select(
            categories.c.id,
            categories.c.slug,
            categories.c.name,
            categories.c.position,
            categories.c.product_count,
        ).order_by(categories.c.position, categories.c.name, categories.c.id)
    )
    return [Category(**row._mapping) for row in rows]


def _name(text: object) -> str:
    name = " ".join(text.split()) if isinstance(text, str) else ""
    if not name:
        raise InvalidInput("Give the category a name.", field="name")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"A category name is at most {MAX_NAME} characters.", field="name")
    return name


def _get(conn: Connection, category_id: int) -> Category:
    if not 1 <= category_id <= MAX_ID:
        raise NotFound(f"There is no category {category_id}.")
    for category in list_categories(conn):
        if category.id == category_id:
            return category
    raise NotFound(f"There is no category {category_id}.")


def create_category(
    conn: Connection, actor: audit.Actor, *, slug: object, name: object, at: datetime
) -> int:
    """A new category, last in the bar. The slug is its address (/?category=<slug>)."""
    text = slug.strip().lower() if isinstance(slug, str) else ""
    if not text or len(text) > MAX_SLUG or not _SLUG.fullmatch(text):
        raise InvalidInput(
            f"A slug is 1 to {MAX_SLUG} lowercase letters, digits and single hyphens, like "
            "garden-tools.",
            field="slug",
        )
    title = _name(name)
    if conn.execute(select(categories.c.id).where(categories.c.slug == text)).first():
        raise InvalidInput(f"There is already a category {text!r}.", field="slug")
    position = conn.execute(
        select(func.coalesce(func.max(categories.c.position) + 1, 0))
    ).scalar_one()
    category_id = conn.execute(
        insert(categories)
        .values(slug=text, name=title, position=position)
        .returning(categories.c.id)
    ).scalar_one()
    audit.record(
        conn,
        actor,
        "category.create",
        entity="category",
        entity_id=category_id,
        after={"slug": text, "name": title, "position": position},
        at=at,
    )
    return category_id


def rename_category(
    conn: Connection, actor: audit.Actor, category_id: int, *, name: object, at: datetime
) -> bool:
    """False when the name is the same."""
    current = _get(conn, category_id)
    title = _name(name)
    if title == current.name:
        return False
    conn.execute(update(categories).where(categories.c.id == category_id).values(name=title))
    audit.record(
        conn,
        actor,
        "category.rename",
        entity="category",
        entity_id=category_id,
        before={"name": current.name},
        after={"name": title},
        at=at,
    )
    return True


def move_category(
    conn: Connection, actor: audit.Actor, category_id: int, *, direction: object, at: datetime
) -> bool:
    """One place up or down the bar; False at either end. Positions are renumbered 0..n-1 in
    the current order first, so categories that shared a position (made by the command line)
    move predictably."""
    if direction not in ("up", "down"):
        raise InvalidInput("Move a category up or down.", field="direction")
    _get(conn, category_id)
    ordered = list_categories(conn)
    index = next(i for i, c in enumerate(ordered) if c.id == category_id)
    other = index - 1 if direction == "up" else index + 1
    if not 0 <= other < len(ordered):
        return False
    ordered[index], ordered[other] = ordered[other], ordered[index]
    for position, category in enumerate(ordered):
        if category.position != position:
            conn.execute(
                update(categories).where(categories.c.id == category.id).values(position=position)
            )
    audit.record(
        conn,
        actor,
        "category.move",
        entity="category",
        entity_id=category_id,
        before={"position": index},
        after={"position": other, "direction": direction},
        at=at,
    )
    return True
