"""The orders of a date range as CSV, streamed: rows go out as the database hands them over.

The query runs on a server-side cursor (``stream_results``, ``yield_per``: a named cursor on
PostgreSQL) and the text is produced a batch at a time, so an instance's memory does not grow
with the number of orders exported. Cells a spreadsheet would read as a formula are defused
as OWASP advises (a leading quote), since addresses and names are typed by shoppers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import Engine, Row, Select, func, select

from .catalogue import format_cents
from .models import order_lines, orders
from .order_admin import OrderFilter, order_query
from .spreadsheet import defused

HEADER = (
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
)
BATCH = 500


def filename(wanted: OrderFilter) -> str:
    return f"orders-{wanted.created_from}-{wanted.created_to}.csv"


def export_rows(engine: Engine, wanted: OrderFilter, *, batch: int = BATCH) -> Iterator[Row]:
    """The orders, oldest first (in the (created_at, id) index's order: no sort), with their
    number of lines; ``wanted`` resolved (shop.order_admin.resolve) before the response
    starts. Holds one connection while iterated; closing the iterator returns it."""
    with engine.connect() as conn:
        streamed = conn.execution_options(stream_results=True, yield_per=batch)
        yield from streamed.execute(export_query(wanted))


def export_query(wanted: OrderFilter) -> Select:
    lines = (
        select(func.count())
        .select_from(order_lines)
        .where(order_lines.c.order_id == orders.c.id)
        .scalar_subquery()
        .label("lines")
    )
    return order_query(wanted).add_columns(lines).order_by(orders.c.created_at, orders.c.id)


def csv_text(rows: Iterator[Row], *, currency: str, batch: int = BATCH) -> Iterator[str]:
    """The header, then the rows ``batch`` at a time, as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    for written, row in enumerate(rows, start=1):
        writer.writerow(
            [
                row.id,
                _iso(row.created_at),
                row.status,
                defused(row.email or ""),
                defused(row.shipping_name),
                format_cents(row.total_cents),
                currency,
                defused(row.payment_ref or ""),
                defused(row.tracking or ""),
                row.lines,
            ]
        )
        if written % batch == 0:
            yield _drain(buffer)
    yield _drain(buffer)


def _iso(moment: datetime | None) -> str:
    """UTC, ISO 8601 (SQLite hands back naive times that were written in UTC)."""
    if moment is None:
        return ""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat()


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
