"""Orders as they are read back: the record and its JSON, who may see one, and the access
link a guest sees it through. Always read on the primary (a shopper sees their own writes)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, or_, select, update

from .models import order_events, order_lines, orders
from .order_lifecycle import PENDING


@dataclass(frozen=True)
class OrderLine:
    product_id: int
    name: str
    unit_price_cents: int
    quantity: int
    line_total_cents: int


@dataclass(frozen=True)
class OrderEvent:
    status: str
    at: datetime
    note: str | None


@dataclass(frozen=True)
class Order:
    id: int
    status: str
    total_cents: int
    shipping_name: str
    shipping_address: str
    created_at: datetime | None
    lines: list[OrderLine] = field(default_factory=list)
    user_id: int | None = None
    owner_key: str = ""
    email: str | None = None
    hold_expires_at: datetime | None = None
    payment_ref: str | None = None
    payment_url: str | None = None
    tracking: str | None = None
    history: list[OrderEvent] = field(default_factory=list)

    def as_json(self, *, access_token: str | None = None) -> dict:
        """The API's order; ``access_token`` (the guest link's secret) only for its owner."""
        found: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "total_cents": self.total_cents,
            "created_at": _iso(self.created_at),
            "email": self.email,
            "payment_url": self.payment_url if self.status == PENDING else None,
            "hold_expires_at": _iso(self.hold_expires_at) if self.status == PENDING else None,
            "tracking": self.tracking,
        }
        if access_token is not None:
            found["access_token"] = access_token
        return found | {
            "shipping": {"name": self.shipping_name, "address": self.shipping_address},
            "lines": [
                {
                    "product_id": line.product_id,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price_cents": line.unit_price_cents,
                    "line_total_cents": line.line_total_cents,
                }
                for line in self.lines
            ],
            "history": [
                {"status": event.status, "at": _iso(event.at), "note": event.note}
                for event in self.history
            ],
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def access_token(secret: str, order_id: int) -> str:
    """The secret of an order's access link: derived from the shop's key, so its owner can be
    given it again (a repeated submit, a mail), and stored only as a hash."""
    digest = hmac.new(secret.encode(), f"order-access:{order_id}".encode(), hashlib.sha256)
    return digest.hexdigest()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def has_shipped_to(engine: Engine, *, user_id: int, address: str) -> bool:
    """Whether an earlier order of this account went to ``address`` (a new one asks for the
    password again in a session that has not been asked for a while)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(orders.c.id)
            .where(orders.c.user_id == user_id, orders.c.shipping_address == address)
            .limit(1)
        ).first()
    return found is not None


def load_order(conn: Connection, order_id: int) -> Order:
    row = conn.execute(select(orders).where(orders.c.id == order_id)).one()
    return _order_from(conn, [row])[0]


def _order_from(conn: Connection, rows: Sequence[Row[Any]]) -> list[Order]:
    if not rows:
        return []
    by_order: dict[int, list[OrderLine]] = {row.id: [] for row in rows}
    history: dict[int, list[OrderEvent]] = {row.id: [] for row in rows}
    for event in conn.execute(
        select(order_events)
        .where(order_events.c.order_id.in_(list(by_order)))
        .order_by(order_events.c.order_id, order_events.c.id)
    ):
        history[event.order_id].append(OrderEvent(event.status, event.at, event.note))
    for line in conn.execute(
        select(order_lines)
        .where(order_lines.c.order_id.in_(list(by_order)))
        .order_by(order_lines.c.order_id, order_lines.c.id)
    ):
        by_order[line.order_id].append(
            OrderLine(
                line.product_id,
                line.product_name,
                line.unit_price_cents,
                line.quantity,
                line.line_total_cents,
            )
        )
    return [
        Order(
            id=row.id,
            status=row.status,
            total_cents=row.total_cents,
            shipping_name=row.shipping_name,
            shipping_address=row.shipping_address,
            created_at=row.created_at,
            lines=by_order[row.id],
            user_id=row.user_id,
            owner_key=row.owner_key,
            email=row.email,
            hold_expires_at=row.hold_expires_at,
            payment_ref=row.payment_ref,
            payment_url=row.payment_url,
            tracking=row.tracking,
            history=history[row.id],
        )
        for row in rows
    ]


def get_order(
    engine: Engine,
    *,
    order_id: int,
    user_id: int | None = None,
    owner_key: str | None = None,
    token: str | None = None,
) -> Order | None:
    """The order if this viewer may see it: its account, the guest session that placed it (not
    yet claimed by an account), or the holder of its access link. Anyone else gets None, as for
    a missing order."""
    allowed = []
    if user_id is not None:
        allowed.append(orders.c.user_id == user_id)
    if owner_key is not None:
        allowed.append(and_(orders.c.user_id.is_(None), orders.c.owner_key == owner_key))
    if token:
        allowed.append(orders.c.access_token_hash == token_hash(token))
    if not allowed:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(orders).where(orders.c.id == order_id, or_(*allowed))).first()
        return _order_from(conn, [row])[0] if row else None


def claim_guest_orders(engine: Engine, *, owner_key: str, user_id: int) -> int:
    """A guest who signs in from the browser that placed their orders: the orders become the
    account's. Returns how many."""
    with engine.begin() as conn:
        return conn.execute(
            update(orders)
            .where(orders.c.owner_key == owner_key, orders.c.user_id.is_(None))
            .values(user_id=user_id)
        ).rowcount


def list_orders(engine: Engine, *, user_id: int, limit: int = 50) -> list[Order]:
    """The shopper's latest orders with their lines, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(orders)
            .where(orders.c.user_id == user_id)
            .order_by(orders.c.id.desc())
            .limit(limit)
        ).all()
        return _order_from(conn, rows)
