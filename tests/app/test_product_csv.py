"""Prices and stock from a CSV file: a preview, every bad line reported, all or nothing."""

from __future__ import annotations

import io
import re

from sqlalchemy import func, select, update

from shop import audit, product_csv
from shop.models import audit_log, products, stock_adjustments
from tests.support import KETTLE, MUG, TEAPOT, back_office_user, page_text


def _engine(app):
    return app.extensions["shop"].engines.primary


def _state(app) -> tuple:
    """Everything an import could change: prices, stock, versions, the audit and stock logs."""
    with _engine(app).connect() as conn:
        rows = conn.execute(
            select(products.c.id, products.c.price_cents, products.c.stock, products.c.version)
        ).all()
        entries = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
        moves = conn.execute(select(func.count()).select_from(stock_adjustments)).scalar_one()
    return sorted(rows), entries, moves


def _words(response) -> str:
    """The page's text without its markup."""
    return re.sub(r"<[^>]+>", "", page_text(response))


def _upload(browser, data: bytes | str, reason: str = "count of 3 December"):
    body = data.encode() if isinstance(data, str) else data
    return browser.client.post(
        "/admin/products/import",
        data={"csrf_token": browser.csrf(), "reason": reason, "file": (io.BytesIO(body), "p.csv")},
    )


def _hidden(page, name: str) -> str:
    import html

    found = re.search(rf'name="{name}" value="([^"]*)"', page.get_data(as_text=True), re.S)
    assert found, f"no hidden {name}"
    return html.unescape(found.group(1))


def _apply_form(preview) -> dict:
    return {name: _hidden(preview, name) for name in ("csv", "reason", "seen")}


def test_a_file_is_previewed_then_applied_in_one_go(app):
    staff = back_office_user(app, "staff", "clerk@example.com")
    before = _state(app)
    text = "id,price,stock\r\n1,24.50,12\r\n2,,0\r\n3,25.00,\r\n"
    preview = _upload(staff, text)
    assert preview.status_code == 200
    shown = _words(preview)
    assert "2 products would change" in shown
    assert "€19.99 → €24.50" in shown and "10 → 12" in shown and "3 → 0" in shown
    assert _state(app) == before  # a preview changes nothing
    applied = staff.client.post(
        "/admin/products/import/apply",
        data={"csrf_token": staff.csrf(), **_apply_form(preview)},
        content_type="multipart/form-data",
    )
    assert applied.status_code == 303
    assert "2 product(s) changed" in page_text(staff.client.get(applied.headers["Location"]))
    with _engine(app).connect() as conn:
        got = dict(
            (r.id, (r.price_cents, r.stock, r.version))
            for r in conn.execute(select(products).where(products.c.id.in_([KETTLE, MUG, TEAPOT])))
        )
        reasons = conn.execute(select(stock_adjustments.c.reason)).scalars().all()
    assert got == {KETTLE: (2450, 12, 2), MUG: (599, 0, 1), TEAPOT: (2500, 0, 1)}
    assert reasons == ["CSV import: count of 3 December"] * 2
    entries = audit.entries(_engine(app), entity="product")
    assert sorted((e.action, e.entity_id) for e in entries) == [
        ("product.update", "1"),
        ("stock.adjust", "1"),
        ("stock.adjust", "2"),
    ]
    assert all(e.actor == "clerk@example.com" for e in entries)
    # The shop shows it on the next page load.
    assert app.test_client().get(f"/api/v1/products/{KETTLE}").get_json()["price_cents"] == 2450


# A good line beside a bad one: nothing of it is applied either.
BAD_FILES = [
    ("id,price\n1,12.345\n2,5.00\n", 2, "price", "'12.345' is not a price like 12.34"),
    ("id,price\n1,-3\n", 2, "price", "is not a price"),
    ("id,stock\n1,-1\n", 2, "stock", "'-1' is not a stock count"),
    ("id,stock\n1,2.5\n", 2, "stock", "is not a stock count"),
    ("id,price\n999,1.00\n", 2, "id", "There is no product 999."),
    ("id,price\nabc,1.00\n", 2, "id", "'abc' is not a product id."),
    ("id,price\n1,1.00\n2,2.00\n1,3.00\n", 4, "id", "Product 1 is also on line 2."),
    ("id,colour\n1,red\n", 1, "", "The first line must name the columns"),
    ("price,stock\n1.00,2\n", 1, "", "The first line must name the columns"),
    ("id,price\n1,1.00,9\n", 2, "", "3 values where the header has 2"),
    ("id,price\n", 1, "", "no lines after the header"),
    (b"id,price\n1,1.00\n2,caf\xe9\n", 1, "", "not UTF-8 text (line 3)"),
]


