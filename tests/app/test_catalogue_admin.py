"""The catalogue in the back office: the staff's list, creating, editing (one version at a
time), archiving, categories; and what shoppers see after each change."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, update

from shop import audit, product_list
from shop.errors import ProductsUnavailable
from shop.models import audit_log, categories, products
from shop.orders import Shipping, place_order
from shop.product_list import SORTS, ProductFilter, list_products
from tests.support import (
    KETTLE,
    MUG,
    TEAPOT,
    back_office_user,
    page_text,
    shopper_on,
    wait_for_local_tier,
)

NOW = datetime(2026, 12, 3, tzinfo=UTC)


def _engine(app):
    return app.extensions["shop"].engines.primary


def _product(app, product_id: int):
    with _engine(app).connect() as conn:
        return conn.execute(select(products).where(products.c.id == product_id)).one()


def _audit_count(app) -> int:
    with _engine(app).connect() as conn:
        return conn.execute(select(func.count()).select_from(audit_log)).scalar_one()


def _eventually(read, expected, timeout: float = 2.0):
    """What another instance shows once the invalidation's pub/sub message has reached its
    in-process tier (Redis itself is invalidated before the change's page answers)."""
    deadline = time.monotonic() + timeout
    while (found := read()) != expected:
        assert time.monotonic() < deadline, f"still {found!r}, never {expected!r}"
        time.sleep(0.01)
    return found


def _version(page) -> str:
    return re.search(r'name="version" value="(\d+)"', page.get_data(as_text=True)).group(1)


def _edit_form(app, product_id: int, version: str, **changes) -> dict:
    row = _product(app, product_id)
    slug = {1: "kitchen", 2: "books"}[row.category_id]
    form = {
        "version": version,
        "name": row.name,
        "category": slug,
        "price": f"{row.price_cents // 100}.{row.price_cents % 100:02d}",
        "description": row.description,
        "low_stock_threshold": "",
    }
    return {**form, **changes}


# -- the list ---------------------------------------------------------------------------------


def _all_pages(app, wanted: ProductFilter, per_page: int) -> list[int]:
    seen: list[int] = []
    with _engine(app).connect() as conn:
        while True:
            page = list_products(conn, wanted, low_stock_default=5, per_page=per_page)
            seen += [item["id"] for item in page.items]
            if page.next_cursor is None:
                return seen
            wanted = ProductFilter(**{**wanted.__dict__, "after": page.next_cursor})


def test_keyset_pages_neither_repeat_nor_skip_in_any_sort(app):
    # Ties on every sort column, so that the id decides within them.
    with _engine(app).begin() as conn:
        conn.execute(
            update(products)
            .where(products.c.id.in_([5, 6, 7, 8]))
            .values(name="Same", price_cents=700, stock=9, updated_at=NOW)
        )
        conn.execute(update(products).where(products.c.id > 20).values(updated_at=NOW))
    rows = {row.id: row for row in (_product(app, pid) for pid in range(1, 34))}
    column = {"id": "id", "name": "name", "price": "price_cents", "stock": "stock"}

    def order(pid: int, key: str) -> tuple:
        if key == "updated":
            return (str(rows[pid].updated_at)[:19], pid)
        return (getattr(rows[pid], column[key]), pid)

    for sort in [*SORTS, *(f"-{s}" for s in SORTS)]:
        key = sort.removeprefix("-")
        expected = sorted(rows, key=lambda pid: order(pid, key), reverse=sort.startswith("-"))
        assert _all_pages(app, ProductFilter(sort=sort), per_page=4) == expected, sort


def test_filters_search_category_stock_and_status(app):
    def ids(**args) -> list[int]:
        return _all_pages(app, ProductFilter.parse(args), per_page=50)

    assert ids(q="kettle") == [KETTLE]
    assert ids(category="kitchen") == [KETTLE, MUG, TEAPOT]
    assert ids(stock="low") == [MUG]  # 3 left, at most the default of 5
    assert ids(stock="sold_out") == [TEAPOT]
    assert KETTLE in ids(stock="in_stock") and MUG not in ids(stock="in_stock")
    with _engine(app).begin() as conn:  # a threshold of its own
        conn.execute(update(products).where(products.c.id == KETTLE).values(low_stock_threshold=10))
        conn.execute(update(products).where(products.c.id == 4).values(archived_at=NOW))
    assert ids(stock="low") == [KETTLE, MUG]
    assert ids(status="archived") == [4]
    assert 4 not in ids() and 4 in ids(status="all")


def test_a_bad_list_argument_is_a_400_with_the_form(app):
    staff = back_office_user(app, "staff")
    for query in ("sort=colour", "stock=plenty", "status=gone", "category=nope", "after=garbage"):
        answer = staff.client.get(f"/admin/products?{query}")
        assert answer.status_code == 400, query
        assert 'class="filters"' in page_text(answer)
    assert staff.client.get("/admin/products?q=" + "x" * 101).status_code == 400


def test_the_list_page_links_its_next_page(app, monkeypatch):
    monkeypatch.setattr(product_list, "PAGE_SIZE", 10)
    staff = back_office_user(app, "staff")
    path, seen = "/admin/products?sort=-price", []
    while path:
        text = page_text(staff.client.get(path))
        seen += [int(pid) for pid in re.findall(r'href="/admin/products/(\d+)"', text)]
        found = re.search(r'rel="next" href="([^"]+)"', text)
        path = found.group(1).replace("&amp;", "&") if found else ""
    assert len(seen) == 33 and len(set(seen)) == 33
    assert seen[0] == TEAPOT  # the dearest first


# -- create, edit, archive ----------------------------------------------------------------------


def test_a_product_created_on_the_page_is_in_the_shop(app):
    staff = back_office_user(app, "staff", "clerk@example.com")
    form = {
        "name": "Green Whisk",
        "category": "kitchen",
        "price": "3.5",
        "stock": "7",
        "description": "Whisks.",
    }
    refused = staff.post_form("/admin/products/new", {**form, "price": "3,50"})
    assert refused.status_code == 400 and "not a price like 12.34" in page_text(refused)
    assert 'value="Green Whisk"' in page_text(refused)  # the form keeps what was typed
    created = staff.post_form("/admin/products/new", form)
    assert created.status_code == 303
    product_id = int(created.headers["Location"].split("/admin/products/")[1].split("?")[0])
    page = page_text(staff.client.get(created.headers["Location"]))
    assert "Green Whisk created." in page and "version 1" in page
    kitchen = app.test_client().get("/api/v1/products?category=kitchen").get_json()
    assert kitchen["total"] == 4
    assert kitchen["items"][-1] == {
        "id": product_id,
        "name": "Green Whisk",
        "description": "Whisks.",
        "price_cents": 350,
        "stock": 7,
        "category": "kitchen",
    } | {k: v for k, v in kitchen["items"][-1].items() if k in ("image", "images")}
    actions = [e.action for e in audit.entries(_engine(app), entity_id=str(product_id))]
    assert actions == ["stock.adjust", "product.create"]


def test_an_edit_is_saved_audited_and_seen_by_shoppers_on_every_instance(make_app):
    first, second = make_app(), make_app()
    wait_for_local_tier(second)
    shopper = shopper_on(second)
    assert "€19.99" in page_text(shopper.client.get(f"/products/{KETTLE}"))  # cached there
    staff = back_office_user(first, "staff", "clerk@example.com")
    version = _version(staff.client.get(f"/admin/products/{KETTLE}"))
    saved = staff.post_form(
        f"/admin/products/{KETTLE}", _edit_form(first, KETTLE, version, price="24.50")
    )
    assert saved.status_code == 303 and "Saved (price)" in page_text(
        staff.client.get(saved.headers["Location"])
    )
    _eventually(lambda: "€24.50" in page_text(shopper.client.get(f"/products/{KETTLE}")), True)
    assert _product(first, KETTLE).version == 2
    [entry] = audit.entries(_engine(first), action="product.update")
    assert (entry.before, entry.after) == (
        {"price_cents": 1999, "version": 1},
        {"price_cents": 2450, "version": 2},
    )
    assert entry.actor == "clerk@example.com"


def test_the_later_of_two_saves_is_refused_and_changes_nothing(app):
    ann = back_office_user(app, "staff", "ann@example.com")
    bob = back_office_user(app, "staff", "bob@example.com")
    ann_version = _version(ann.client.get(f"/admin/products/{KETTLE}"))
    bob_version = _version(bob.client.get(f"/admin/products/{KETTLE}"))
    assert (
        ann.post_form(
            f"/admin/products/{KETTLE}", _edit_form(app, KETTLE, ann_version, price="21.00")
        ).status_code
        == 303
    )
    entries = _audit_count(app)
    refused = bob.post_form(
        f"/admin/products/{KETTLE}",
        _edit_form(app, KETTLE, bob_version, name="Bob's Kettle", price="19.99"),
    )
    assert refused.status_code == 409
    text = page_text(refused)
    assert (
        "Blue Kettle was changed by someone else since you opened it (price, by ann@example.com);"
        " your changes were not saved. Here is the product as it is now." in text
    )
    assert 'name="version" value="2"' in text and 'value="21.00"' in text  # as it is now
    assert "Bob&#39;s Kettle" in refused.get_data(as_text=True)  # what Bob tried, shown apart
    row = _product(app, KETTLE)
    assert (row.name, row.price_cents, row.version) == ("Blue Kettle", 2100, 2)
    assert _audit_count(app) == entries
    # Saved again from the page as it is now, Bob's change goes through.
    again = bob.post_form(
        f"/admin/products/{KETTLE}", _edit_form(app, KETTLE, "2", name="Bob's Kettle")
    )
    assert again.status_code == 303 and _product(app, KETTLE).name == "Bob's Kettle"


BAD_EDITS = [
    ({"name": " "}, "Give the product a name."),
    ({"price": "-1"}, "not a price like 12.34"),
    ({"price": "1000000000.00"}, "more than the highest price"),
    ({"category": "garden"}, "There is no category 'garden'."),
    ({"low_stock_threshold": "-3"}, "low-stock level is a whole number"),
    ({"version": ""}, "missing its version"),
]


def test_a_bad_edit_shows_the_form_again_and_saves_nothing(app):
    staff = back_office_user(app, "staff")
    entries = _audit_count(app)
    for changes, message in BAD_EDITS:
        form = {**_edit_form(app, KETTLE, "1"), **changes}
        answer = staff.post_form(f"/admin/products/{KETTLE}", form)
        assert answer.status_code == 400, changes
        assert message in page_text(answer)
    assert _product(app, KETTLE).version == 1 and _audit_count(app) == entries


def test_stock_changes_need_a_reason_and_are_audited(app):
    staff = back_office_user(app, "staff")
    assert staff.post_form(f"/admin/products/{KETTLE}/stock", {"change": "-2"}).status_code == 400
    assert (
        staff.post_form(
            f"/admin/products/{KETTLE}/stock", {"change": "0", "reason": "count"}
        ).status_code
        == 400
    )
    moved = staff.post_form(f"/admin/products/{KETTLE}/stock", {"change": "-2", "reason": "dent"})
    assert moved.status_code == 303
    assert "Stock changed from 10 to 8." in page_text(staff.client.get(moved.headers["Location"]))
    assert "only 8 left" not in page_text(app.test_client().get(f"/products/{KETTLE}"))
    assert _product(app, KETTLE).stock == 8


def _kitchen_count(app) -> int:
    with _engine(app).connect() as conn:
        return conn.execute(
            select(categories.c.product_count).where(categories.c.slug == "kitchen")
        ).scalar_one()


def test_an_archived_product_leaves_the_shop_but_not_past_orders(app, shopper):
    shopper.register()
    shopper.add(KETTLE)
    placed = shopper.checkout()
    assert placed.status_code == 303
    # Paid at the test provider: the order is a past one, and the cart is empty again.
    provider_page = shopper.client.get(placed.headers["Location"]).headers["Location"]
    paid = shopper.client.post(provider_page, data={"outcome": "succeed"})
    order_path = paid.headers["Location"].split("?")[0]
    assert "/orders/" in order_path
    shopper.add(KETTLE)  # in the cart again when it is archived
    staff = back_office_user(app, "staff")
    assert staff.post_form(f"/admin/products/{KETTLE}/archive").status_code == 303
    assert _kitchen_count(app) == 2
    client = shopper.client
    assert client.get(f"/products/{KETTLE}").status_code == 404
    assert client.get(f"/api/v1/products/{KETTLE}").status_code == 404
    assert client.get("/api/v1/products?q=kettle").get_json()["total"] == 0
    assert KETTLE not in [p["id"] for p in client.get("/api/v1/products").get_json()["items"]]
    assert "Blue Kettle" not in page_text(client.get("/?category=kitchen"))
    assert shopper.cart()["unavailable"] == [{"product_id": KETTLE, "quantity": 1}]
    refused = shopper.checkout()
    assert refused.status_code == 409 and "no longer available" in page_text(refused)
    assert "Blue Kettle" in page_text(client.get(order_path))  # the past order keeps it
    # The staff still find it, and can put it back.
    assert "archived" in page_text(staff.client.get(f"/admin/products/{KETTLE}"))
    assert staff.post_form(f"/admin/products/{KETTLE}/unarchive").status_code == 303
    assert client.get(f"/products/{KETTLE}").status_code == 200 and _kitchen_count(app) == 3
    actions = [e.action for e in audit.entries(_engine(app), entity_id=str(KETTLE))]
    assert actions[:2] == ["product.unarchive", "product.archive"]


def test_checkout_refuses_an_archived_product_whatever_the_cache_said(app):
    with _engine(app).begin() as conn:
        conn.execute(update(products).where(products.c.id == MUG).values(archived_at=NOW))
    with pytest.raises(ProductsUnavailable) as refused:
        place_order(
            _engine(app),
            owner_key="u:1",
            user_id=None,
            email="a@example.com",
            cart={KETTLE: 1, MUG: 1},
            shipping=Shipping("Ada", "1 St"),
            idempotency_key="k",
            now=NOW,
            hold_seconds=60,
            secret="s" * 32,
        )
    assert refused.value.product_ids == [MUG] and refused.value.status == 409
    assert _product(app, KETTLE).stock == 10  # nothing taken


# -- categories ---------------------------------------------------------------------------------


def _bar(app) -> list[str]:
    text = page_text(app.test_client().get("/"))
    nav = text.split('aria-label="Categories"')[1].split("</nav>")[0]
    return re.findall(r'category=([a-z0-9-]+)"', nav)


def test_categories_are_created_renamed_and_reordered_in_the_shops_bar(make_app):
    app, other = make_app(), make_app()
    staff = back_office_user(app, "staff")
    assert _bar(other) == ["books", "kitchen"]  # by name at first (cached on the other instance)
    assert (
        staff.post_form("/admin/categories", {"slug": "garden-tools", "name": "Garden"}).status_code
        == 303
    )
    _eventually(lambda: _bar(other), ["books", "kitchen", "garden-tools"])
    assert staff.post_form("/admin/categories/1/move", {"direction": "up"}).status_code == 303
    _eventually(lambda: _bar(other), ["kitchen", "books", "garden-tools"])
    assert staff.post_form("/admin/categories/1/move", {"direction": "up"}).status_code == 303
    _eventually(lambda: _bar(other), ["kitchen", "books", "garden-tools"])  # already first
    assert staff.post_form("/admin/categories/1/rename", {"name": "Cooking"}).status_code == 303
    _eventually(lambda: "Cooking" in page_text(other.test_client().get("/?category=kitchen")), True)
    refused = staff.post_form("/admin/categories", {"slug": "Kitchen Stuff", "name": "x"})
    assert refused.status_code == 400 and "lowercase letters" in page_text(refused)
    taken = staff.post_form("/admin/categories", {"slug": "kitchen", "name": "x"})
    assert taken.status_code == 400 and "already a category" in page_text(taken)
    assert staff.post_form("/admin/categories/1/rename", {"name": " "}).status_code == 400
    assert staff.post_form("/admin/categories/99/rename", {"name": "x"}).status_code == 404
    actions = [e.action for e in audit.entries(_engine(app), entity="category")]
    assert actions == ["category.rename", "category.move", "category.create"]


# -- requests too large ---------------------------------------------------------------------------


def test_an_upload_larger_than_the_import_allows_is_a_413_page(app):
    staff = back_office_user(app, "staff")
    big = b"id,price\n" + b"1,1.00\n" * 400_000  # 2.8 MB
    answer = staff.client.post(
        "/admin/products/import",
        data={"csrf_token": staff.csrf(), "file": (__import__("io").BytesIO(big), "p.csv")},
    )
    assert answer.status_code == 413
    assert "at most 2,048 KiB can be sent here" in page_text(answer)


def test_outsiders_get_the_usual_answers_to_a_large_body(app, shopper):
    body = {"csrf_token": shopper.csrf(), "name": "x" * 100_000}
    admin = shopper.client.post("/admin/products/import", data=body)
    elsewhere = shopper.client.post("/no-such-page/admin/products/import", data=body)
    assert admin.status_code == elsewhere.status_code == 413
    assert page_text(admin) == page_text(elsewhere)


def test_a_threshold_set_on_the_stock_page_is_not_undone_by_an_older_edit_form(app):
    """The stock page's threshold raises the version, so a product form opened before it
    cannot silently put the old threshold back."""
    ann = back_office_user(app, "staff", "ann@example.com")
    bob = back_office_user(app, "staff", "bob@example.com")
    ann_version = _version(ann.client.get(f"/admin/products/{KETTLE}"))
    set_by_bob = bob.post_form(f"/admin/stock/{KETTLE}/threshold", {"threshold": "8"})
    assert set_by_bob.status_code == 303
    refused = ann.post_form(
        f"/admin/products/{KETTLE}", _edit_form(app, KETTLE, ann_version, price="21.00")
    )
    assert refused.status_code == 409
    assert "(low stock threshold, by bob@example.com)" in page_text(refused)
    row = _product(app, KETTLE)
    assert (row.low_stock_threshold, row.price_cents) == (8, 1999)
