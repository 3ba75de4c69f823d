"""What staff do to an order: ship it, mark it delivered, cancel it with a refund.

The actions go through the same functions as the command line (shop/payments.py), so the mail
outbox and every other status listener see them alike; the audit entry is one more listener,
written in the transaction of the status change: an entry exists exactly when the change
committed. Each action names the status the order was read in (``expected``), so a change made
meanwhile by someone else is refused (:class:`IllegalTransition`) rather than applied on top
of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine

from . import audit
from .errors import InvalidInput
from .order_admin import status_of
from .order_lifecycle import Listener
from .order_records import Order, load_order
from .payments import PaymentProvider, cancel_order, deliver_order, ship_order

MAX_TRACKING = 200  # orders.tracking


def _current(engine: Engine, order_id: int) -> str:
    with engine.connect() as conn:
        return status_of(conn, order_id)


def _audited(actor: audit.Actor, action: str, before: str, at: datetime, **after) -> Listener:
    """A status listener that records the change in the audit trail, in its transaction."""

    def record(conn: Connection, order: Order, to: str) -> None:
        audit.record(
            conn,
            actor,
            action,
            entity="order",
            entity_id=order.id,
            before={"status": before},
            after={"status": to, **after},
            at=at,
        )

    return record


# -- actions -------------------------------------------------------------------------------


def check_tracking(text: str | None) -> str | None:
    tracking = " ".join((text or "").split())
    if len(tracking) > MAX_TRACKING:
        raise InvalidInput(
            f"A tracking number is at most {MAX_TRACKING} characters.", field="tracking"
        )
    return tracking or None


def ship(
    engine: Engine,
    actor: audit.Actor,
    order_id: int,
    *,
    tracking: str | None,
    at: datetime,
    listeners: Sequence[Listener] = (),
) -> None:
    """Mark a paid order shipped, with the carrier's tracking number if there is one (the
    shipping mail goes out through the listeners, as from the command line)."""
    number = check_tracking(tracking)
    before = _current(engine, order_id)
    audited = _audited(actor, "order.ship", before, at, tracking=number)
    ship_order(
        engine,
        order_id,
        now=at,
        tracking=number,
        expected=before,
        listeners=[*listeners, audited],
    )


def deliver(
    engine: Engine,
    actor: audit.Actor,
    order_id: int,
    *,
    at: datetime,
    listeners: Sequence[Listener] = (),
) -> None:
    before = _current(engine, order_id)
    audited = _audited(actor, "order.deliver", before, at)
    deliver_order(engine, order_id, now=at, expected=before, listeners=[*listeners, audited])


def cancel(
    engine: Engine,
    provider: PaymentProvider,
    actor: audit.Actor,
    order_id: int,
    *,
    at: datetime,
    listeners: Sequence[Listener] = (),
) -> list[int]:
    """Cancel a paid order: refunded through the provider once, its stock returned (the
    caller invalidates the catalogue for the returned product ids)."""
    with engine.connect() as conn:
        before = status_of(conn, order_id)
        order = load_order(conn, order_id)
    refunded = order.total_cents if order.payment_ref else 0
    audited = _audited(actor, "order.cancel", before, at, refunded_cents=refunded)
    return cancel_order(
        engine, provider, order_id, now=at, expected=before, listeners=[*listeners, audited]
    )
