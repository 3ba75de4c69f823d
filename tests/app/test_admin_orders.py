"""Orders in the back office as staff use them: the list and its filters, an order's page, the
actions its status allows (each audited in the transaction of the change, refused with a
message when illegal), and the streamed CSV export."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select, update

from shop import audit, order_actions, order_admin
from shop.errors import InvalidInput
from shop.models import orders, outbox, products, users
from tests.support import KETTLE, Shopper, back_office_user, page_text

GUEST = "guest@example.com"


# -- helpers ---------------------------------------------------------------------------------


def engine_of(app):
    return app.extensions["shop"].engines.primary


def add_orders(app, *rows: dict) -> list[int]:
    """Orders written straight into the table (the list and export only read them)."""
    ids = []
    with engine_of(app).begin() as conn:
        for row in rows:
            values = {
                "owner_key": f"s:{secrets.token_hex(4)}",
                "idempotency_key": secrets.token_hex(8),
                "status": "paid",
                "total_cents": 1000,
                "shipping_name": "Ada Lovelace",
                "shipping_address": "1 Analytical St",
                "created_at": datetime(2026, 11, 15, 12, tzinfo=UTC),
                **row,
            }
            ids.append(conn.execute(insert(orders).values(**values)).inserted_primary_key[0])
    return ids


def paid_order(app, *, quantity: int = 2) -> dict:
    """A guest's order of kettles, placed and paid through the test provider."""
    shopper = Shopper(app.test_client(), app)
    shopper.add(KETTLE, quantity)
    body = {"email": GUEST, "shipping": {"name": "Grace Hopper", "address": "2 Compiler Lane"}}
    placed = shopper.api(
        "POST", "/orders", json=body, headers={"Idempotency-Key": secrets.token_hex(8)}
    )
    assert placed.status_code == 201, placed.get_json()
    order = placed.get_json()["order"]
    paid = shopper.client.post(order["payment_url"], json={"outcome": "succeed"})
    assert paid.status_code == 200
    return order


def status_of(app, order_id: int) -> str:
    with engine_of(app).connect() as conn:
        return conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar_one()


def stock_of(app, product_id: int) -> int:
    with engine_of(app).connect() as conn:
        return conn.execute(
            select(products.c.stock).where(products.c.id == product_id)
        ).scalar_one()


def listed(browser, query: str = "") -> list[int]:
    page = browser.client.get(f"/admin/orders{query}")
    assert page.status_code == 200, page_text(page)[:500]
    text = page.get_data(as_text=True)
    return [int(part.split('"')[0]) for part in text.split('href="/admin/orders/')[1:]]


def order_entries(app, order_id: int) -> list[audit.Entry]:
    return audit.entries(engine_of(app), entity="order", entity_id=str(order_id))


class Refunds:
    """Counts the provider's refunds (the test provider keeps none)."""

    def __init__(self, app, monkeypatch) -> None:
        self.calls: list[tuple[str, int]] = []
        provider = app.extensions["shop"].payment_provider
        original = provider.refund

        def refund(payment_ref: str, amount_cents: int) -> str:
            self.calls.append((payment_ref, amount_cents))
            return original(payment_ref, amount_cents)

        monkeypatch.setattr(provider, "refund", refund)


# -- the list --------------------------------------------------------------------------------


def test_each_filter_narrows_the_list(app):
    with engine_of(app).begin() as conn:
        account = conn.execute(
            insert(users).values(email="member@example.com", password_hash="x")
        ).inserted_primary_key[0]
    early, late, shipped, member, big = add_orders(
        app,
        {"email": "ann@example.com", "created_at": datetime(2026, 11, 1, 9, tzinfo=UTC)},
        {"email": "bob@example.com", "created_at": datetime(2026, 11, 30, 23, tzinfo=UTC)},
        {"email": "anna@example.org", "status": "shipped"},
        {"email": None, "user_id": account},
        {"email": "carl@example.com", "total_cents": 12_345},
    )
    browser = back_office_user(app, "staff")
    everything = [late, big, member, shipped, early]
    assert listed(browser) == everything  # newest first (the same time: the later number)
    assert listed(browser, "?status=shipped") == [shipped]
    assert listed(browser, "?status=shipped&status=paid") == everything
    assert listed(browser, "?from=2026-11-30&to=2026-11-30") == [late]  # the whole last day
    assert listed(browser, "?to=2026-11-01") == [early]
    assert listed(browser, "?email=ANN") == [shipped, early]  # prefix, any case
    assert listed(browser, "?email=ann@example.com") == [early]
    assert listed(browser, "?email=member@") == [member]  # the account's address
    assert listed(browser, "?email=%25") == []  # a wildcard is a character
    assert listed(browser, "?min_total=100") == [big]
    assert listed(browser, "?max_total=10.00") == [late, member, shipped, early]
    assert listed(browser, f"?q=%23{late}") == [late]
    assert listed(browser, f"?q={late}&status=shipped") == []
    assert "Ada Lovelace" in page_text(browser.client.get("/admin/orders"))


