"""Orders: the list with its filters, an order's page and the actions its status allows, and
the CSV export of a date range (streamed)."""

from __future__ import annotations

from flask import Response, redirect, render_template, request, url_for

from ... import order_actions, order_admin, order_export
from ...errors import IllegalTransition, InvalidInput, ShopError
from ...order_lifecycle import LABELS
from ..context import services
from . import actor, add_section, bp, now, refresh_catalogue

PAGE_SIZE = 50

add_section("admin.orders", "Orders", order=30)

DONE = {
    "ship": "Order {id} shipped: the customer is mailed.",
    "deliver": "Order {id} marked delivered.",
    "cancel": "Order {id} cancelled: the payment is refunded and the stock returned.",
}


def _filter(*, require_range: bool = False) -> order_admin.OrderFilter:
    args = request.args
    return order_admin.parse_filter(
        statuses=args.getlist("status"),
        created_from=args.get("from", ""),
        created_to=args.get("to", ""),
        email=args.get("email", ""),
        min_total=args.get("min_total", ""),
        max_total=args.get("max_total", ""),
        number=args.get("q", ""),
        require_range=require_range,
    )


def _list_page(status: int = 200, **context):
    context.setdefault("error", None)
    context.setdefault("rows", [])
    context.setdefault("next_before", None)
    body = render_template("admin/orders.html", args=request.args, statuses=LABELS, **context)
    return body, status


@bp.get("/orders")
def orders():
    try:
        wanted = _filter()
        before = order_admin.parse_cursor(request.args.get("before", ""))
    except InvalidInput as exc:
        return _list_page(exc.status, error=exc)
    rows, next_before = order_admin.list_orders(
        services().engines.primary, wanted, before=before, limit=PAGE_SIZE
    )
    return _list_page(rows=rows, next_before=next_before)


@bp.get("/orders/export.csv")
def orders_export():
    """The orders created in ``from``..``to`` (both days included) and the list's other
    filters, as a CSV file that is streamed as it is read."""
    engine = services().engines.primary
    try:
        wanted = order_admin.resolve(engine, _filter(require_range=True))
    except InvalidInput as exc:
        return _list_page(exc.status, error=exc)
    settings = services().settings
    rows = order_export.export_rows(engine, wanted)
    return Response(
        order_export.csv_text(rows, currency=settings.currency),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{order_export.filename(wanted)}"'},
    )


def _order_page(order_id: int, status: int = 200, **context):
    context.setdefault("error", None)
    context.setdefault("tracking", "")
    page = order_admin.order_page(services().engines.primary, order_id)
    body = render_template("admin/order.html", page=page, order=page.order, **context)
    return body, status


@bp.get("/orders/<id:order_id>")
def orders_show(order_id: int):
    return _order_page(order_id, done=request.args.get("done"))


def _done(order_id: int, action: str, warning: str | None = None):
    message = DONE[action].format(id=order_id)
    if warning:
        message = f"{message} {warning}"
    return redirect(url_for("admin.orders_show", order_id=order_id, done=message), 303)


def _refused(order_id: int, exc: ShopError, **context):
    """The order page again with why the action was refused; nothing was changed."""
    return _order_page(order_id, exc.status, error=exc, **context)


@bp.post("/orders/<id:order_id>/ship")
def orders_ship(order_id: int):
    tracking = request.form.get("tracking", "")
    try:
        order_actions.ship(
            services().engines.primary,
            actor(),
            order_id,
            tracking=tracking,
            at=now(),
            listeners=services().order_listeners,
        )
    except (IllegalTransition, InvalidInput) as exc:
        return _refused(order_id, exc, tracking=tracking)
    return _done(order_id, "ship")


@bp.post("/orders/<id:order_id>/deliver")
def orders_deliver(order_id: int):
    try:
        order_actions.deliver(
            services().engines.primary,
            actor(),
            order_id,
            at=now(),
            listeners=services().order_listeners,
        )
    except IllegalTransition as exc:
        return _refused(order_id, exc)
    return _done(order_id, "deliver")


@bp.post("/orders/<id:order_id>/cancel")
def orders_cancel(order_id: int):
    """Cancel and refund: the form must confirm it (money goes back to the customer)."""
    try:
        if request.form.get("confirm") != "yes":
            raise InvalidInput(
                "Tick the box to confirm: cancelling refunds the customer's payment.",
                field="confirm",
            )
        restocked = order_actions.cancel(
            services().engines.primary,
            services().payment_provider,
            actor(),
            order_id,
            at=now(),
            listeners=services().order_listeners,
        )
    except (IllegalTransition, InvalidInput) as exc:
        return _refused(order_id, exc)
    return _done(order_id, "cancel", refresh_catalogue(restocked))
