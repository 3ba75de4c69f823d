"""Payments through a provider: the shop never sees a card, and an order is marked paid only
by a notification whose signature verifies, never by what the browser says.

A provider (the built-in test provider, or a Stripe or Adyen adapter: docs/payments.md)
implements :class:`PaymentProvider`. :func:`apply_notification` is the webhook's whole rule:
verify, record the event once (a replay changes nothing), then move the order.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from .errors import IllegalTransition, InvalidNotification
from .models import orders, payment_events
from .order_lifecycle import (
    CANCELLED,
    DELIVERED,
    FAILED,
    PAID,
    PENDING,
    SHIPPED,
    Listener,
    product_ids,
    transition,
)
from .order_records import Order, load_order

log = logging.getLogger(__name__)

SUCCEEDED, DECLINED = "succeeded", "declined"
SIGNATURE_HEADER = "Shop-Signature"
TOLERANCE_SECONDS = 300  # a signed notification older (or newer) than this is refused


@dataclass(frozen=True)
class Payment:
    id: str  # the provider's reference, kept on the order
    url: str  # where the shopper's browser is sent to pay


@dataclass(frozen=True)
class Notification:
    event_id: str  # unique per notification: a second one with this id changes nothing
    payment_ref: str
    order_id: int
    outcome: str  # SUCCEEDED or DECLINED
    amount_cents: int


class PaymentProvider(Protocol):
    name: str

    def create_payment(self, order: Order, *, return_url: str) -> Payment:
        """Start a hosted payment for the order; the browser comes back to ``return_url``."""
        ...

    def verify_notification(self, headers: Mapping[str, str], body: bytes) -> Notification:
        """The notification, or :class:`InvalidNotification` (bad signature, stale, replayed
        outside the tolerance, malformed)."""
        ...

    def refund(self, payment_ref: str, amount_cents: int) -> str:
        """Refund the payment (wholly); returns the provider's refund reference."""
        ...


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix time>,v1=<hex HMAC-SHA256 over "<t>." + body>``, as Stripe signs webhooks."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def check_signature(secret: str, header: str | None, body: bytes, *, now: float) -> None:
    """Refuse a missing or wrong signature, and a timestamp outside the tolerance (a captured
    notification cannot be replayed later; within it the event id stops a replay)."""
    if not header:
        raise InvalidNotification(f"The {SIGNATURE_HEADER} header is missing.")
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        raise InvalidNotification("The signature has no valid timestamp.") from None
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise InvalidNotification("The notification's signature does not verify.")
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise InvalidNotification("The notification is too old (or from the future).")


@dataclass(frozen=True)
class Applied:
    order_id: int
    status: str  # the order's status after the notification
    changed: bool  # False for a replay or a notification the order had already seen
    restocked: list[int]  # product ids whose stock came back (a decline)
    cart_owner: str | None  # the owner whose cart to clear after commit (paid)


def apply_notification(
    engine: Engine,
    provider: PaymentProvider,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: datetime,
    listeners: Sequence[Listener] = (),
    retried: bool = False,
) -> Applied:
    """Verify and apply a notification, once: ``succeeded`` pays a pending order, ``declined``
    fails it (its stock returns). A payment that succeeds for an order no longer waiting
    (expired meanwhile) is refunded. Whether it arrives before or after the browser returns
    makes no difference: the order's status is the only state."""
    note = provider.verify_notification(headers, body)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(payment_events).values(
                    provider=provider.name,
                    event_id=note.event_id,
                    order_id=note.order_id,
                    outcome=note.outcome,
                    received_at=now,
                )
            )
            order = conn.execute(
                select(orders.c.status, orders.c.payment_ref, orders.c.total_cents).where(
                    orders.c.id == note.order_id
                )
            ).first()
            if order is None or order.payment_ref != note.payment_ref:
                raise InvalidNotification("The notification names no payment of this shop.")
            if order.total_cents != note.amount_cents:
                raise InvalidNotification("The notification's amount is not the order's.")
            target = PAID if note.outcome == SUCCEEDED else FAILED
            if order.status != PENDING:
                if note.outcome == SUCCEEDED and order.status != PAID:
                    refund = provider.refund(note.payment_ref, note.amount_cents)
                    log.warning(
                        "order %s was %s when its payment succeeded: refunded (%s)",
                        note.order_id,
                        order.status,
                        refund,
                    )
                return Applied(note.order_id, order.status, False, [], None)
            transition(
                conn,
                note.order_id,
                target,
                expected=PENDING,
                at=now,
                listeners=listeners,
                note=f"{provider.name} payment {note.outcome}",
            )
            restocked = product_ids(conn, note.order_id) if target == FAILED else []
            owner = _cart_owner(load_order(conn, note.order_id)) if target == PAID else None
    except IntegrityError:
        # This event id was applied before: a replay, or the provider retrying.
        with engine.connect() as conn:
            status = conn.execute(
                select(orders.c.status).where(orders.c.id == note.order_id)
            ).scalar()
        return Applied(note.order_id, status or "", False, [], None)
    except IllegalTransition:
        # The expiry sweeper (or another notification) changed the order between our read and
        # our UPDATE, and everything here rolled back: apply it again to the order as it now
        # is (a success for an expired order is refunded then, and the event recorded).
        if retried:
            raise
        return apply_notification(
            engine, provider, headers, body, now=now, listeners=listeners, retried=True
        )
    return Applied(note.order_id, target, True, restocked, owner)