BAD_FILTERS = [
    ("?status=lost", "no order status 'lost'"),
    ("?from=2026-13-01", "Dates are written like"),
    ("?from=2026-11-02&to=2026-11-01", "ends before it starts"),
    ("?min_total=ten", "is not a price"),
    ("?min_total=5&max_total=4", "highest total is below"),
    ("?q=abc", "order number is a whole number"),
    ("?before=x", "does not exist"),
]


def test_a_bad_filter_is_a_400_with_the_form(app):
    browser = back_office_user(app, "staff")
    for query, message in BAD_FILTERS:
        page = browser.client.get(f"/admin/orders{query}")
        assert page.status_code == 400, query
        assert message in page_text(page), query
        assert 'class="filters"' in page.get_data(as_text=True)


def test_keyset_pages_neither_repeat_nor_skip(app):
    base = datetime(2026, 11, 1, tzinfo=UTC)
    made = [
        {
            "status": "paid" if i % 3 else "shipped",
            "created_at": base + timedelta(minutes=i * 7 % 5),
        }
        for i in range(23)  # times out of order, and many alike
    ]
    ids = add_orders(app, *made)
    engine = engine_of(app)
    wanted = order_admin.parse_filter(statuses=["paid"])
    seen, cursor = [], ""
    while True:
        before = order_admin.parse_cursor(cursor)
        rows, cursor = order_admin.list_orders(engine, wanted, before=before, limit=4)
        seen += [row.id for row in rows]
        if cursor is None:
            break
    paid = [
        (row["created_at"], i) for i, row in zip(ids, made, strict=True) if row["status"] == "paid"
    ]
    assert seen == [i for _, i in sorted(paid, reverse=True)]


def test_a_page_link_keeps_the_filters(app):
    ids = add_orders(app, *({} for _ in range(51)))
    browser = back_office_user(app, "staff")
    first = page_text(browser.client.get("/admin/orders?status=paid&status=shipped"))
    link = first.split('<p class="pagination"><a href="')[1].split('"')[0]
    assert link.count("status=") == 2
    second = listed(browser, link.removeprefix("/admin/orders"))
    assert listed(browser) == ids[:0:-1]  # the first page: the newest 50
    assert second == [ids[0]]


# -- an order's page and its actions --------------------------------------------------------


def test_the_order_page_shows_lines_shipping_payment_and_history(app):
    order = paid_order(app)
    browser = back_office_user(app, "staff")
    page = page_text(browser.client.get(f"/admin/orders/{order['id']}"))
    with engine_of(app).connect() as conn:
        ref = conn.execute(
            select(orders.c.payment_ref).where(orders.c.id == order["id"])
        ).scalar_one()
    for shown in ("Blue Kettle", "Grace Hopper", "2 Compiler Lane", GUEST, ref, "€39.98"):
        assert shown in page
    assert "Awaiting payment" in page and "test payment succeeded" in page  # the history
    assert "Mark shipped" in page and "Cancel and refund" in page
    assert "Mark delivered" not in page  # not allowed for a paid order
    assert browser.client.get("/admin/orders/999999").status_code == 404


def test_shipping_with_tracking_mails_the_customer_and_is_audited(make_app, mailbox):
    app = make_app(mail_worker=False)
    order = paid_order(app)
    browser = back_office_user(app, "staff", email="clerk@example.com")
    shipped = browser.post_form(f"/admin/orders/{order['id']}/ship", {"tracking": " 1Z 999 "})
    assert shipped.status_code == 303
    assert "done=" in shipped.headers["Location"]
    assert "shipped" in page_text(browser.client.get(shipped.headers["Location"]))
    assert status_of(app, order["id"]) == "shipped"
    app.extensions["shop"].mail_delivery().run_once()
    assert f"Order {order['id']} has shipped" in [m.subject for m in mailbox.to(GUEST)]
    (entry,) = order_entries(app, order["id"])
    assert (entry.action, entry.actor) == ("order.ship", "clerk@example.com")
    assert entry.before == {"status": "paid"}
    assert entry.after == {"status": "shipped", "tracking": "1Z 999"}
    page = page_text(browser.client.get(f"/admin/orders/{order['id']}"))
    assert "1Z 999" in page and "Mark delivered" in page


