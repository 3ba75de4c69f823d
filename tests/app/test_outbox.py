"""The mail outbox: order mails are written in the transaction of the status change and
delivered by a worker with retries, so an SMTP outage delays mail and loses none. The SMTP
server is real (aiosmtpd in this process), never a mock of smtplib."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from shop.config import ConfigError, Settings
from shop.mail import Message
from shop.models import outbox, users
from shop.order_mail import OrderMails, order_mail_listener
from shop.order_records import Order, list_orders
from shop.outbox import RetryPolicy, enqueue
from tests.support import KETTLE, MUG, Mailbox, Shopper, free_port

ADA = "ada@example.com"


class MovableClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 9, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def smtp_server(port: int):
    """A real SMTP server on ``port`` (one that was down until now)."""
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    return mailbox, controller


def placed_order(app) -> Order:
    """Ada's order (two kettles and a mug), placed through the checkout form."""
    shopper = Shopper(app.test_client(), app)
    shopper.register(ADA)
    shopper.add(KETTLE, 2)
    shopper.add(MUG)
    assert shopper.checkout(name="Ada Lovelace", address="1 Analytical St").status_code == 303
    engine = app.extensions["shop"].engines.primary
    with engine.connect() as conn:
        user_id = conn.execute(select(users.c.id).where(users.c.email == ADA)).scalar_one()
    (order,) = list_orders(engine, user_id=user_id)
    return order


def mark(app, order: Order, status: str, link: str | None = "https://shop.example.com/orders/1"):
    """What the life cycle's transition does: the listener runs in the status change's
    transaction."""
    with app.extensions["shop"].engines.primary.begin() as conn:
        order_mail_listener(conn, order, status, order_link=link)


def rows(app) -> list:
    with app.extensions["shop"].engines.primary.connect() as conn:
        return conn.execute(select(outbox).order_by(outbox.c.id)).all()


# -- the promise: an outage delays mail, loses none, and sends it once ------------------------


def test_smtp_down_an_order_paid_then_smtp_up_the_mail_arrives_exactly_once(make_app):
    order = placed_order(make_app(mail_worker=False))
    port = free_port()  # nothing listens: the mail server is down
    app = make_app(smtp_url=f"smtp://127.0.0.1:{port}", smtp_timeout=1, mail_worker=False)
    services = app.extensions["shop"]
    clock = MovableClock()
    delivery = services.mail_delivery()
    delivery.clock = clock
    mark(app, order, "paid")  # the order is paid; its mail is written with the change

    report = delivery.run_once()
    assert (report.sent, report.retrying, report.failed) == (0, 1, 0)
    (row,) = rows(app)
    assert (row.status, row.attempts) == ("pending", 1)
    assert "ConnectionRefusedError" in row.last_error

    mailbox, controller = smtp_server(port)  # the server is back
    try:
        assert delivery.run_once().sent == 0  # not due before its back-off
        clock.advance(services.settings.mail_retry_delay)
        assert delivery.run_once().sent == 1
        clock.advance(7 * 24 * 3600)
        assert delivery.run_once().sent == 0
        (mail,) = mailbox.to(ADA)
    finally:
        controller.stop()
    (row,) = rows(app)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert mail.message["Message-ID"] == f"<{row.message_key}@localhost>"
    assert mail.subject == f"Order {order.id} confirmed: thank you for your payment"


def test_the_worker_thread_of_an_instance_delivers_once_the_server_is_back(make_app):
    order = placed_order(make_app(mail_worker=False))
    port = free_port()
    app = make_app(
        smtp_url=f"smtp://127.0.0.1:{port}",
        smtp_timeout=1,
        mail_poll_seconds=0.05,
        mail_retry_delay=0.2,
        mail_retry_max_delay=0.2,
    )
    app.test_client().get("/healthz")  # an instance's first request starts its worker
    mark(app, order, "paid")
    deadline = time.monotonic() + 5
    while rows(app)[0].attempts < 1:
        assert time.monotonic() < deadline, "the worker never tried"
        time.sleep(0.02)
    mailbox, controller = smtp_server(port)
    try:
        while not mailbox.to(ADA):
            assert time.monotonic() < deadline + 5, "the mail never arrived"
            time.sleep(0.02)
        time.sleep(0.5)  # several more polls: nothing more goes out
        assert len(mailbox.to(ADA)) == 1
    finally:
        controller.stop()
    assert rows(app)[0].status == "sent"
    worker = app.extensions["shop"].mail_worker
    app.extensions["shop"].close()
    assert worker._thread is not None and not worker._thread.is_alive()


