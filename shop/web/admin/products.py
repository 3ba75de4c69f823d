"""Products: the list, a new product, the edit page with its stock form, archive and restore.

Every change is committed with its audit entry, then the catalogue is invalidated on every
instance (structurally when a list changes shape), so shoppers see it on their next page load.
"""

from __future__ import annotations

import re
from typing import Any

from flask import (
    Response,
    current_app,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from ... import audit, catalogue_admin, product_list, stock
from ...catalogue import format_cents
from ...category_admin import list_categories
from ...errors import EditConflict, FormError, InvalidInput
from ...product_csv import export_rows
from ...product_list import STATUSES, STOCK_STATES, ProductFilter, list_products
from ..context import services
from ..errors import form_error
from . import actor, add_section, bp, now, refresh_catalogue

add_section("admin.products", "Products", order=10, prefix="admin.product")

_SIGNED = re.compile(r"\s*([+-]?)(\d{1,10})\s*")
HISTORY = 10
NEW_FIELDS = ("name", "category", "price", "stock", "description")
EDIT_FIELDS = ("name", "category", "price", "description", "low_stock_threshold")


def _primary():
    return services().engines.primary


def _low_stock_default() -> int:
    return services().settings.low_stock_default


@bp.get("/products")
def products():
    categories = _categories()
    try:
        wanted = ProductFilter.parse(request.args)
        with _primary().connect() as conn:
            page = list_products(
                conn,
                wanted,
                low_stock_default=_low_stock_default(),
                per_page=product_list.PAGE_SIZE,
            )
    except FormError as exc:
        return form_error(
            "admin/products.html",
            exc,
            page=None,
            wanted=ProductFilter(q=request.args.get("q", "")[:100]),
            categories=categories,
            stock_states=STOCK_STATES,
            statuses=STATUSES,
        )
    return render_template(
        "admin/products.html",
        page=page,
        wanted=wanted,
        categories=categories,
        stock_states=STOCK_STATES,
        statuses=STATUSES,
        error=None,
        done=request.args.get("done"),
        warning=request.args.get("warning"),
    )


@bp.get("/products/export.csv")
def products_export():
    """The list (its filters, every page) as CSV, streamed."""
    wanted = ProductFilter.parse(request.args)
    with _primary().connect() as conn:  # a bad filter is refused before the download starts
        list_products(conn, wanted, low_stock_default=_low_stock_default(), per_page=1)

    def lines():
        with _primary().connect() as conn:
            yield from export_rows(conn, wanted, low_stock_default=_low_stock_default())

    return Response(
        stream_with_context(lines()),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="products.csv"'},
    )


def _categories():
    with _primary().connect() as conn:
        return list_categories(conn)


def _form_values(product: dict[str, Any] | None) -> dict[str, str]:
    """The form's fields as text: from the product, or blank for a new one."""
    if product is None:
        return {**dict.fromkeys(NEW_FIELDS, ""), "stock": "0"}
    threshold = product["low_stock_threshold"]
    return {
        "name": product["name"],
        "category": product["category"],
        "price": format_cents(product["price_cents"]),
        "description": product["description"],
        "low_stock_threshold": "" if threshold is None else str(threshold),
    }


@bp.route("/products/new", methods=["GET", "POST"])
def product_new():
    if request.method == "GET":
        return _new_page(_form_values(None))
    values = {name: request.form.get(name, "") for name in NEW_FIELDS}
    try:
        form = catalogue_admin.ProductForm.parse(request.form)
        initial = catalogue_admin.parse_stock(values["stock"])
        with _primary().begin() as conn:
            product_id = catalogue_admin.create_product(
                conn, actor(), form, initial_stock=initial, at=now()
            )
    except FormError as exc:
        return _new_page(values, exc)
    warning = refresh_catalogue([product_id], structural=True)
    return _to_product(product_id, f"{form.name} created.", warning)


def _new_page(values: dict[str, str], error: FormError | None = None):
    context = {"product": None, "values": values, "categories": _categories()}
    if error is not None:
        return form_error("admin/product_form.html", error, **context)
    return render_template("admin/product_form.html", error=None, **context)


def _to_product(product_id: int, done: str, warning: str | None = None):
    args: dict[str, Any] = {"done": done, **({"warning": warning} if warning else {})}
    return redirect(url_for("admin.product_edit", product_id=product_id, **args), 303)


def _edit_page(product_id: int, status: int = 200, **context):
    """The edit page: the product as it is now, unless ``values`` (what was sent) is given."""
    with _primary().connect() as conn:
        product = catalogue_admin.load_product(conn, product_id)
    context.setdefault("values", _form_values(product))
    context.setdefault("version", product["version"])
    for name in ("error", "stock_error", "tried"):
        context.setdefault(name, None)
    body = render_template(
        "admin/product_form.html",
        product=product,
        categories=_categories(),
        history=audit.entries(
            _primary(), entity="product", entity_id=str(product_id), limit=HISTORY
        ),
        has_images="admin.product_images" in current_app.view_functions,
        done=request.args.get("done"),
        warning=request.args.get("warning"),
        **context,
    )
    return body, status


@bp.route("/products/<id:product_id>", methods=["GET", "POST"])
def product_edit(product_id: int):
    if request.method == "GET":
        return _edit_page(product_id)
    values = {name: request.form.get(name, "") for name in EDIT_FIELDS}
    version_text = request.form.get("version", "").strip()
    try:
        if not version_text.isdigit() or len(version_text) > 10:
            raise InvalidInput("The form is missing its version; reload the page.", field="version")
        form = catalogue_admin.ProductForm.parse(request.form)
        with _primary().begin() as conn:
            changed = catalogue_admin.edit_product(
                conn, actor(), product_id, form, version=int(version_text), at=now()
            )
    except EditConflict as exc:
        # The product as it is now (with its new version), and what this person tried to save.
        return _edit_page(product_id, exc.status, error=exc, tried=values)
    except FormError as exc:
        return _edit_page(product_id, exc.status, error=exc, values=values, version=version_text)
    if not changed:
        return _to_product(product_id, "Nothing to save: no field was changed.")
    warning = refresh_catalogue([product_id], structural="category" in changed)
    names = ", ".join(name.replace("_cents", "").replace("_", " ") for name in changed)
    return _to_product(product_id, f"Saved ({names}).", warning)


def _signed(text: str) -> int:
    match = _SIGNED.fullmatch(text)
    if not match or int(match.group(2)) == 0:
        raise InvalidInput(
            "The change is a whole number other than 0: 5 adds five, -2 takes two away.",
            field="change",
        )
    return int(match.group(1) + match.group(2))


@bp.post("/products/<id:product_id>/stock")
def product_stock(product_id: int):
    """Add to or take from the stock, with a reason (shop.stock.adjust)."""
    try:
        change = _signed(request.form.get("change", ""))
        with _primary().begin() as conn:
            catalogue_admin.load_product(conn, product_id)
            before, after = stock.adjust(
                conn,
                actor(),
                product_id,
                change=change,
                reason=request.form.get("reason"),
                at=now(),
            )
    except FormError as exc:
        if exc.status == 404:
            raise
        return _edit_page(product_id, exc.status, stock_error=exc)
    warning = refresh_catalogue([product_id])
    return _to_product(product_id, f"Stock changed from {before} to {after}.", warning)


def _set_archived(product_id: int, archived: bool):
    with _primary().begin() as conn:
        changed = catalogue_admin.set_archived(
            conn, actor(), product_id, archived=archived, at=now()
        )
    if not changed:
        state = "archived" if archived else "in the shop"
        return _to_product(product_id, f"Nothing to do: the product was already {state}.")
    warning = refresh_catalogue([product_id], structural=True)
    done = (
        "Archived: the product is gone from the shop and stays on past orders."
        if archived
        else "Restored: the product is in the shop again."
    )
    return _to_product(product_id, done, warning)


@bp.post("/products/<id:product_id>/archive")
def product_archive(product_id: int):
    return _set_archived(product_id, True)


@bp.post("/products/<id:product_id>/unarchive")
def product_unarchive(product_id: int):
    return _set_archived(product_id, False)