def _cart_owner(order: Order) -> str:
    """Whose cart the order came from: the account's once claimed, else the owner that placed
    it (``u:<id>`` / ``s:<session ref>``, as shop.cart.CartOwner names them)."""
    return f"u:{order.user_id}" if order.user_id is not None else order.owner_key


def ensure_payment(
    engine: Engine, provider: PaymentProvider, order: Order, *, return_url: str
) -> str:
    """The order's payment URL, creating the payment at the provider once (outside any
    transaction: a provider call must not hold row locks). Two concurrent calls may both ask
    the provider; the first stored wins and the other payment is never used."""
    if order.payment_url:
        return order.payment_url
    payment = provider.create_payment(order, return_url=return_url)
    with engine.begin() as conn:
        conn.execute(
            update(orders)
            .where(orders.c.id == order.id, orders.c.payment_ref.is_(None))
            .values(payment_ref=payment.id, payment_url=payment.url)
        )
        stored = conn.execute(select(orders.c.payment_url).where(orders.c.id == order.id))
        return stored.scalar_one()


def cancel_order(
    engine: Engine,
    provider: PaymentProvider,
    order_id: int,
    *,
    now: datetime,
    listeners: Sequence[Listener] = (),
    expected: str | None = None,
) -> list[int]:
    """Cancel a paid order: its stock returns and its payment is refunded through the
    provider, in the transaction that changes the status (a failed refund cancels nothing).
    The refund comes after the conditional status change, so of two cancels of one order only
    the one whose change applied refunds. ``expected``: the status the caller saw (anything
    else is refused). Returns the product ids whose stock came back."""
    with engine.begin() as conn:
        found = load_order(conn, order_id) if _exists(conn, order_id) else None
        if found is None:
            raise IllegalTransition(f"There is no order {order_id}.")
        transition(
            conn,
            order_id,
            CANCELLED,
            expected=expected,
            at=now,
            listeners=listeners,
            note="cancelled",
        )
        if found.payment_ref:
            refund = provider.refund(found.payment_ref, found.total_cents)
            log.info("order %s cancelled, refunded (%s)", order_id, refund)
        return product_ids(conn, order_id)


def ship_order(
    engine: Engine,
    order_id: int,
    *,
    now: datetime,
    tracking: str | None = None,
    listeners: Sequence[Listener] = (),
    expected: str | None = None,
) -> None:
    with engine.begin() as conn:
        note = f"tracking {tracking}" if tracking else None
        values = {"tracking": tracking} if tracking else None
        transition(
            conn,
            order_id,
            SHIPPED,
            expected=expected,
            at=now,
            listeners=listeners,
            note=note,
            values=values,
        )


def deliver_order(
    engine: Engine,
    order_id: int,
    *,
    now: datetime,
    listeners: Sequence[Listener] = (),
    expected: str | None = None,
) -> None:
    """A shipped order arrived (the carrier says so)."""
    with engine.begin() as conn:
        transition(conn, order_id, DELIVERED, expected=expected, at=now, listeners=listeners)


def _exists(conn: Connection, order_id: int) -> bool:
    return conn.execute(select(orders.c.id).where(orders.c.id == order_id)).first() is not None
