"""A product's pictures: which stored variants, in what order, with what alternative text.

The back office adds, removes, reorders and re-describes them here, each change with its
audit entry in the change's transaction; the caller commits and then refreshes the
catalogue's cache for the product. The catalogue reads them with :func:`query_images`, in the
same loader as the products, so they are cached (and invalidated) with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update

from . import audit
from .audit import Actor
from .errors import InvalidInput, NotFound
from .images import Variant, check_alt
from .models import product_images, products

MAX_IMAGES = 12  # per product: more is a gallery nobody scrolls, and a larger cache entry


@dataclass(frozen=True)
class ProductImage:
    id: int
    product_id: int
    position: int
    alt: str
    variants: list[Variant]

    def as_json(self) -> dict[str, Any]:
        """What the catalogue caches and pages show: the text and the variants."""
        return {"id": self.id, "alt": self.alt, "variants": [v.as_json() for v in self.variants]}


def _image(row: Any) -> ProductImage:
    return ProductImage(
        id=row.id,
        product_id=row.product_id,
        position=row.position,
        alt=row.alt,
        variants=[Variant.from_json(v) for v in json.loads(row.variants)],
    )


def _ordered() -> Any:
    return select(product_images).order_by(
        product_images.c.product_id, product_images.c.position, product_images.c.id
    )


def images_of(engine: Engine, product_id: int) -> list[ProductImage]:
    """A product's images in order (the back office reads the primary)."""
    with engine.connect() as conn:
        rows = conn.execute(_ordered().where(product_images.c.product_id == product_id))
        return [_image(row) for row in rows]


def query_images(
    conn: Connection, product_ids: Iterable[int], *, first_only: bool = False
) -> dict[int, list[dict[str, Any]]]:
    """The images of several products in one query, by product id (``first_only``: each one's
    first, for a grid page)."""
    ids = sorted(set(product_ids))
    found: dict[int, list[dict[str, Any]]] = {}
    if not ids:
        return found
    for row in conn.execute(_ordered().where(product_images.c.product_id.in_(ids))):
        listed = found.setdefault(row.product_id, [])
        if not (first_only and listed):
            listed.append(_image(row).as_json())
    return found


def _lock_product(conn: Connection, product_id: int) -> str:
    """The product's name, its row locked: one image change per product at a time, so two
    uploads cannot take the same position."""
    name = conn.execute(
        select(products.c.name).where(products.c.id == product_id).with_for_update()
    ).scalar()
    if name is None:
        raise NotFound(f"There is no product {product_id}.")
    return name


def _get(conn: Connection, product_id: int, image_id: int) -> ProductImage:
    row = conn.execute(
        select(product_images).where(
            product_images.c.id == image_id, product_images.c.product_id == product_id
        )
    ).first()
    if row is None:
        raise NotFound(f"Product {product_id} has no image {image_id}.")
    return _image(row)


def add(
    conn: Connection,
    actor: Actor,
    product_id: int,
    *,
    variants: list[Variant],
    alt: str,
    at: datetime,
) -> ProductImage:
    """Add an image (its variants already stored) after the product's others."""
    _lock_product(conn, product_id)
    alt = check_alt(alt)
    count, last = conn.execute(
        select(func.count(), func.max(product_images.c.position)).where(
            product_images.c.product_id == product_id
        )
    ).one()
    if count >= MAX_IMAGES:
        raise InvalidInput(
            f"A product has at most {MAX_IMAGES} images: remove one first.", field="image"
        )
    position = (last or 0) + 1
    encoded = json.dumps([v.as_json() for v in variants])
    image_id = conn.execute(
        insert(product_images)
        .values(product_id=product_id, position=position, alt=alt, variants=encoded, created_at=at)
        .returning(product_images.c.id)
    ).scalar_one()
    audit.record(
        conn,
        actor,
        "product.image_add",
        entity="product",
        entity_id=product_id,
        after={"image": image_id, "alt": alt, "variants": [v.name for v in variants]},
        at=at,
    )
    return ProductImage(image_id, product_id, position, alt, variants)


def remove(conn: Connection, actor: Actor, product_id: int, image_id: int, *, at: datetime) -> None:
    """Take an image off the product (its stored variants stay: see shop/image_storage.py)."""
    _lock_product(conn, product_id)
    image = _get(conn, product_id, image_id)
    conn.execute(delete(product_images).where(product_images.c.id == image_id))
    audit.record(
        conn,
        actor,
        "product.image_remove",
        entity="product",
        entity_id=product_id,
        before={"image": image_id, "alt": image.alt, "position": image.position},
        at=at,
    )


def move(
    conn: Connection,
    actor: Actor,
    product_id: int,
    image_id: int,
    *,
    direction: str,
    at: datetime,
) -> bool:
    """Swap an image with the one before (``up``) or after (``down``) it; False when it is
    already first or last (nothing changes, nothing is recorded)."""
    if direction not in ("up", "down"):
        raise InvalidInput("Move an image up or down.", field="direction")
    _lock_product(conn, product_id)
    image = _get(conn, product_id, image_id)
    column = product_images.c.position
    neighbour = conn.execute(
        select(product_images.c.id, column)
        .where(
            product_images.c.product_id == product_id,
            column < image.position if direction == "up" else column > image.position,
        )
        .order_by(column.desc() if direction == "up" else column)
        .limit(1)
    ).first()
    if neighbour is None:
        return False
    conn.execute(
        update(product_images)
        .where(product_images.c.id == image_id)
        .values(position=neighbour.position)
    )
    conn.execute(
        update(product_images)
        .where(product_images.c.id == neighbour.id)
        .values(position=image.position)
    )
    audit.record(
        conn,
        actor,
        "product.image_move",
        entity="product",
        entity_id=product_id,
        before={"image": image_id, "position": image.position},
        after={"image": image_id, "position": neighbour.position},
        at=at,
    )
    return True


def describe(
    conn: Connection, actor: Actor, product_id: int, image_id: int, *, alt: str, at: datetime
) -> bool:
    """Change an image's alternative text; False when it is the same (nothing recorded)."""
    _lock_product(conn, product_id)
    image = _get(conn, product_id, image_id)
    alt = check_alt(alt)
    if alt == image.alt:
        return False
    conn.execute(update(product_images).where(product_images.c.id == image_id).values(alt=alt))
    audit.record(
        conn,
        actor,
        "product.image_alt",
        entity="product",
        entity_id=product_id,
        before={"image": image_id, "alt": image.alt},
        after={"image": image_id, "alt": alt},
        at=at,
    )
    return True