def test_a_bad_line_is_reported_and_nothing_changes(app):
    staff = back_office_user(app, "staff")
    before = _state(app)
    for data, line, column, message in BAD_FILES:
        answer = _upload(staff, data)
        assert answer.status_code == 400, data
        text = page_text(answer)
        assert message in text, (data, text[-3000:])
        if column or line > 1:  # a line's problem, in the report's table
            rows = re.findall(
                r'<tr><td class="number">(\d+)</td><td>([^<]*)</td><td>([^<]*)</td></tr>', text
            )
            assert any(int(n) == line and c == (column or "—") and message in m for n, c, m in rows)
        assert "Apply" not in text
    assert _state(app) == before


def test_stock_changes_need_a_reason_from_the_form_or_the_file(app):
    staff = back_office_user(app, "staff")
    refused = _upload(staff, "id,stock\n1,4\n", reason="")
    assert refused.status_code == 400 and "Say why the stock changes" in page_text(refused)
    with_reason = _upload(staff, "id,stock,reason\n1,4,breakage\n", reason="")
    assert with_reason.status_code == 200 and "10 → 4" in _words(with_reason)


def test_too_many_lines_or_bytes_are_refused(app, monkeypatch):
    staff = back_office_user(app, "staff")
    monkeypatch.setattr(product_csv, "MAX_CSV_ROWS", 3)
    many = _upload(staff, "id,price\n" + "".join(f"{i},1.00\n" for i in range(4, 9)))
    assert many.status_code == 400 and "at most 3 lines" in page_text(many)
    monkeypatch.setattr(product_csv, "MAX_CSV_BYTES", 1024)
    large = _upload(staff, "id,price\n" + "1,1.00\n" * 200)
    assert large.status_code == 400 and "larger than 1 KiB" in page_text(large)


def test_apply_is_refused_when_a_product_changed_since_the_preview(app):
    staff = back_office_user(app, "staff")
    preview = _upload(staff, "id,price,stock\n1,30.00,\n2,,9\n")
    assert preview.status_code == 200
    sold = staff.post_form(f"/admin/products/{MUG}/stock", {"change": "-1", "reason": "broken"})
    assert sold.status_code == 303
    before = _state(app)
    refused = staff.client.post(
        "/admin/products/import/apply",
        data={"csrf_token": staff.csrf(), **_apply_form(preview)},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 409
    text = _words(refused)
    assert "1 product(s) changed since the preview (Red Mug (2)); nothing was applied" in text
    assert "2 → 9" in text  # the preview again, as things are now
    assert _state(app) == before


def test_a_file_changed_between_preview_and_apply_is_checked_again(app):
    staff = back_office_user(app, "staff")
    form = _apply_form(_upload(staff, "id,price\n1,30.00\n"))
    before = _state(app)
    tampered = staff.client.post(
        "/admin/products/import/apply",
        data={"csrf_token": staff.csrf(), **form, "csv": "id,price\n1,30.00\n2,x\n"},
        content_type="multipart/form-data",
    )
    assert tampered.status_code == 400 and "'x' is not a price" in page_text(tampered)
    empty = staff.post_form("/admin/products/import/apply", {})
    assert empty.status_code == 400
    assert _state(app) == before


def test_the_list_downloads_as_csv_and_goes_back_in_unchanged(app):
    staff = back_office_user(app, "staff")
    download = staff.client.get("/admin/products/export.csv?category=kitchen")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    text = download.get_data(as_text=True)
    assert text.splitlines() == [
        "id,name,category,price,stock",
        "1,Blue Kettle,kitchen,19.99,10",
        "2,Red Mug,kitchen,5.99,3",
        "3,Sold Out Teapot,kitchen,25.00,0",
    ]
    again = _upload(staff, text)
    assert again.status_code == 200 and "0 products would change" in page_text(again)


def test_a_name_a_spreadsheet_would_evaluate_is_downloaded_as_text(app):
    with app.extensions["shop"].engines.primary.begin() as conn:
        conn.execute(
            update(products).where(products.c.id == 2).values(name='=HYPERLINK("http://x")')
        )
    staff = back_office_user(app, "staff")
    text = staff.client.get("/admin/products/export.csv?category=kitchen").get_data(as_text=True)
    assert '2,"\'=HYPERLINK(""http://x"")",kitchen,5.99,3' in text.splitlines()
