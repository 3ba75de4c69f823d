"""Bulk price and stock edits from a CSV file: a preview first, then all or nothing.

The file has a header naming its columns: ``id`` and at least one of ``price`` (like 12.34) and
``stock`` (a whole number, the new count); ``reason`` is optional per line (else the upload's
reason is used), and ``name`` and ``category`` are ignored, so that the list's download can be
edited and sent back. A blank cell leaves that value as it is. Every line is checked
(:func:`preview`) and each problem reported with its line and column; if any line is bad nothing
can be applied. :func:`apply` checks the whole file again inside one transaction and applies it
only if no product changed since the preview was shown (its version, price and stock), so a
preview never overwrites what someone else did meanwhile.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, func, select, update

from . import audit, stock
from .catalogue import format_cents
from .errors import EditConflict, InvalidInput
from .models import MAX_ID, categories, products
from .money import parse_price
from .product_list import ProductFilter, filter_condition
from .spreadsheet import defused

MAX_CSV_BYTES = 1024 * 1024
MAX_CSV_ROWS = 10_000
REASON_PREFIX = "CSV import: "
COLUMNS = ("id", "price", "stock", "reason", "name", "category")
EXPORT_COLUMNS = ("id", "name", "category", "price", "stock")


@dataclass(frozen=True)
class LineError:
    line: int
    column: str  # "" for the line or the file as a whole
    message: str


@dataclass(frozen=True)
class LineChange:
    """One line of the file against the product as it is: ``*_after`` None leaves it."""

    line: int
    product_id: int
    name: str
    version: int
    price_before: int
    price_after: int | None
    stock_before: int
    stock_after: int | None
    reason: str

    @property
    def price_changes(self) -> bool:
        return self.price_after is not None and self.price_after != self.price_before

    @property
    def stock_changes(self) -> bool:
        return self.stock_after is not None and self.stock_after != self.stock_before

    @property
    def seen(self) -> str:
        return f"{self.product_id}:{self.version}:{self.price_before}:{self.stock_before}"


@dataclass
class Preview:
    lines: list[LineChange] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def changed(self) -> list[LineChange]:
        return [line for line in self.lines if line.price_changes or line.stock_changes]

    @property
    def seen(self) -> str:
        """The products as the preview showed them, for :func:`apply` to compare."""
        return " ".join(line.seen for line in self.lines)


class ImportRefused(InvalidInput):
    """The file has bad lines; the report lists them all."""

    def __init__(self, report: Preview) -> None:
        super().__init__(
            f"{len(report.errors)} problem(s) in the file: nothing was changed.", field="file"
        )
        self.report = report


def decode(data: bytes) -> str:
    """The upload as text: at most MAX_CSV_BYTES of UTF-8 (a byte-order mark is dropped)."""
    if len(data) > MAX_CSV_BYTES:
        raise InvalidInput(
            f"The file is larger than {MAX_CSV_BYTES // 1024} KiB; split it into smaller files.",
            field="file",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"The file is not UTF-8 text (line {line}); save it as CSV UTF-8 and try again.",
            field="file",
        ) from None
    return check_text(text)


def check_text(text: str) -> str:
    if "\x00" in text:
        raise InvalidInput("The file contains NUL characters; it is not a CSV file.", field="file")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_CSV_BYTES:
        raise InvalidInput(f"The file is larger than {MAX_CSV_BYTES // 1024} KiB.", field="file")
    return text


def _whole(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or len(text) > 10 or int(text) > stock.MAX_STOCK:
        return None
    return int(text)


@dataclass
class _Row:
    line: int
    product_id: int
    price: int | None
    stock: int | None
    reason: str


def _parse(text: str, reason: str) -> tuple[list[_Row], list[LineError]]:
    errors: list[LineError] = []
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        return [], [LineError(1, "", f"The header is not valid CSV: {exc}.")]
    names = [name.strip().lower() for name in header or []]
    unknown = [name for name in names if name not in COLUMNS]
    if not names or "id" not in names or not {"price", "stock"} & set(names) or unknown:
        shown = f" (not {', '.join(repr(n) for n in unknown)})" if unknown else ""
        message = (
            "The first line must name the columns: id, then price and/or stock, and optionally "
            f"reason{shown}. For example: id,price,stock"
        )
        return [], [LineError(1, "", message)]
    if len(set(names)) != len(names):
        return [], [LineError(1, "", "A column is named twice in the first line.")]
    rows: list[_Row] = []
    first_line: dict[int, int] = {}
    count = 0
    try:
        for record in reader:
            line = reader.line_num
            if not record or not any(cell.strip() for cell in record):
                continue  # a blank line
            count += 1
            if count > MAX_CSV_ROWS:
                errors.append(
                    LineError(line, "", f"A file has at most {MAX_CSV_ROWS:,} lines; split it.")
                )
                break
            if len(record) != len(names):
                errors.append(
                    LineError(line, "", f"{len(record)} values where the header has {len(names)}.")
                )
                continue
            cells = dict(zip(names, (cell.strip() for cell in record), strict=True))
            row, problems = _row(line, cells, reason, first_line)
            errors += problems
            if row is not None and not problems:
                rows.append(row)
    except csv.Error as exc:
        errors.append(LineError(reader.line_num, "", f"Not valid CSV: {exc}."))
    if not rows and not errors:
        errors.append(LineError(1, "", "The file has no lines after the header."))
    return rows, errors


def _row(
    line: int, cells: dict[str, str], reason: str, first_line: dict[int, int]
) -> tuple[_Row | None, list[LineError]]:
    problems: list[LineError] = []
    product_id = _whole(cells["id"])
    if product_id is None or not 1 <= product_id <= MAX_ID:
        problems.append(LineError(line, "id", f"{cells['id'][:20]!r} is not a product id."))
    elif product_id in first_line:
        problems.append(
            LineError(line, "id", f"Product {product_id} is also on line {first_line[product_id]}.")
        )
    else:
        first_line[product_id] = line
    price = None
    if cells.get("price"):
        try:
            price = parse_price(cells["price"])
        except InvalidInput as exc:
            problems.append(LineError(line, "price", exc.message))
    new_stock = None
    if cells.get("stock"):
        new_stock = _whole(cells["stock"])
        if new_stock is None:
            problems.append(
                LineError(
                    line,
                    "stock",
                    f"{cells['stock'][:20]!r} is not a stock count (a whole number from 0 to "
                    f"{stock.MAX_STOCK}).",
                )
            )
    why = cells.get("reason") or reason
    if new_stock is not None:
        try:
            why = stock.check_reason(REASON_PREFIX + stock.check_reason(why))
        except InvalidInput:
            problems.append(
                LineError(
                    line,
                    "reason",
                    "Say why the stock changes: a reason column, or one reason for the file "
                    f"(at most {stock.MAX_REASON - len(REASON_PREFIX)} characters).",
                )
            )
    if problems or product_id is None:
        return None, problems
    return _Row(line, product_id, price, new_stock, why), []


def preview(conn: Connection, text: str, *, reason: str = "", lock: bool = False) -> Preview:
    """Every line checked against the products as they are (locked with ``lock``, in id
    order, so that :func:`apply` sees what it writes over)."""
    rows, errors = _parse(text, " ".join(reason.split()))
    report = Preview(errors=errors)
    ids = sorted(row.product_id for row in rows)
    found = {}
    for start in range(0, len(ids), 1000):
        query = (
            select(
                products.c.id,
                products.c.name,
                products.c.version,
                products.c.price_cents,
                products.c.stock,
            )
            .where(products.c.id.in_(ids[start : start + 1000]))
            .order_by(products.c.id)
        )
        found.update({r.id: r for r in conn.execute(query.with_for_update() if lock else query)})
    for row in rows:
        product = found.get(row.product_id)
        if product is None:
            report.errors.append(
                LineError(row.line, "id", f"There is no product {row.product_id}.")
            )
            continue
        report.lines.append(
            LineChange(
                line=row.line,
                product_id=row.product_id,
                name=product.name,
                version=product.version,
                price_before=product.price_cents,
                price_after=row.price,
                stock_before=product.stock,
                stock_after=row.stock,
                reason=row.reason,
            )
        )
    report.errors.sort(key=lambda error: error.line)
    return report


def apply(
    conn: Connection, actor: audit.Actor, text: str, *, reason: str, seen: str, at: datetime
) -> list[int]:
    """Apply the file in the caller's transaction, or raise and change nothing: ImportRefused
    with the report when a line is bad, EditConflict when a product is no longer as the
    preview (``seen``, its :attr:`Preview.seen`) showed it. Returns the products changed."""
    report = preview(conn, text, reason=reason, lock=True)
    if not report.ok:
        raise ImportRefused(report)
    shown = set(seen.split())
    moved = [line for line in report.lines if line.seen not in shown]
    if moved:
        names = ", ".join(f"{line.name} ({line.product_id})" for line in moved[:5])
        more = f" and {len(moved) - 5} more" if len(moved) > 5 else ""
        raise EditConflict(
            f"{len(moved)} product(s) changed since the preview ({names}{more}); nothing was "
            "applied. Here is the preview again, with the products as they are now."
        )
    changed = []
    for line in sorted(report.changed, key=lambda line: line.product_id):
        if line.price_changes:
            conn.execute(
                update(products)
                .where(products.c.id == line.product_id, products.c.version == line.version)
                .values(
                    price_cents=line.price_after,
                    version=line.version + 1,
                    updated_at=func.now(),
                )
            )
            audit.record(
                conn,
                actor,
                "product.update",
                entity="product",
                entity_id=line.product_id,
                before={"price_cents": line.price_before, "version": line.version},
                after={"price_cents": line.price_after, "version": line.version + 1, "via": "CSV"},
                at=at,
            )
        if line.stock_changes:
            assert line.stock_after is not None
            stock.adjust(
                conn, actor, line.product_id, new_stock=line.stock_after, reason=line.reason, at=at
            )
        changed.append(line.product_id)
    return changed


def export_rows(
    conn: Connection, wanted: ProductFilter, *, low_stock_default: int
) -> Iterator[str]:
    """The list as CSV text, a line at a time, read with a server-side cursor (streamed: a
    million products never sit in memory). A name that a spreadsheet would run as a formula
    starts with an apostrophe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    query = (
        select(
            products.c.id,
            products.c.name,
            categories.c.slug,
            products.c.price_cents,
            products.c.stock,
        )
        .join(categories, categories.c.id == products.c.category_id)
        .where(filter_condition(conn, wanted, low_stock_default=low_stock_default))
        .order_by(products.c.id)
    )
    for row in conn.execution_options(yield_per=1000).execute(query):
        writer.writerow(
            [row.id, defused(row.name), row.slug, format_cents(row.price_cents), row.stock]
        )
        if out.tell() > 64 * 1024:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()
