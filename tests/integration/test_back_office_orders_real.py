"""Back-office orders on the real PostgreSQL: the export streams through a server-side cursor,
two staff acting on one order at once apply one change (and one refund at most), and the
list's main filters are answered from indexes."""

from __future__ import annotations

import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, event, func, insert, select, text, update
from sqlalchemy.dialects import postgresql

from shop import audit, order_actions, order_admin, order_export
from shop.errors import IllegalTransition
from shop.models import order_lines, orders, products
from tests.support import KETTLE

CLERKS = [audit.Actor(None, f"clerk{n}@example.com", "staff") for n in (1, 2)]
NOW = datetime(2026, 12, 4, tzinfo=UTC)


def add_many(engine, count: int) -> None:
    """``count`` orders over 2026 in one statement: statuses and addresses vary, one in ten
    belongs to an account."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (email, password_hash) "
                "SELECT 'member' || n || '@example.com', 'x' FROM generate_series(1, 200) AS n"
            )
        )
        conn.execute(
            text(
                """
                INSERT INTO orders (owner_key, idempotency_key, status, total_cents, email,
                                    user_id, shipping_name, shipping_address, payment_ref,
                                    created_at)
                SELECT 's:' || n, 'k' || n,
                       (ARRAY['paid', 'shipped', 'delivered', 'cancelled', 'expired',
                              'pending_payment', 'payment_failed', 'paid'])[n % 8 + 1],
                       100 + n % 5000,
                       CASE WHEN n % 10 = 0 THEN NULL ELSE 'buyer' || n || '@example.com' END,
                       CASE WHEN n % 10 = 0 THEN (SELECT MIN(id) FROM users) + n % 200 END,
                       '=HYPERLINK(' || n || ')', 'Street ' || n, 'pay_' || n,
                       TIMESTAMPTZ '2026-01-01 00:00+00'
                           + make_interval(mins => (n::bigint * 525000 / :count)::int)
                FROM generate_series(1, :count) AS n
                """
            ),
            {"count": count},
        )
        conn.execute(text("ANALYZE orders; ANALYZE users"))


def test_the_export_streams_from_a_server_side_cursor(pg_url):
    engine = create_engine(pg_url)
    add_many(engine, 5000)
    cursors: list[str | None] = []

    @event.listens_for(engine, "before_cursor_execute")
    def named(conn, cursor, statement, parameters, context, executemany):
        if "FROM orders" in statement:
            cursors.append(getattr(cursor, "name", None))

    wanted = order_admin.parse_filter(created_from="2026-01-01", created_to="2026-12-31")
    first_day = order_admin.parse_filter(created_from="2026-01-01", created_to="2026-01-01")
    list(order_export.export_rows(engine, first_day))  # warm: connection, compiled SQL

    def export(rows) -> tuple[int, int, int]:
        """(lines, bytes, peak memory) of exporting ``rows()``, the text thrown away."""
        size = lines = 0
        tracemalloc.start()
        try:
            for chunk in order_export.csv_text(rows(), currency="EUR", batch=200):
                size += len(chunk)
                lines += chunk.count("\n")
            return lines, size, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    cursors.clear()
    lines, size, streamed = export(lambda: order_export.export_rows(engine, wanted))
    assert lines == 5001  # the header and every order
    assert cursors and all(cursors), cursors  # a named (server-side) cursor: rows in batches

    def whole_table():
        with engine.connect() as conn:
            return iter(conn.execute(order_export.export_query(wanted)).all())

    _, _, loaded = export(whole_table)
    # Memory for a batch of rows (500), not for the 5,000 that loading them all holds.
    assert streamed < loaded / 4, (streamed, loaded, size)
    engine.dispose()


def _paid_order(engine) -> int:
    with engine.begin() as conn:
        order_id = conn.execute(
            insert(orders).values(
                owner_key="s:x",
                idempotency_key="k",
                status="paid",
                total_cents=3998,
                shipping_name="Ada",
                shipping_address="1 St",
                payment_ref="pay_1",
            )
        ).inserted_primary_key[0]
        conn.execute(
            insert(order_lines).values(
                order_id=order_id,
                product_id=KETTLE,
                product_name="Blue Kettle",
                unit_price_cents=1999,
                quantity=2,
                line_total_cents=3998,
            )
        )
        conn.execute(update(products).where(products.c.id == KETTLE).values(stock=8))
    return order_id


class SlowRefunds:
    """A provider whose refund takes a while: the other request arrives meanwhile."""

    name = "slow"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def refund(self, payment_ref: str, amount_cents: int) -> str:
        time.sleep(0.2)
        with self.lock:
            self.calls.append(payment_ref)
        return f"re_{len(self.calls)}"


@pytest.mark.parametrize("second", ["cancel", "ship"])
def test_two_staff_acting_on_one_order_at_once_apply_one_change(pg_url, second):
    engine = create_engine(pg_url, pool_size=4)
    order_id = _paid_order(engine)
    provider = SlowRefunds()
    start = threading.Barrier(2)

    def act(action: str, clerk: audit.Actor) -> str:
        start.wait()
        try:
            if action == "cancel":
                order_actions.cancel(engine, provider, clerk, order_id, at=NOW)  # type: ignore[arg-type]
            else:
                order_actions.ship(engine, clerk, order_id, tracking=None, at=NOW)
        except IllegalTransition:
            return "refused"
        return "applied"

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(act, ["cancel", second], CLERKS))
    assert sorted(results) == ["applied", "refused"]
    with engine.connect() as conn:
        status = conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar()
        stock = conn.execute(select(products.c.stock).where(products.c.id == KETTLE)).scalar()
        events = conn.execute(
            text("SELECT count(*) FROM order_events WHERE order_id = :id"), {"id": order_id}
        ).scalar()
    entries = audit.entries(engine, entity="order", entity_id=str(order_id))
    assert events == 1 and len(entries) == 1  # one change, one audit entry
    if status == "cancelled":
        assert provider.calls == ["pay_1"] and stock == 10  # refunded and restocked once
    else:
        assert status == "shipped" and provider.calls == [] and stock == 8
    engine.dispose()


def _plan(conn, query, *, cursor: bool = False) -> str:
    """The plan PostgreSQL makes for ``query`` (``cursor``: as a server-side cursor's, which
    favours plans that return the first rows soon)."""
    compiled = query.compile(
        dialect=postgresql.psycopg2.dialect(), compile_kwargs={"literal_binds": True}
    )
    declare = "DECLARE export CURSOR FOR " if cursor else ""
    sql = f"EXPLAIN {declare}{compiled}"
    rows = conn.exec_driver_sql(sql).scalars()
    return "\n".join(rows)


def test_the_list_filters_are_answered_from_indexes(pg_url):
    engine = create_engine(pg_url)
    add_many(engine, 20_000)
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(orders.c.id))).scalar_one()
    last_page = datetime(2026, 12, 20, tzinfo=UTC)  # a page or so from the newest
    filters = {
        "status": order_admin.parse_filter(statuses=["payment_failed"]),
        "statuses": order_admin.parse_filter(statuses=["cancelled", "expired"]),
        "range": order_admin.parse_filter(created_from="2026-03-01", created_to="2026-03-07"),
        "early": order_admin.parse_filter(created_from="2026-01-08", created_to="2026-01-14"),
        "email": order_admin.parse_filter(email="buyer1234"),
        "account": order_admin.parse_filter(email="member11@"),
        "number": order_admin.parse_filter(number=f"#{newest - 5}"),
    }
    with engine.connect() as conn:
        plans = {
            name: _plan(
                conn,
                order_admin.list_query(
                    order_admin.resolve(engine, wanted), before=(last_page, newest)
                ),
            )
            for name, wanted in filters.items()
        }
        year = order_admin.parse_filter(created_from="2026-01-01", created_to="2026-12-31")
        export = _plan(conn, order_export.export_query(year), cursor=True)
        found = {
            name: len(order_admin.list_orders(engine, wanted)[0])
            for name, wanted in filters.items()
        }
    for name, plan in plans.items():
        assert "Seq Scan on orders" not in plan, f"{name}:\n{plan}"
    for name in ("email", "account"):  # the guest's address or the account's: two indexes
        assert "ix_orders_email" in plans[name], plans[name]
        assert "ix_orders_user_id_id" in plans[name] or name != "account", plans[name]
    # A range is read from its end in the index, however old it is (not from the newest order).
    for name in ("range", "early"):
        assert "Index Scan Backward using ix_orders_created_at_id" in plans[name], plans[name]
    # The export's cursor reads the year in index order: rows flow from the first, no sort.
    assert "ix_orders_created_at_id" in export and "Sort" not in export, export
    assert all(found.values()), found  # each filter finds something: the plans are real
    engine.dispose()
