"""The catalogue: queries on a read engine, served cache-aside through Redis.

Reads go to a replica (falling back to the primary) only on a cache miss. Writes to products go
to the primary through :func:`save_product` or checkout, and whoever writes calls
:meth:`Catalogue.invalidate` after the commit.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    false,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    update,
)

from .catalogue_cache import CacheAside
from .db import DatabaseUnavailable, Engines
from .errors import InvalidInput, NotFound
from .models import MAX_ID, SEARCH_VECTOR, categories, products
from .paging import Paging
from .product_images import query_images

log = logging.getLogger(__name__)

LOW_STOCK = 5
# Money is integer cents in 64-bit columns (migration 0005). A price is at most 999,999,999.99,
# and no line or order total may pass what the columns hold: checked where prices are written
# (save_product, the CLI) and where totals are computed (checkout).
MAX_PRICE_CENTS = 999_999_999_99
MAX_TOTAL_CENTS = 2**63 - 1
MAX_QUERY_LENGTH = 100
MAX_QUERY_WORDS = 8
SEARCH_COUNT_CAP = 1000
# What the shop shows: archived products are gone from it (grid, search, product page, API,
# carts), and stay only on past orders, which keep their own copy of the name and price.
ACTIVE = products.c.archived_at.is_(None)

_PRODUCT_COLUMNS = (
    products.c.id,
    products.c.name,
    products.c.description,
    products.c.price_cents,
    products.c.stock,
    categories.c.slug.label("category"),
)


def format_cents(cents: int) -> str:
    """``123456`` -> ``"1234.56"``: how an operator types a price."""
    return f"{cents // 100}.{cents % 100:02d}"


def stock_state(stock: int) -> str:
    """What a shopper is told: in stock, only N left, or sold out."""
    if stock <= 0:
        return "sold out"
    if stock <= LOW_STOCK:
        return f"only {stock} left"
    return "in stock"


def normalise_query(q: str | None) -> str:
    """Collapse whitespace; refuse what no search box would send."""
    words = (q or "").split()
    text = " ".join(words)
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidInput(f"Search text is limited to {MAX_QUERY_LENGTH} characters.", field="q")
    if len(words) > MAX_QUERY_WORDS:
        raise InvalidInput(f"Search with at most {MAX_QUERY_WORDS} words.", field="q")
    return text.lower()


def _like_pattern(word: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", word) + "%"


# -- queries (a read connection in, plain data out) ----------------------------------------


def query_categories(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(categories.c.id, categories.c.slug, categories.c.name).order_by(
            categories.c.position, categories.c.name, categories.c.id
        )
    )
    return [dict(row._mapping) for row in rows]


def query_product(conn: Connection, product_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(*_PRODUCT_COLUMNS)
        .join(categories, categories.c.id == products.c.category_id)
        .where(products.c.id == product_id, ACTIVE)
    ).first()
    if row is None:
        return None
    product = dict(row._mapping)
    product["images"] = query_images(conn, [product_id]).get(product_id, [])
    product["image"] = product["images"][0] if product["images"] else None
    return product


def search_condition(conn: Connection, q: str):
    """Every word must match (the shop's search and the back office's product list).
    PostgreSQL: word prefixes in the indexed tsvector; elsewhere: substrings of the name or
    description (a scan, fine for the embedded demo)."""
    words = q.split()
    if conn.dialect.name == "postgresql":
        terms = [re.sub(r"\W", "", word) for word in words]
        if not all(terms):
            return false()  # a word with nothing searchable in it matches nothing
        query = " & ".join(f"{term}:*" for term in terms)
        return literal_column(SEARCH_VECTOR).op("@@")(func.to_tsquery("simple", query))
    return and_(
        *(
            or_(
                products.c.name.ilike(_like_pattern(word), escape="\\"),
                products.c.description.ilike(_like_pattern(word), escape="\\"),
            )
            for word in words
        )
    )


def query_page(
    conn: Connection, *, category_id: int | None, q: str, page: int, per_page: int
) -> dict[str, Any]:
    """One page, ordered by id (an index walk), with a total that never counts the table:
    category counts are kept on the categories, and a search counts at most SEARCH_COUNT_CAP
    matches (``total_capped`` says when there are more)."""
    conditions: list[ColumnElement[bool]] = [ACTIVE]
    if category_id is not None:
        conditions.append(products.c.category_id == category_id)
    if q:
        conditions.append(search_condition(conn, q))
    where = and_(true(), *conditions)
    capped = False
    if q:
        matches: Select[Any] = select(literal_column("1")).select_from(products).where(where)
        counted = conn.execute(
            select(func.count()).select_from(matches.limit(SEARCH_COUNT_CAP + 1).subquery())
        ).scalar_one()
        total, capped = min(counted, SEARCH_COUNT_CAP), counted > SEARCH_COUNT_CAP
    else:
        counts = select(func.coalesce(func.sum(categories.c.product_count), 0))
        if category_id is not None:
            counts = counts.where(categories.c.id == category_id)
        total = conn.execute(counts).scalar_one()
    # Few matches: let the search index find them all and sort those (ordering by an
    # expression keeps PostgreSQL from walking the primary key, which it would otherwise do
    # for a LIMIT, reading the whole table to find a rare word). Many matches: the key walk
    # finds a page of them within a few hundred rows.
    order = products.c.id + 0 if q and not capped else products.c.id
    rows = conn.execute(
        select(*_PRODUCT_COLUMNS)
        .join(categories, categories.c.id == products.c.category_id)
        .where(where)
        .order_by(order)
        .limit(per_page)
        .offset((page - 1) * per_page)
    )
    items = [dict(row._mapping) for row in rows]
    # Each product's first image, for the whole page in one query.
    images = query_images(conn, [item["id"] for item in items], first_only=True)
    for item in items:
        item["image"] = images.get(item["id"], [None])[0]
    return {
        "items": items,
        "page": page,
        "per_page": per_page,
        "total": total,
        "total_capped": capped,
    }


def recount_categories(conn: Connection) -> None:
    """Set every category's product count from the products (after bulk loads); archived
    products are not counted, as the shop does not show them."""
    conn.execute(
        update(categories).values(
            product_count=select(func.count())
            .select_from(products)
            .where(products.c.category_id == categories.c.id, ACTIVE)
            .scalar_subquery()
        )
    )


# -- the cached catalogue ------------------------------------------------------------------


@dataclass(frozen=True)
class GridQuery:
    """A grid page in canonical form: two requests that show the same products are equal."""

    category: dict[str, Any] | None  # its record (id, slug, name), or None for every category
    text: str  # normalised (:func:`normalise_query`); "" when not a search
    page: int
    per_page: int

    @property
    def key_parts(self) -> tuple[object, ...]:
        digest = hashlib.sha1(self.text.encode()).hexdigest()[:16] if self.text else "-"
        category_id = self.category["id"] if self.category else "-"
        return ("l", category_id, digest, self.page, self.per_page)


@dataclass
class Catalogue:
    """The catalogue read cache-aside. ``changes`` is for a cache nobody else can reach (the
    embedded mode's in-process Redis): a marker of the database's writes
    (:class:`shop.db.SqliteChanges`) read before each lookup; when it moves, another process
    (the ``product`` command) may have changed anything, and the cache starts empty."""

    engines: Engines
    cache: CacheAside
    paging: Paging = field(default_factory=Paging)
    changes: Callable[[], int] | None = None
    _changes_seen: int | None = field(default=None, init=False, repr=False)

    @property
    def _replicated(self) -> bool:
        """Whether reads may go to a replica, behind the primary: only then do rebuilds read
        the write positions (shop/write_positions.py) and honour them."""
        return bool(self.engines.replicas)

    def _follow_other_writers(self) -> None:
        if self.changes is None:
            return
        seen, self._changes_seen = self._changes_seen, self.changes()
        if seen is None or seen == self._changes_seen:
            return
        keys = [self.cache.key("categories"), *self.cache.client.scan_iter(self.cache.key("p:*"))]
        self.cache.invalidate(keys=keys, structural=True)
        if self.cache.local is not None:
            self.cache.local.clear()

    def categories(self) -> list[dict[str, Any]]:
        self._follow_other_writers()
        return self.cache.get_or_load(
            self.cache.key("categories"),
            lambda position: self.engines.read(query_categories, min_position=position),
            is_list=True,
            honours_positions=self._replicated,
        )

    def category(self, slug: str) -> dict[str, Any]:
        for category in self.categories():
            if category["slug"] == slug:
                return category
        raise NotFound(f"There is no category {slug!r}.")

    def product(self, product_id: int) -> dict[str, Any]:
        if not 1 <= product_id <= MAX_ID:
            raise NotFound(f"There is no product {product_id}.")
        self._follow_other_writers()
        found = self.cache.get_or_load(
            self.cache.key("p", product_id),
            lambda position: self.engines.read(
                lambda conn: query_product(conn, product_id), min_position=position
            ),
            shows=(product_id,),
            honours_positions=self._replicated,
        )
        if found is None:
            raise NotFound(f"There is no product {product_id}.")
        return found

    def products(self, product_ids: list[int]) -> dict[int, dict[str, Any]]:
        """Several products by id (a cart's lines); ids that do not exist are left out."""
        found: dict[int, dict[str, Any]] = {}
        for product_id in product_ids:
            try:
                found[product_id] = self.product(product_id)
            except NotFound:
                continue
        return found

    def page(
        self,
        *,
        category: str | None,
        q: str | None,
        page: int,
        per_page: int,
        admit: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """One grid page of a category and/or a search (:meth:`grid_query`, then
        :meth:`read_page`)."""
        return self.read_page(
            self.grid_query(category=category, q=q, page=page, per_page=per_page), admit=admit
        )

    def grid_query(
        self, *, category: str | None, q: str | None, page: int, per_page: int
    ) -> GridQuery:
        """What a grid request asks for, in canonical form (the category's record, the
        normalised text): the one thing its cache keys and links are made of. Only the allowed
        page sizes and pages within the result window pass (400 otherwise); an unknown
        category is 404."""
        self.paging.check(page, per_page)
        self._follow_other_writers()
        found = self.category(category) if category else None
        return GridQuery(found, normalise_query(q), page, per_page)

    def read_page(
        self, query: GridQuery, *, admit: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """The page's products; 404 past the last page. ``admit`` is asked before the page is
        read from the database (see :meth:`CacheAside.get_or_load`): a rate limit raises
        from it."""
        self._follow_other_writers()
        category_id = query.category["id"] if query.category else None
        page, per_page = query.page, query.per_page
        result = self.cache.get_or_load(
            self.cache.key(*query.key_parts),
            lambda position: self.engines.read(
                lambda conn: query_page(
                    conn, category_id=category_id, q=query.text, page=page, per_page=per_page
                ),
                min_position=position,
            ),
            tags=lambda value: [item["id"] for item in value["items"]],
            is_list=True,
            admit=admit,
            honours_positions=self._replicated,
        )
        if page > 1 and not result["items"]:
            last = max(1, -(-result["total"] // per_page))
            raise NotFound(f"Page {page} does not exist; the last page is {last}.")
        return result

    def invalidate(self, product_ids: list[int], *, structural: bool = False) -> None:
        """After a committed write: drop cached entries that show these products, and make the
        rebuilds wait for a replica that has replayed the write (or read the primary)."""
        self.cache.invalidate(
            product_ids,
            keys=[self.cache.key("p", pid) for pid in product_ids],
            structural=structural,
            min_position=self._write_position(),
        )

    def _write_position(self) -> int:
        try:
            return self.engines.write_position()
        except DatabaseUnavailable as exc:  # the primary went away (or is busy) after the commit
            log.warning(
                "write position unknown, invalidating without it: %s", getattr(exc, "orig", exc)
            )
            return 0


# -- writes (the primary) ------------------------------------------------------------------


def save_product(
    conn: Connection,
    *,
    product_id: int | None = None,
    name: str | None = None,
    description: str | None = None,
    price_cents: int | None = None,
    stock: int | None = None,
    category_slug: str | None = None,
) -> int:
    """Insert (no id) or change (an id) a product; the caller commits and invalidates."""
    values: dict[str, Any] = {}
    if category_slug is not None:
        category_id = conn.execute(
            select(categories.c.id).where(categories.c.slug == category_slug)
        ).scalar()
        if category_id is None:
            category_id = conn.execute(
                insert(categories)
                .values(
                    slug=category_slug,
                    name=category_slug.replace("-", " ").title(),
                    position=select(
                        func.coalesce(func.max(categories.c.position) + 1, 0)
                    ).scalar_subquery(),
                )
                .returning(categories.c.id)
            ).scalar_one()
        values["category_id"] = category_id
    for column, value in (
        ("name", name),
        ("description", description),
        ("price_cents", price_cents),
        ("stock", stock),
    ):
        if value is not None:
            values[column] = value
    if price_cents is not None and price_cents < 0:
        raise InvalidInput("A price cannot be negative.", field="price")
    if price_cents is not None and price_cents > MAX_PRICE_CENTS:
        raise InvalidInput(f"A price is at most {format_cents(MAX_PRICE_CENTS)}.", field="price")
    if stock is not None and stock < 0:
        raise InvalidInput("Stock cannot be negative.", field="stock")
    if product_id is None:
        missing = {"name", "price_cents", "category_id"} - values.keys()
        if missing:
            raise InvalidInput(f"A new product needs: {', '.join(sorted(missing))}.")
        new_id = conn.execute(
            insert(products).values(**values).returning(products.c.id)
        ).scalar_one()
        _count_products(conn, values["category_id"], +1)
        return new_id
    values["updated_at"] = func.now()
    values["version"] = products.c.version + 1  # an open back-office form is now out of date
    row = conn.execute(
        select(products.c.category_id, products.c.archived_at)
        .where(products.c.id == product_id)
        .with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"There is no product {product_id}.")
    before = row.category_id
    conn.execute(update(products).where(products.c.id == product_id).values(**values))
    if values.get("category_id", before) != before and row.archived_at is None:
        _count_products(conn, before, -1)
        _count_products(conn, values["category_id"], +1)
    return product_id


def _count_products(conn: Connection, category_id: int, change: int) -> None:
    conn.execute(
        update(categories)
        .where(categories.c.id == category_id)
        .values(product_count=categories.c.product_count + change)
    )
