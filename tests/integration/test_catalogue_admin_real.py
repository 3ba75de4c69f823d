"""The back office's catalogue on PostgreSQL: of two concurrent saves of one version exactly
one wins; the staff's list walks an index for every sort (no Sort over the table) and its
keyset pages neither repeat nor skip; every change's audit entry commits with it or not at all."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, event, func, select, text

from shop import audit, catalogue_admin, category_admin, product_csv
from shop.errors import EditConflict
from shop.models import audit_log, products
from shop.product_list import SORTS, ProductFilter, list_products
from tests.support import KETTLE

NOW = datetime(2026, 12, 3, tzinfo=UTC)
ANN = audit.Actor(None, "ann@example.com", "staff")
BOB = audit.Actor(None, "bob@example.com", "staff")
ROWS = 20_000


def _form(**changes) -> catalogue_admin.ProductForm:
    values = {
        "name": "Blue Kettle",
        "category": "kitchen",
        "price": "19.99",
        "description": "Boils water fast.",
    }
    return catalogue_admin.ProductForm.parse({**values, **changes})


def test_of_two_concurrent_saves_of_one_version_exactly_one_wins(pg_url):
    engine = create_engine(pg_url, pool_size=4)
    start = threading.Barrier(2)

    def save(actor: audit.Actor, price: str) -> str:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))  # connected before the race starts
            conn.commit()
            start.wait()
            try:
                with conn.begin():
                    catalogue_admin.edit_product(
                        conn, actor, KETTLE, _form(price=price), version=1, at=NOW
                    )
            except EditConflict as exc:
                return exc.message
            return "saved"

    for _ in range(5):
        with engine.begin() as conn:  # both start from version 1 each round
            conn.execute(text("UPDATE products SET version = 1, price_cents = 1999 WHERE id = 1"))
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(save, (ANN, BOB), ("21.00", "22.00")))
        assert results.count("saved") == 1, results
        [refused] = [r for r in results if r != "saved"]
        assert "was changed by someone else since you opened it" in refused
        winner = ANN if results[0] == "saved" else BOB
        with engine.connect() as conn:
            price, version = conn.execute(
                select(products.c.price_cents, products.c.version).where(products.c.id == KETTLE)
            ).one()
            last = audit.entries(engine, entity="product", limit=1)[0]
        assert version == 2 and price == (2100 if winner is ANN else 2200)
        assert last.actor == winner.email and last.after["version"] == 2
    with engine.connect() as conn:  # one entry per saved edit, none for the refused ones
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == 5
    engine.dispose()


@pytest.fixture
def big_catalogue(pg_url):
    """ROWS products more, with repeated names, prices and stock (ties for the id to break)."""
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO products (category_id, name, description, price_cents, stock, "
                "updated_at) SELECT 1 + g % 2, 'Item ' || (g % 500), 'demo', 100 + g % 997, "
                "g % 40, now() - (g % 3000) * interval '1 minute' "
                "FROM generate_series(1, :rows) AS g"
            ),
            {"rows": ROWS},
        )
        conn.execute(text("UPDATE products SET archived_at = now() WHERE id % 101 = 0"))
        conn.execute(text("ANALYZE products"))
    yield engine
    engine.dispose()


def _statements(engine) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listener)
    return seen


@pytest.mark.parametrize("sort", [*SORTS, *(f"-{s}" for s in SORTS)])
def test_every_sort_is_an_index_walk_and_pages_cover_every_row_once(big_catalogue, sort):
    engine = big_catalogue
    statements = _statements(engine)
    wanted, seen, pages = ProductFilter(sort=sort, status="all"), [], 0
    with engine.connect() as conn:
        while True:
            page = list_products(conn, wanted, low_stock_default=5, per_page=500)
            seen += [item["id"] for item in page.items]
            pages += 1
            if pages == 2:  # a page after a cursor: the plan of a deep page
                query, parameters = statements[-1]
                plan = "\n".join(
                    conn.exec_driver_sql("EXPLAIN " + query, parameters).scalars().all()
                )
                assert "Index Scan" in plan, plan
                assert "Sort" not in plan.replace("Sort Key", ""), plan
                assert "Seq Scan on products" not in plan, plan
            if page.next_cursor is None:
                break
            wanted = ProductFilter(sort=sort, status="all", after=page.next_cursor)
        total = conn.execute(select(func.count()).select_from(products)).scalar_one()
    assert len(seen) == len(set(seen)) == total


def test_the_list_filters_and_searches_on_postgresql(big_catalogue):
    with big_catalogue.connect() as conn:
        found = list_products(
            conn, ProductFilter(q="item 7", sort="-price"), low_stock_default=5, per_page=50
        )
        archived = list_products(
            conn, ProductFilter(status="archived"), low_stock_default=5, per_page=50
        )
        low = list_products(conn, ProductFilter(stock="low"), low_stock_default=5, per_page=50)
    prices = [item["price_cents"] for item in found.items]
    assert prices == sorted(prices, reverse=True) and found.items
    assert all(item["name"].startswith("Item 7") for item in found.items)
    assert archived.items and all(item["id"] % 101 == 0 for item in archived.items)
    assert archived.total_capped is False
    assert all(0 < item["stock"] <= 5 for item in low.items) and low.total_capped


def test_audit_entries_commit_with_their_change_or_not_at_all(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        new_id = catalogue_admin.create_product(
            conn, ANN, _form(name="Whisk"), initial_stock=3, at=NOW
        )
        catalogue_admin.edit_product(conn, ANN, new_id, _form(name="Whisk 2"), version=1, at=NOW)
        catalogue_admin.set_archived(conn, ANN, new_id, archived=True, at=NOW)
        catalogue_admin.set_archived(conn, ANN, new_id, archived=False, at=NOW)
        category_id = category_admin.create_category(
            conn, ANN, slug="garden", name="Garden", at=NOW
        )
        category_admin.rename_category(conn, ANN, category_id, name="Gardening", at=NOW)
        category_admin.move_category(conn, ANN, category_id, direction="up", at=NOW)
    with pytest.raises(product_csv.ImportRefused), engine.begin() as conn:
        product_csv.apply(conn, ANN, "id,price\n1,2.00\n2,x\n", reason="", seen="", at=NOW)
    with pytest.raises(EditConflict), engine.begin() as conn:  # a stale version: nothing
        catalogue_admin.edit_product(conn, BOB, new_id, _form(name="Late"), version=1, at=NOW)
    with engine.begin() as conn:  # a failure after the change: its entry goes with it
        try:
            with conn.begin_nested():
                catalogue_admin.edit_product(
                    conn, BOB, new_id, _form(name="Undone"), version=4, at=NOW
                )
                raise RuntimeError("the rest of the request failed")
        except RuntimeError:
            pass
    actions = [e.action for e in reversed(audit.entries(engine))]
    assert actions == [
        "product.create",
        "stock.adjust",
        "product.update",
        "product.archive",
        "product.unarchive",
        "category.create",
        "category.rename",
        "category.move",
    ]
    with engine.connect() as conn:
        name = conn.execute(select(products.c.name).where(products.c.id == new_id)).scalar_one()
    assert name == "Whisk 2"
    engine.dispose()
