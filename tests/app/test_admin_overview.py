"""The back office's overview: the work waiting (orders to ship, orders awaiting payment,
products running low), each linking to its list, and capped counts."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

from sqlalchemy import insert, update

from shop.back_office_summary import CAP, summary
from shop.models import orders, products
from tests.support import back_office_user


def _orders(app, status: str, n: int) -> None:
    with app.extensions["shop"].engines.primary.begin() as conn:
        conn.execute(
            insert(orders),
            [
                {
                    "owner_key": f"s:{secrets.token_hex(4)}",
                    "idempotency_key": secrets.token_hex(8),
                    "status": status,
                    "total_cents": 100,
                    "shipping_name": "A",
                    "shipping_address": "B",
                    "created_at": datetime(2026, 12, 1, tzinfo=UTC),
                }
                for _ in range(n)
            ],
        )


def _counts(page_html: str) -> list[str]:
    return re.findall(r'class="tile-count">([^<]*)<', page_html)


def test_the_overview_counts_the_waiting_work(app):
    engine = app.extensions["shop"].engines.primary
    browser = back_office_user(app, "staff")
    low_before = summary(engine, low_stock_default=5).low_stock
    _orders(app, "paid", 3)
    _orders(app, "pending_payment", 1)
    _orders(app, "shipped", 4)  # done: not waiting
    with engine.begin() as conn:  # one more product at its threshold, one archived and low
        conn.execute(update(products).where(products.c.id == 10).values(stock=5))
        conn.execute(
            update(products)
            .where(products.c.id == 11)
            .values(stock=0, archived_at=datetime(2026, 12, 1, tzinfo=UTC))
        )
    page = browser.client.get("/admin/").get_data(as_text=True)
    assert _counts(page) == ["3", "1", str(low_before + 1)]
    assert 'href="/admin/orders?status=paid"' in page


def test_counts_stop_at_the_cap(app):
    _orders(app, "paid", CAP + 5)
    page = back_office_user(app, "staff").client.get("/admin/").get_data(as_text=True)
    assert _counts(page)[0] == f"{CAP}+"
