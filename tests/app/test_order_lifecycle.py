"""The life cycle's rule, without HTTP: one function changes a status, conditionally."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, select

from shop.errors import IllegalTransition
from shop.models import order_events, orders, products
from shop.order_lifecycle import ALLOWED, transition
from shop.orders import Shipping, place_order
from tests.support import KETTLE

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
STATUSES = [
    "pending_payment",
    "paid",
    "shipped",
    "delivered",
    "payment_failed",
    "expired",
    "cancelled",
]


@pytest.fixture
def engine(sqlite_url):
    engine = create_engine(sqlite_url)
    yield engine
    engine.dispose()


def _order(engine, key: str = "k") -> int:
    placed = place_order(
        engine,
        owner_key="s:unit",
        user_id=None,
        email="ada@example.com",
        cart={KETTLE: 2},
        shipping=Shipping("Ada", "1 St"),
        idempotency_key=key,
        now=NOW,
        hold_seconds=900,
        secret="test-secret-key-0123456789",
    )
    return placed.order.id


def _force(engine, order_id: int, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(orders.update().where(orders.c.id == order_id).values(status=status))


def _state(engine, order_id: int) -> tuple:
    with engine.connect() as conn:
        status = conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar()
        stock = conn.execute(select(products.c.stock).where(products.c.id == KETTLE)).scalar()
        events = conn.execute(
            select(order_events.c.status).where(order_events.c.order_id == order_id)
        ).all()
    return status, stock, len(events)


@pytest.mark.parametrize("source", STATUSES)
@pytest.mark.parametrize("target", STATUSES)
def test_only_the_allowed_moves_happen_and_a_refused_one_changes_nothing(engine, source, target):
    order_id = _order(engine)
    _force(engine, order_id, source)
    before = _state(engine, order_id)
    if target in ALLOWED.get(source, ()):
        with engine.begin() as conn:
            assert transition(conn, order_id, target, at=NOW) == source
        status, stock, events = _state(engine, order_id)
        assert status == target and events == before[2] + 1
        returned = target in {"payment_failed", "expired", "cancelled"}
        assert stock == before[1] + (2 if returned else 0)
    else:
        with pytest.raises(IllegalTransition), engine.begin() as conn:
            transition(conn, order_id, target, at=NOW)
        assert _state(engine, order_id) == before


def test_the_expected_status_must_still_be_there(engine):
    order_id = _order(engine)
    _force(engine, order_id, "paid")  # paid by another instance meanwhile
    with pytest.raises(IllegalTransition), engine.begin() as conn:
        transition(conn, order_id, "expired", expected="pending_payment", at=NOW)
    assert _state(engine, order_id)[0] == "paid"


def test_a_listener_that_fails_rolls_the_change_back(engine):
    order_id = _order(engine)
    before = _state(engine, order_id)
    seen = []

    def listener(conn, order, status):
        seen.append((order.id, order.status, status))
        raise RuntimeError("the outbox could not write its mail")

    with pytest.raises(RuntimeError), engine.begin() as conn:
        transition(conn, order_id, "payment_failed", at=NOW, listeners=[listener])
    assert seen == [(order_id, "payment_failed", "payment_failed")]
    assert _state(engine, order_id) == before
