"""Stock: the low-stock report with a quick adjustment per row, thresholds, and the history
of adjustments. Every change is committed with its audit entry, then the catalogue is told
(shoppers see the new stock on their next page)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import redirect, render_template, request, url_for

from ... import stock, stock_report
from ...errors import InvalidInput, NotFound
from ...models import MAX_ID
from ..context import services
from ..errors import form_error
from . import _back_to, actor, add_section, bp, now, refresh_catalogue

PAGE_SIZE = 50

add_section("admin.stock_report", "Stock", order=40)


def _id_arg(name: str) -> int | None:
    text = request.args.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 10 or not 1 <= int(text) <= MAX_ID:
        raise InvalidInput(f"There is no such {name}.", field=name)
    return int(text)


def _report_page(status: int = 200, **context):
    engine = services().engines.primary
    context.setdefault("error", None)
    context.setdefault("rows", [])
    context.setdefault("next_after", None)
    body = render_template(
        "admin/stock.html",
        categories=stock_report.category_choices(engine),
        default=services().settings.low_stock_default,
        args=request.args,
        done=request.args.get("done"),
        warning=request.args.get("warning"),
        **context,
    )
    return body, status


@bp.get("/stock", endpoint="stock_report")
def low_stock_report():
    try:
        category, after = (
            _id_arg("category"),
            stock_report.parse_cursor(request.args.get("after", "")),
        )
    except InvalidInput as exc:
        return _report_page(exc.status, error=exc)
    rows, next_after = stock_report.low_stock(
        services().engines.primary,
        default=services().settings.low_stock_default,
        category_id=category,
        after=after,
        limit=PAGE_SIZE,
    )
    return _report_page(rows=rows, next_after=next_after)


@bp.get("/stock/adjustments")
def stock_adjustments():
    engine = services().engines.primary
    try:
        product_id, before = _id_arg("product"), _id_arg("before")
        product = stock_report.product_stock(engine, product_id) if product_id else None
    except (InvalidInput, NotFound) as exc:
        return render_template(
            "admin/stock_adjustments.html", rows=[], product=None, next_before=None, error=exc
        ), exc.status
    rows, next_before = stock_report.adjustments(
        engine, product_id=product_id, before=before, limit=PAGE_SIZE
    )
    return render_template(
        "admin/stock_adjustments.html",
        rows=rows,
        product=product,
        next_before=next_before,
        error=None,
    )


def _back(done: str, warning: str | None):
    """To the page the form was on (the report, a product's page), with the outcome (the
    previous outcome, if that page showed one, dropped)."""
    target = urlsplit(_back_to(request.form.get("next") or url_for("admin.stock_report")))
    kept = [(k, v) for k, v in parse_qsl(target.query) if k not in ("done", "warning")]
    outcome = [("done", done), *([("warning", warning)] if warning else [])]
    return redirect(f"{target.path}?{urlencode(kept + outcome)}", 303)


@bp.post("/stock/<id:product_id>/adjust")
def stock_adjust(product_id: int):
    """Add or take away units (``change``, signed) for a ``reason``: recorded and audited."""
    engine = services().engines.primary
    product = stock_report.product_stock(engine, product_id)
    form = request.form
    try:
        change = stock_report.parse_change(form.get("change"))
        with engine.begin() as conn:
            before, after = stock.adjust(
                conn, actor(), product_id, change=change, reason=form.get("reason"), at=now()
            )
    except InvalidInput as exc:
        return form_error(
            "admin/stock_adjust.html", exc, product=product, form=form, next=form.get("next", "")
        )
    warning = refresh_catalogue([product_id])
    return _back(f"{product.name}: stock {before} → {after}.", warning)


@bp.post("/stock/<id:product_id>/threshold")
def stock_threshold(product_id: int):
    """The product's own low-stock threshold; blank puts it back to the shop's default."""
    engine = services().engines.primary
    product = stock_report.product_stock(engine, product_id)
    form = request.form
    try:
        threshold = stock_report.parse_threshold(form.get("threshold"))
        with engine.begin() as conn:
            stock_report.set_threshold(conn, actor(), product_id, threshold, at=now())
    except InvalidInput as exc:
        return form_error(
            "admin/stock_adjust.html", exc, product=product, form=form, next=form.get("next", "")
        )
    shown = threshold if threshold is not None else "the default"
    return _back(f"{product.name}: low-stock threshold is {shown}.", None)
