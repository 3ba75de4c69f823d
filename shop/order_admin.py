"""Orders for the people who run the shop: the filtered list (and what the export reads), and
an order's page with the actions its status allows (those are in shop/order_actions.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, Connection, Engine, Select, func, or_, select, tuple_

from . import money
from .errors import InvalidInput, NotFound
from .models import MAX_ID, orders, users
from .order_lifecycle import ALLOWED, CANCELLED, DELIVERED, LABELS, SHIPPED
from .order_records import Order, load_order

MAX_EMAIL = 254
MAX_ACCOUNTS = 200  # accounts an address filter may match (more: type more of it)
# Staff actions and the status each one moves an order to, in the order a page offers them.
ACTIONS: dict[str, str] = {"ship": SHIPPED, "deliver": DELIVERED, "cancel": CANCELLED}

_NUMBER = re.compile(r"\s*#?\s*(\d{1,12})\s*")


@dataclass(frozen=True)
class OrderFilter:
    """What the list (and the export) narrows to; every part is optional and they combine."""

    statuses: tuple[str, ...] = ()
    created_from: date | None = None
    created_to: date | None = None  # inclusive: the whole day
    email: str | None = None  # an address or its beginning, lower case
    min_total_cents: int | None = None
    max_total_cents: int | None = None
    number: int | None = None
    # The accounts whose address starts with ``email``, looked up by :func:`resolve`.
    account_ids: tuple[int, ...] | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.statuses:
            found.append(orders.c.status.in_(self.statuses))
        if self.created_from is not None:
            found.append(orders.c.created_at >= _start_of(self.created_from))
        if self.created_to is not None:
            found.append(orders.c.created_at < _start_of(self.created_to + timedelta(days=1)))
        if self.min_total_cents is not None:
            found.append(orders.c.total_cents >= self.min_total_cents)
        if self.max_total_cents is not None:
            found.append(orders.c.total_cents <= self.max_total_cents)
        if self.number is not None:
            found.append(orders.c.id == self.number)
        if self.email:
            if self.account_ids is None:
                raise ValueError("resolve() the filter's address first")
            own = orders.c.email.like(_prefix_pattern(self.email), escape="/")
            accounts = orders.c.user_id.in_(self.account_ids)
            found.append(or_(own, accounts) if self.account_ids else own)
        return found


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _prefix_pattern(prefix: str) -> str:
    """``LIKE`` text for "starts with", wildcards taken literally (escaped with ``/``)."""
    return re.sub(r"([/%_])", r"/\1", prefix) + "%"


def resolve(engine: Engine, wanted: OrderFilter) -> OrderFilter:
    """The filter with the accounts its address matches looked up first (one index range on
    users), so orders are then found through two indexes (the guest's address, the account)
    rather than by reading the whole table. Too many accounts: type more of the address."""
    if not wanted.email:
        return wanted
    with engine.connect() as conn:
        ids = (
            conn.execute(
                select(users.c.id)
                .where(users.c.email.like(_prefix_pattern(wanted.email), escape="/"))
                .order_by(users.c.id)
                .limit(MAX_ACCOUNTS + 1)
            )
            .scalars()
            .all()
        )
    if len(ids) > MAX_ACCOUNTS:
        raise InvalidInput(
            f"More than {MAX_ACCOUNTS} accounts' addresses start with {wanted.email!r}: "
            "type more of the address.",
            field="email",
        )
    return replace(wanted, account_ids=tuple(ids))


def parse_filter(
    *,
    statuses: Sequence[str] = (),
    created_from: str = "",
    created_to: str = "",
    email: str = "",
    min_total: str = "",
    max_total: str = "",
    number: str = "",
    require_range: bool = False,
) -> OrderFilter:
    """The filter from what a person typed; :class:`InvalidInput` names the field at fault.
    ``require_range``: both dates are needed (the export)."""
    unknown = sorted({s for s in statuses if s} - set(LABELS))
    if unknown:
        raise InvalidInput(f"There is no order status {unknown[0]!r}.", field="status")
    start, end = _day(created_from, "from"), _day(created_to, "to")
    if require_range and (start is None or end is None):
        missing = "from" if start is None else "to"
        raise InvalidInput("Give the first and the last day of the range.", field=missing)
    if start is not None and end is not None and end < start:
        raise InvalidInput("The range ends before it starts.", field="to")
    address = email.strip().lower()
    if len(address) > MAX_EMAIL:
        raise InvalidInput(f"An address is at most {MAX_EMAIL} characters.", field="email")
    low = money.parse_price(min_total, field="min_total") if min_total.strip() else None
    high = money.parse_price(max_total, field="max_total") if max_total.strip() else None
    if low is not None and high is not None and high < low:
        raise InvalidInput("The highest total is below the lowest.", field="max_total")
    return OrderFilter(
        statuses=tuple(dict.fromkeys(s for s in statuses if s)),
        created_from=start,
        created_to=end,
        email=address or None,
        min_total_cents=low,
        max_total_cents=high,
        number=parse_number(number) if number.strip() else None,
    )


def _day(text: str, field: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput("Dates are written like 2026-12-03.", field=field) from None


def parse_number(text: str) -> int:
    """An order number as staff write it: ``123`` or ``#123``."""
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise InvalidInput("An order number is a whole number, like 123 or #123.", field="q")
    return int(match.group(1))


# -- the list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderRow:
    id: int
    created_at: datetime
    status: str
    email: str | None  # the guest's address, else the account's
    shipping_name: str
    total_cents: int

    @property
    def cursor(self) -> str:
        """Where the next page starts: ``<microseconds since the epoch>_<id>``."""
        return f"{(_aware(self.created_at) - _EPOCH) // timedelta(microseconds=1)}_{self.id}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CURSOR = re.compile(r"(\d{1,17})_(\d{1,10})")


def _aware(moment: datetime) -> datetime:
    """SQLite hands back the UTC times it was given without their zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_cursor(text: str) -> tuple[datetime, int] | None:
    if not text.strip():
        return None
    match = _CURSOR.fullmatch(text.strip())
    if match is None:
        raise InvalidInput("That page of the list does not exist.", field="before")
    moment = _EPOCH + timedelta(microseconds=int(match.group(1)))
    return moment, int(match.group(2))


def order_query(wanted: OrderFilter) -> Select:
    """Orders with the address to show (the order's, else its account's), filtered."""
    return (
        select(
            orders.c.id,
            orders.c.created_at,
            orders.c.status,
            func.coalesce(orders.c.email, users.c.email).label("email"),
            orders.c.shipping_name,
            orders.c.total_cents,
            orders.c.payment_ref,
            orders.c.tracking,
        )
        .select_from(orders.outerjoin(users, users.c.id == orders.c.user_id))
        .where(*wanted.conditions())
    )


def list_query(
    wanted: OrderFilter, *, before: tuple[datetime, int] | None = None, limit: int = 50
) -> Select:
    """Newest first, one more row than a page (whether there is a next page). Ordered by
    (created_at, id), which the (created_at, id) and (status, created_at, id) indexes give
    without a sort: a date range starts reading at its end, however old it is."""
    query = (
        order_query(wanted)
        .order_by(orders.c.created_at.desc(), orders.c.id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(tuple_(orders.c.created_at, orders.c.id) < tuple_(*before))
    return query


def list_orders(
    engine: Engine,
    wanted: OrderFilter,
    *,
    before: tuple[datetime, int] | None = None,
    limit: int = 50,
) -> tuple[list[OrderRow], str | None]:
    """Newest first, ``limit`` at a time, and the cursor of the next page (None: the last).
    Keyset paging (``before``, from :func:`parse_cursor`): the same cost on the last page as
    on the first, and nothing is counted."""
    query = list_query(resolve(engine, wanted), before=before, limit=limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found = [
        OrderRow(r.id, r.created_at, r.status, r.email, r.shipping_name, r.total_cents)
        for r in rows[:limit]
    ]
    return found, (found[-1].cursor if len(rows) > limit else None)


# -- one order -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderPage:
    order: Order
    account_email: str | None  # the account it belongs to, if any
    actions: tuple[str, ...]  # what its status allows staff to do (keys of ACTIONS)


def allowed_actions(status: str) -> tuple[str, ...]:
    return tuple(name for name, to in ACTIONS.items() if to in ALLOWED.get(status, ()))


def order_page(engine: Engine, order_id: int) -> OrderPage:
    with engine.connect() as conn:
        status_of(conn, order_id)
        order = load_order(conn, order_id)
        account = None
        if order.user_id is not None:
            account = conn.execute(
                select(users.c.email).where(users.c.id == order.user_id)
            ).scalar()
    return OrderPage(order, account, allowed_actions(order.status))


def status_of(conn: Connection, order_id: int) -> str:
    """The order's status; :class:`NotFound` for no such order."""
    status = None
    if order_id <= MAX_ID:
        status = conn.execute(select(orders.c.status).where(orders.c.id == order_id)).scalar()
    if status is None:
        raise NotFound(f"There is no order {order_id}.")
    return status