def test_no_audit_entry_no_shipment(app, monkeypatch):
    """The audit entry is written in the transaction of the change: if it fails, so does the
    change (and its mail)."""
    order = paid_order(app)

    def broken(*args, **kwargs):
        raise RuntimeError("audit trail unavailable")

    monkeypatch.setattr(audit, "record", broken)
    services = app.extensions["shop"]
    with pytest.raises(RuntimeError):
        order_actions.ship(
            engine_of(app),
            audit.Actor(None, "clerk@example.com", "staff"),
            order["id"],
            tracking="T1",
            at=datetime.now(UTC),
            listeners=services.order_listeners,
        )
    assert status_of(app, order["id"]) == "paid"
    with engine_of(app).connect() as conn:
        kinds = conn.execute(select(outbox.c.kind)).scalars().all()
    assert "order_shipped" not in kinds


def test_a_tracking_number_too_long_is_refused(app):
    order = paid_order(app)
    browser = back_office_user(app, "staff")
    answer = browser.post_form(f"/admin/orders/{order['id']}/ship", {"tracking": "x" * 201})
    assert answer.status_code == 400 and "at most 200" in page_text(answer)
    assert status_of(app, order["id"]) == "paid"


def test_cancelling_refunds_once_restocks_and_the_shop_shows_it(make_app, monkeypatch):
    app, other = make_app(), make_app()
    order = paid_order(app, quantity=3)
    refunds = Refunds(app, monkeypatch)
    shopper = Shopper(other.test_client(), other)
    assert shopper.client.get(f"/api/v1/products/{KETTLE}").get_json()["stock"] == 7  # cached
    browser = back_office_user(app, "staff")
    path = f"/admin/orders/{order['id']}/cancel"

    unconfirmed = browser.post_form(path)
    assert unconfirmed.status_code == 400 and "Tick the box" in page_text(unconfirmed)
    assert status_of(app, order["id"]) == "paid" and refunds.calls == []

    cancelled = browser.post_form(path, {"confirm": "yes"})
    assert cancelled.status_code == 303
    again = browser.post_form(path, {"confirm": "yes"})  # a double submit
    assert again.status_code == 409
    assert "cannot become cancelled" in page_text(again)
    assert len(refunds.calls) == 1 and refunds.calls[0][1] == 3 * 1999
    assert status_of(app, order["id"]) == "cancelled"
    assert stock_of(app, KETTLE) == 10
    assert shopper.client.get(f"/api/v1/products/{KETTLE}").get_json()["stock"] == 10
    (entry,) = order_entries(app, order["id"])
    assert entry.action == "order.cancel"
    assert entry.after == {"status": "cancelled", "refunded_cents": 3 * 1999}


def test_delivering_a_shipped_order(app):
    order = paid_order(app)
    browser = back_office_user(app, "staff")
    assert browser.post_form(f"/admin/orders/{order['id']}/ship").status_code == 303
    delivered = browser.post_form(f"/admin/orders/{order['id']}/deliver")
    assert delivered.status_code == 303
    assert status_of(app, order["id"]) == "delivered"
    actions = [e.action for e in order_entries(app, order["id"])]
    assert actions == ["order.deliver", "order.ship"]
    page = page_text(browser.client.get(f"/admin/orders/{order['id']}"))
    assert "Nothing to do" in page


ILLEGAL = [
    ("pending_payment", "ship", {}),
    ("paid", "deliver", {}),
    ("shipped", "cancel", {"confirm": "yes"}),
    ("delivered", "ship", {}),
    ("expired", "cancel", {"confirm": "yes"}),
]


def test_an_illegal_action_is_refused_with_a_message_and_changes_nothing(app, monkeypatch):
    refunds = Refunds(app, monkeypatch)
    browser = back_office_user(app, "staff")
    for status, action, data in ILLEGAL:
        (order_id,) = add_orders(app, {"status": status, "payment_ref": "pay_1"})
        answer = browser.post_form(f"/admin/orders/{order_id}/{action}", data)
        assert answer.status_code == 409, (status, action)
        assert f"Order {order_id} is {status}: it cannot become" in page_text(answer)
        assert status_of(app, order_id) == status
        assert order_entries(app, order_id) == []
    assert refunds.calls == []