def test_a_mail_exists_only_if_the_status_change_committed(app):
    order = placed_order(app)
    engine = app.extensions["shop"].engines.primary
    with pytest.raises(RuntimeError), engine.begin() as conn:
        order_mail_listener(conn, order, "paid", order_link=None)
        raise RuntimeError("the status change failed")
    assert rows(app) == []
    mark(app, order, "paid")
    assert len(rows(app)) == 1


# -- the order mails --------------------------------------------------------------------------


def test_the_paid_mail_has_text_and_html_with_lines_total_name_and_link(app, mailbox):
    order = placed_order(app)
    mark(app, order, "paid", link="https://shop.example.com/orders/7?token=a&b=<c>")
    assert app.extensions["shop"].mail_delivery().run_once().sent == 1
    mail = mailbox.last(ADA)
    body = mail.body
    html_part = mail.message.get_body(preferencelist=("html",)).get_content()
    assert f"order {order.id}" in body
    assert "2 × Blue Kettle  €39.98" in body and "1 × Red Mug  €5.99" in body
    assert "Total  €45.97" in body
    assert "Ada Lovelace" in body and "1 Analytical St" in body
    assert "https://shop.example.com/orders/7?token=a&b=<c>" in body
    for shown in ("Blue Kettle", "€39.98", "€45.97", "Ada Lovelace", f"order {order.id}"):
        assert shown in html_part
    assert 'href="https://shop.example.com/orders/7?token=a&amp;b=&lt;c&gt;"' in html_part
    assert "<c>" not in html_part


def test_shipping_sends_a_notice_and_other_statuses_send_nothing(app, mailbox):
    order = placed_order(app)
    for status in ("placed", "pending_payment", "payment_failed", "expired", "delivered"):
        mark(app, order, status)
    assert rows(app) == []
    mark(app, order, "shipped")
    assert app.extensions["shop"].mail_delivery().run_once().sent == 1
    assert mailbox.last(ADA).subject == f"Order {order.id} has shipped"


def test_order_mails_bound_to_links_and_currency_for_the_life_cycle(app, mailbox):
    """``OrderMails`` is the listener the life cycle registers: it builds each order's link."""
    order = placed_order(app)
    listener = OrderMails(links=lambda o: f"https://shop.example.com/orders/{o.id}", currency="GBP")
    with app.extensions["shop"].engines.primary.begin() as conn:
        listener(conn, order, "paid")
        listener(conn, order, "placed")
    assert app.extensions["shop"].mail_delivery().run_once().sent == 1
    body = mailbox.last(ADA).body
    assert f"https://shop.example.com/orders/{order.id}" in body and "Total  £45.97" in body


# -- retries, leases, logs ----------------------------------------------------------------------


def test_retries_back_off_exponentially_then_give_up(make_app, mailbox, caplog):
    app = make_app(
        mail_worker=False, mail_retry_attempts=3, mail_retry_delay=10, mail_retry_max_delay=15
    )
    delivery = app.extensions["shop"].mail_delivery()
    clock = delivery.clock = MovableClock()
    mailbox.refuse = "451 4.3.0 try again later"
    with app.extensions["shop"].engines.primary.begin() as conn:
        enqueue(conn, Message(ADA, "Hello", "Hi"), clock=clock)
    waits = []
    with caplog.at_level(logging.INFO, logger="shop"):
        for _ in range(3):
            report = delivery.run_once()
            row = rows(app)[0]
            waits.append((row.next_attempt_at.replace(tzinfo=UTC) - clock()).total_seconds())
            clock.advance(3600)
    assert waits[:2] == [10, 15]  # 10, then 20 capped at 15
    assert (report.failed, row.status, row.attempts) == (1, "failed", 3)
    assert "451" in row.last_error
    assert delivery.run_once() == type(report)()  # a failed mail is not tried again
    assert "@example.com" in caplog.text and ADA not in caplog.text
    assert f"<{row.message_key}@localhost>" in caplog.text
    assert mailbox.to(ADA) == []


