"""Stock in the back office: the low-stock report (own thresholds, the shop's default, no
archived products), thresholds, adjustments with a reason, and their history."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update

from shop import audit, stock_report
from shop.models import products, stock_adjustments
from shop.web.admin import stock as stock_pages
from tests.support import KETTLE, MUG, TEAPOT, Shopper, back_office_user, page_text


def engine_of(app):
    return app.extensions["shop"].engines.primary


def low(app, **kwargs) -> list[int]:
    default = app.extensions["shop"].settings.low_stock_default
    rows, _ = stock_report.low_stock(engine_of(app), default=default, **kwargs)
    return [row.id for row in rows]


def set_product(app, product_id: int, **values) -> None:
    with engine_of(app).begin() as conn:
        conn.execute(update(products).where(products.c.id == product_id).values(**values))


def stock_of(app, product_id: int) -> int:
    with engine_of(app).connect() as conn:
        return conn.execute(
            select(products.c.stock).where(products.c.id == product_id)
        ).scalar_one()


def test_the_report_lists_what_is_at_or_below_its_threshold_worst_first(app):
    assert low(app) == [TEAPOT, MUG]  # 0 and 3 against the default 5; the kettle has 10
    set_product(app, KETTLE, low_stock_threshold=10)  # at its own threshold: listed
    set_product(app, MUG, low_stock_threshold=2)  # above its own: not
    assert low(app) == [TEAPOT, KETTLE]
    set_product(app, TEAPOT, archived_at=datetime.now(UTC))  # not sold: never low
    assert low(app) == [KETTLE]
    assert low(app, category_id=2) == []
    set_product(app, 4, stock=1)  # a field guide, in the other category
    assert low(app, category_id=2) == [4]


def test_the_default_threshold_is_the_setting(make_app):
    assert low(make_app(low_stock_default=0)) == [TEAPOT]
    assert low(make_app(low_stock_default=50))[:2] == [TEAPOT, MUG]
    assert len(low(make_app(low_stock_default=50))) == 33  # the field guides have 50


def test_report_pages_neither_repeat_nor_skip(make_app, monkeypatch):
    app = make_app(low_stock_default=50)
    engine, seen, after = engine_of(app), [], None
    while True:
        rows, after = stock_report.low_stock(engine, default=50, after=after, limit=4)
        seen += [row.id for row in rows]
        if after is None:
            break
        after = stock_report.parse_cursor(after)
    assert seen == low(app, limit=100) and len(set(seen)) == 33
    monkeypatch.setattr(stock_pages, "PAGE_SIZE", 30)
    browser = back_office_user(app, "staff")
    page = page_text(browser.client.get("/admin/stock"))
    assert "Sold Out Teapot" in page and "(default)" in page
    more = page.split('<p class="pagination"><a href="')[1].split('"')[0]
    assert "Field Guide 33" in page_text(browser.client.get(more))
    assert browser.client.get("/admin/stock?after=nonsense").status_code == 400


def test_setting_a_threshold_is_audited_and_blank_is_the_default(app):
    browser = back_office_user(app, "staff", email="clerk@example.com")
    answer = browser.post_form(f"/admin/stock/{KETTLE}/threshold", {"threshold": "12"})
    assert answer.status_code == 303
    assert KETTLE in low(app)
    (entry,) = audit.entries(engine_of(app), action="product.threshold")
    assert (entry.actor, entry.entity_id) == ("clerk@example.com", str(KETTLE))
    assert (entry.before, entry.after) == (
        {"low_stock_threshold": None, "version": 1},
        {"low_stock_threshold": 12, "version": 2},
    )
    back = browser.post_form(f"/admin/stock/{KETTLE}/threshold", {"threshold": ""})
    assert back.status_code == 303 and KETTLE not in low(app)
    for bad in ("-1", "ten", "1.5"):
        refused = browser.post_form(f"/admin/stock/{KETTLE}/threshold", {"threshold": bad})
        assert refused.status_code == 400 and "whole number" in page_text(refused)
    assert browser.post_form(f"/admin/stock/{KETTLE}/threshold").status_code == 400
    assert len(audit.entries(engine_of(app), action="product.threshold")) == 2


def test_an_adjustment_changes_the_shop_and_shows_in_the_history(make_app):
    app, other = make_app(), make_app()
    shopper = Shopper(other.test_client(), other)
    assert shopper.client.get(f"/api/v1/products/{MUG}").get_json()["stock"] == 3  # cached
    browser = back_office_user(app, "staff", email="clerk@example.com")
    answer = browser.post_form(
        f"/admin/stock/{MUG}/adjust",
        {"change": "+12", "reason": "delivery from the potter", "next": "/admin/stock?category=1"},
    )
    assert answer.status_code == 303
    assert answer.headers["Location"].startswith("/admin/stock?category=1&done=")
    assert "Red Mug: stock 3 → 15" in page_text(browser.client.get(answer.headers["Location"]))
    assert stock_of(app, MUG) == 15
    assert shopper.client.get(f"/api/v1/products/{MUG}").get_json()["stock"] == 15
    browser.post_form(f"/admin/stock/{KETTLE}/adjust", {"change": "-2", "reason": "damaged"})
    history = page_text(browser.client.get("/admin/stock/adjustments"))
    assert history.index("damaged") < history.index("delivery from the potter")  # newest first
    assert "clerk@example.com" in history and "+12" in history and "-2" in history
    mugs = page_text(browser.client.get(f"/admin/stock/adjustments?product={MUG}"))
    assert "delivery from the potter" in mugs and "damaged" not in mugs


BAD_ADJUSTMENTS = [
    ({"change": "5", "reason": "  "}, "Say why the stock changes"),
    ({"change": "5"}, "Say why the stock changes"),
    ({"change": "-4", "reason": "count"}, "cannot go below zero"),
    ({"change": "0", "reason": "count"}, "changes nothing"),
    ({"change": "lots", "reason": "count"}, "whole number of units"),
    ({}, "whole number of units"),
]


def test_a_bad_adjustment_shows_the_form_again_and_changes_nothing(app):
    browser = back_office_user(app, "staff")
    for form, message in BAD_ADJUSTMENTS:
        answer = browser.post_form(f"/admin/stock/{MUG}/adjust", form)
        assert answer.status_code == 400, form
        text = page_text(answer)
        assert message in text and 'name="reason"' in text, form
    assert stock_of(app, MUG) == 3
    with engine_of(app).connect() as conn:
        assert conn.execute(select(stock_adjustments)).first() is None


def test_history_pages_and_a_missing_product(app):
    engine = engine_of(app)
    clerk = audit.Actor(None, "command line")
    from shop import stock

    with engine.begin() as conn:
        for n in range(7):
            stock.adjust(conn, clerk, KETTLE, change=1, reason=f"r{n}", at=datetime.now(UTC))
    seen, before = [], None
    while True:
        rows, before = stock_report.adjustments(engine, product_id=KETTLE, before=before, limit=3)
        seen += [row.reason for row in rows]
        if before is None:
            break
    assert seen == [f"r{n}" for n in reversed(range(7))]
    assert rows[-1].actor == "command line" and rows[-1].stock_after == 11
    browser = back_office_user(app, "staff")
    assert browser.client.get("/admin/stock/adjustments?product=999999").status_code == 404
    assert browser.post_form("/admin/stock/999999/adjust", {"change": "1"}).status_code == 404