def test_a_change_made_meanwhile_is_refused(app, monkeypatch):
    """The action names the status it read; if another change lands between that read and
    the update, nothing is applied (and nothing refunded)."""
    order = paid_order(app)
    refunds = Refunds(app, monkeypatch)
    real = order_actions.status_of

    def read_then_someone_ships(conn, order_id):
        seen = real(conn, order_id)
        with engine_of(app).begin() as other:
            other.execute(update(orders).where(orders.c.id == order_id).values(status="shipped"))
        return seen

    monkeypatch.setattr(order_actions, "status_of", read_then_someone_ships)
    browser = back_office_user(app, "staff")
    answer = browser.post_form(f"/admin/orders/{order['id']}/cancel", {"confirm": "yes"})
    assert answer.status_code == 409
    assert refunds.calls == [] and status_of(app, order["id"]) == "shipped"
    assert stock_of(app, KETTLE) == 8


def test_the_cli_delivers_too(app):
    order = paid_order(app)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["order", "ship", str(order["id"])]).exit_code == 0
    delivered = runner.invoke(args=["order", "deliver", str(order["id"])])
    assert delivered.exit_code == 0, delivered.output
    assert status_of(app, order["id"]) == "delivered"
    again = runner.invoke(args=["order", "deliver", str(order["id"])])
    assert again.exit_code != 0 and "cannot become delivered" in again.output


# -- the export ------------------------------------------------------------------------------


def test_the_export_streams_the_range_as_safe_csv(app):
    inside, evil, _ = add_orders(
        app,
        {"created_at": datetime(2026, 11, 1, 0, 0, tzinfo=UTC), "email": "ann@example.com"},
        {
            "created_at": datetime(2026, 11, 3, 23, 59, tzinfo=UTC),
            "email": "=cmd@example.com",
            "shipping_name": "+SUM(A1)",
            "tracking": "@1",
            "total_cents": 12_34,
        },
        {"created_at": datetime(2026, 11, 4, 0, 0, tzinfo=UTC)},  # the day after
    )
    browser = back_office_user(app, "staff")
    answer = browser.client.get("/admin/orders/export.csv?from=2026-11-01&to=2026-11-03")
    assert answer.status_code == 200
    assert answer.is_streamed
    assert answer.mimetype == "text/csv"
    assert (
        answer.headers["Content-Disposition"]
        == 'attachment; filename="orders-2026-11-01-2026-11-03.csv"'
    )
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))
    assert rows[0] == [
        "order",
        "created",
        "status",
        "email",
        "shipping_name",
        "total",
        "currency",
        "payment_ref",
        "tracking",
        "lines",
    ]
    assert [int(row[0]) for row in rows[1:]] == [inside, evil]
    assert rows[1][1] == "2026-11-01T00:00:00+00:00"
    assert rows[2][3:10] == ["'=cmd@example.com", "'+SUM(A1)", "12.34", "EUR", "", "'@1", "0"]


def test_the_export_counts_lines_and_takes_the_list_filters(app):
    order = paid_order(app)
    add_orders(app, {"status": "shipped", "created_at": datetime.now(UTC)})
    today = datetime.now(UTC).date().isoformat()
    browser = back_office_user(app, "staff")
    answer = browser.client.get(f"/admin/orders/export.csv?from={today}&to={today}&status=paid")
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))[1:]
    assert [(int(r[0]), r[2], r[3], r[9]) for r in rows] == [(order["id"], "paid", GUEST, "1")]


def test_the_export_needs_a_valid_range(app):
    browser = back_office_user(app, "staff")
    for query in (
        "",
        "?from=2026-11-01",
        "?from=2026-11-01&to=yesterday",
        "?from=2026-11-02&to=2026-11-01",
    ):
        answer = browser.client.get(f"/admin/orders/export.csv{query}")
        assert answer.status_code == 400, query
        assert answer.mimetype == "text/html"


def test_an_order_number_is_read_with_or_without_its_hash():
    assert order_admin.parse_number("#12") == order_admin.parse_number(" 12 ") == 12
    with pytest.raises(InvalidInput):
        order_admin.parse_number("12a")
    assert order_admin.allowed_actions("paid") == ("ship", "cancel")
    assert order_admin.allowed_actions("shipped") == ("deliver",)
    assert order_admin.allowed_actions("cancelled") == ()