def test_a_claim_whose_worker_died_is_sent_again_with_the_same_message_id(app, mailbox):
    services = app.extensions["shop"]
    delivery = services.mail_delivery()
    clock = delivery.clock = MovableClock()
    with services.engines.primary.begin() as conn:
        enqueue(conn, Message(ADA, "Hello", "Hi"), clock=clock)
    claimed = delivery._claim()  # ...and the worker dies before it reports back
    assert claimed.status == "sending"
    assert delivery.run_once().sent == 0  # another worker leaves a live claim alone
    clock.advance(delivery.lease)
    assert delivery.run_once().sent == 1
    (mail,) = mailbox.to(ADA)
    assert mail.message["Message-ID"] == delivery.message_id(claimed.message_key)
    assert rows(app)[0].attempts == 2


def test_two_workers_on_sqlite_never_send_a_mail_twice(make_app, mailbox):
    import threading

    app = make_app(mail_worker=False)
    services = app.extensions["shop"]
    with services.engines.primary.begin() as conn:
        for i in range(20):
            enqueue(conn, Message(f"buyer{i}@example.com", f"Mail {i}", "Hi"))
    start = threading.Barrier(2)
    reports = []

    def work() -> None:
        start.wait()
        reports.append(services.mail_delivery().run_once())

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(r.sent for r in reports) == 20
    ids = [mail.message["Message-ID"] for mail in mailbox.received]
    assert len(ids) == 20 and len(set(ids)) == 20


# -- the embedded default, the CLI, the settings ----------------------------------------------


def test_without_smtp_url_order_mail_goes_to_the_log(make_app, caplog):
    app = make_app(smtp_url=None, mail_worker=False)
    order = placed_order(app)
    mark(app, order, "paid")
    with caplog.at_level(logging.WARNING, logger="shop.mail"):
        assert app.extensions["shop"].mail_delivery().run_once().sent == 1
    assert f"Subject: Order {order.id} confirmed" in caplog.text
    assert "Total  €45.97" in caplog.text


def test_the_mail_commands_deliver_once_and_count(make_app, mailbox):
    app = make_app(mail_worker=False)
    with app.extensions["shop"].engines.primary.begin() as conn:
        enqueue(conn, Message(ADA, "Hello", "Hi"))
    runner = app.test_cli_runner()
    assert runner.invoke(args=["mail", "status"]).output.strip() == (
        "pending 1, sending 0, sent 0, failed 0"
    )
    result = runner.invoke(args=["mail", "deliver"])
    assert result.exit_code == 0, result.output
    assert "sent 1, to retry later 0, failed for good 0" in result.output
    assert len(mailbox.to(ADA)) == 1
    assert "sent 1" in runner.invoke(args=["mail", "status"]).output


def test_mail_worker_off_starts_no_thread(make_app):
    app = make_app(mail_worker=False)
    app.test_client().get("/healthz")
    assert app.extensions["shop"].mail_worker._thread is None
    on = make_app()
    on.test_client().get("/healthz")
    assert on.extensions["shop"].mail_worker._thread.is_alive()


def test_retry_policy_doubles_up_to_its_ceiling():
    policy = RetryPolicy(attempts=12, delay=30, max_delay=3600)
    assert [policy.wait_after(n) for n in (1, 2, 3, 7, 8, 1000)] == [30, 60, 120, 1920, 3600, 3600]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SHOP_MAIL_POLL_SECONDS", "0"),
        ("SHOP_MAIL_RETRY_DELAY", "-1"),
        ("SHOP_MAIL_RETRY_ATTEMPTS", "0"),
        ("SHOP_MAIL_RETRY_MAX_DELAY", "5"),  # below the first delay (30)
        ("SHOP_MAIL_WORKER", "sometimes"),
    ],
)
def test_bad_outbox_settings_are_refused(variable, value):
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_process_starts_its_own_worker(make_app):
    """gunicorn forks workers: each must run its own worker thread (threads do not survive a
    fork), as the catalogue's invalidation listener does."""
    app = make_app(mail_poll_seconds=0.05)
    worker = app.extensions["shop"].mail_worker
    worker.ensure_running()
    parent_thread = worker._thread
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is gone; the first request starts one
        code = 1
        try:
            worker.ensure_running()
            code = 0 if worker._thread is not parent_thread and worker._thread.is_alive() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent_thread.is_alive()
