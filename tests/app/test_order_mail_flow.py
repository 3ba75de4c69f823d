"""The order mails as a shopper gets them: paying (through the test provider's signed
notification) writes the confirmation into the outbox in the same transaction, and the delivery
sends it once, to the guest's address, with a link that opens the order without the session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiosmtpd.controller import Controller

from tests.support import KETTLE, Mailbox, Shopper, free_port, path_of

GUEST = "guest@example.com"
SHIPPING = {"name": "Grace Hopper", "address": "2 Compiler Lane"}


def guest_order(app) -> tuple[Shopper, dict]:
    shopper = Shopper(app.test_client(), app)
    shopper.add(KETTLE, 2)
    body = {"email": GUEST, "shipping": SHIPPING}
    placed = shopper.api("POST", "/orders", json=body, headers={"Idempotency-Key": "mail-1"})
    assert placed.status_code == 201, placed.get_json()
    return shopper, placed.get_json()["order"]


def pay(shopper: Shopper, order: dict) -> None:
    paid = shopper.client.post(order["payment_url"], json={"outcome": "succeed"})
    assert paid.status_code == 200, paid.get_data(as_text=True)[:300]
    status = shopper.client.get(f"/api/v1/orders/{order['id']}").get_json()["order"]["status"]
    assert status == "paid"


def test_a_guest_who_pays_gets_one_confirmation_with_a_link_to_the_order(make_app, mailbox):
    app = make_app(mail_worker=False, public_url="https://shop.example.com")
    shopper, order = guest_order(app)
    delivery = app.extensions["shop"].mail_delivery()
    assert delivery.run_once().sent == 0  # placing an order sends nothing: it is not paid yet
    pay(shopper, order)

    assert delivery.run_once().sent == 1
    assert delivery.run_once().sent == 0  # once
    (mail,) = mailbox.to(GUEST)
    assert mail.subject == f"Order {order['id']} confirmed: thank you for your payment"
    assert "2 × Blue Kettle" in mail.body and "€39.98" in mail.body
    assert mail.message.get_body(preferencelist=("html",)) is not None
    link = mail.link(f"/orders/{order['id']}")
    assert link.startswith(f"https://shop.example.com/orders/{order['id']}?token=")
    stranger = app.test_client()  # another device: no session, only the mail's link
    opened = stranger.get(path_of(link))
    assert opened.status_code == 200 and "Grace Hopper" in opened.get_data(as_text=True)
    assert stranger.get(f"/orders/{order['id']}").status_code == 404


def test_shipping_from_the_cli_mails_the_shipping_notice(make_app, mailbox):
    app = make_app(mail_worker=False)
    shopper, order = guest_order(app)
    pay(shopper, order)
    shipped = app.test_cli_runner().invoke(
        args=["order", "ship", str(order["id"]), "--tracking", "TRACK-1"]
    )
    assert shipped.exit_code == 0, shipped.output
    assert app.extensions["shop"].mail_delivery().run_once().sent == 2
    subjects = sorted(mail.subject for mail in mailbox.to(GUEST))
    assert subjects == [
        f"Order {order['id']} confirmed: thank you for your payment",
        f"Order {order['id']} has shipped",
    ]


def test_a_payment_while_smtp_is_down_is_mailed_once_smtp_is_back(make_app):
    port = free_port()  # nothing listens: the mail server is down
    app = make_app(smtp_url=f"smtp://127.0.0.1:{port}", smtp_timeout=1, mail_worker=False)
    shopper, order = guest_order(app)
    pay(shopper, order)  # the payment stands whatever the mail server does
    delivery = app.extensions["shop"].mail_delivery()
    now = [datetime.now(UTC)]
    delivery.clock = lambda: now[0]
    report = delivery.run_once()
    assert (report.sent, report.retrying) == (0, 1)

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()  # the server is back
    try:
        now[0] += timedelta(seconds=app.extensions["shop"].settings.mail_retry_delay)
        assert delivery.run_once().sent == 1
        now[0] += timedelta(days=7)
        assert delivery.run_once().sent == 0
    finally:
        controller.stop()
    assert [mail.subject for mail in mailbox.to(GUEST)] == [
        f"Order {order['id']} confirmed: thank you for your payment"
    ]
