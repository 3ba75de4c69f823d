"""The mails an order's life sends: a confirmation once it is paid, a notice once it ships.

:func:`order_mail_listener` is an order-status listener (``Callable[[Connection, Order, str],
None]``): the life cycle calls it inside the transaction that changes the status, and the mail
goes into the outbox in that same transaction, so it exists exactly when the change committed.
Each mail has a plain-text part and an HTML part with the same content: the order number, its
lines, the total, the shipping name, and a link to the order (for a guest, a link carrying the
order's access token, built by the caller).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from .account_mail import SIGNATURE
from .mail import Message
from .models import orders, users
from .order_records import Order
from .outbox import enqueue

OrderListener = Callable[[Connection, Order, str], None]

SUBJECTS = {
    "paid": "Order {id} confirmed: thank you for your payment",
    "shipped": "Order {id} has shipped",
}
OPENINGS = {
    "paid": "Thank you, {name}: we received your payment for order {id}. Here is what you ordered.",
    "shipped": "Good news, {name}: order {id} is on its way to you.",
}


def money_text(cents: int, currency: str) -> str:
    """Integer cents as '€12.34' (or '12.34 CHF' for a currency without a symbol here)."""
    sign = "-" if cents < 0 else ""
    cents = abs(int(cents))
    symbol = {"EUR": "€", "USD": "$", "GBP": "£"}.get(currency)
    amount = f"{cents // 100:,}.{cents % 100:02d}"
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def order_message(
    order: Order, status: str, *, to: str, order_link: str | None, currency: str
) -> Message | None:
    """The mail for ``order`` entering ``status``, or None when that status sends none."""
    if status not in SUBJECTS:
        return None

    def money(cents: int) -> str:
        return money_text(cents, currency)

    opening = OPENINGS[status].format(name=order.shipping_name, id=order.id)
    lines = [
        (f"{line.quantity} × {line.name}", money(line.line_total_cents)) for line in order.lines
    ]
    text = [opening, ""]
    text += [f"  {what}  {amount}" for what, amount in lines]
    text += [f"  Total  {money(order.total_cents)}", ""]
    text += [f"Shipping to: {order.shipping_name}", order.shipping_address, ""]
    if order_link:
        text += [f"Your order: {order_link}", ""]
    rows = "".join(
        f'<tr><td>{html.escape(what)}</td><td style="text-align:right">{html.escape(amount)}'
        "</td></tr>"
        for what, amount in lines
    )
    link = html.escape(order_link or "", quote=True)
    page = (
        '<!doctype html><html><body style="font-family: sans-serif">'
        f"<p>{html.escape(opening)}</p>"
        f'<table cellpadding="4">{rows}<tr><th style="text-align:left">Total</th>'
        f'<th style="text-align:right">{html.escape(money(order.total_cents))}</th></tr></table>'
        f"<p>Shipping to: <strong>{html.escape(order.shipping_name)}</strong><br>"
        + html.escape(order.shipping_address).replace("\n", "<br>")
        + "</p>"
        + (f'<p><a href="{link}">See your order {order.id}</a></p>' if order_link else "")
        + "<p>-- <br>shop</p></body></html>\n"
    )
    return Message(
        to,
        SUBJECTS[status].format(id=order.id),
        "\n".join(text) + SIGNATURE,
        html=page,
    )


def order_address(conn: Connection, order: Order) -> str | None:
    """Where an order's mail goes: its own address (a guest's order carries one) or its
    account's."""
    own = getattr(order, "email", None)
    if isinstance(own, str) and own:
        return own
    return conn.execute(
        select(users.c.email)
        .select_from(orders.join(users, users.c.id == orders.c.user_id))
        .where(orders.c.id == order.id)
    ).scalar()


def order_mail_listener(
    conn: Connection,
    order: Order,
    new_status: str,
    *,
    to: str | None = None,
    order_link: str | None = None,
    currency: str = "EUR",
) -> None:
    """Put the mail for ``order`` entering ``new_status`` (paid, shipped) into the outbox, in
    the caller's transaction; other statuses send none. ``to`` defaults to the order's
    address (:func:`order_address`)."""
    address = to or order_address(conn, order)
    if address is None:
        return
    message = order_message(order, new_status, to=address, order_link=order_link, currency=currency)
    if message is not None:
        enqueue(conn, message, kind=f"order_{new_status}")


@dataclass(frozen=True)
class OrderMails:
    """:func:`order_mail_listener` with what the caller knows: ``links(order)`` gives the
    absolute link to an order (with a guest's access token), and the shop's currency."""

    links: Callable[[Order], str] | None = None
    currency: str = "EUR"

    def __call__(self, conn: Connection, order: Order, new_status: str) -> None:
        if new_status not in SUBJECTS:
            return
        link = self.links(order) if self.links is not None else None
        order_mail_listener(conn, order, new_status, order_link=link, currency=self.currency)
