"""Stock changed by hand: a reason, a record, an audit entry, never below zero."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from shop import audit, stock
from shop.errors import InvalidInput, NotFound
from shop.models import products, stock_adjustments
from tests.support import KETTLE

NOW = datetime(2026, 12, 3, tzinfo=UTC)
CLERK = audit.Actor(None, "clerk@example.com", "staff")


def test_an_adjustment_is_recorded_with_its_reason_and_audited(app):
    engine = app.extensions["shop"].engines.primary
    with engine.begin() as conn:
        assert stock.adjust(
            conn, CLERK, KETTLE, change=-3, reason=" damaged  in transit ", at=NOW
        ) == (10, 7)
        assert stock.adjust(conn, CLERK, KETTLE, new_stock=12, reason="count", at=NOW) == (7, 12)
    with engine.connect() as conn:
        assert conn.execute(select(products.c.stock).where(products.c.id == KETTLE)).scalar() == 12
        rows = conn.execute(select(stock_adjustments).order_by(stock_adjustments.c.id)).all()
    assert [(r.change, r.stock_after, r.reason) for r in rows] == [
        (-3, 7, "damaged in transit"),
        (5, 12, "count"),
    ]
    entries = audit.entries(engine, entity="product", entity_id=str(KETTLE))
    assert [e.after for e in entries] == [
        {"stock": 12, "reason": "count"},
        {"stock": 7, "reason": "damaged in transit"},
    ]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"change": -11, "reason": "x"}, InvalidInput),
        ({"change": 1, "reason": "  "}, InvalidInput),
        ({"change": 1, "reason": "x" * 301}, InvalidInput),
        ({"new_stock": 2**31, "reason": "x"}, InvalidInput),
    ],
)
def test_bad_adjustments_change_nothing(app, kwargs, error):
    engine = app.extensions["shop"].engines.primary
    with pytest.raises(error), engine.begin() as conn:
        stock.adjust(conn, CLERK, KETTLE, at=NOW, **kwargs)
    with engine.connect() as conn:
        assert conn.execute(select(products.c.stock).where(products.c.id == KETTLE)).scalar() == 10
        assert conn.execute(select(stock_adjustments)).first() is None


def test_no_such_product(app):
    engine = app.extensions["shop"].engines.primary
    with pytest.raises(NotFound), engine.begin() as conn:
        stock.adjust(conn, CLERK, 999_999, change=1, reason="x", at=NOW)
