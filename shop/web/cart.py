"""Cart pages: see the cart, add, change quantities, remove lines."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from ..added_notice import Added, added_token, read_added
from ..cart import parse_shown_prices
from ..errors import FormError, NotFound
from .actions import (
    add_to_cart,
    confirm_prices,
    current_cart,
    remove_from_cart,
    set_cart_quantity,
)
from .context import services, shop_session
from .errors import form_error
from .inputs import form_int, product_id_from_form, safe_next

bp = Blueprint("cart", __name__, url_prefix="/cart")


@bp.get("")
def view():
    return render_template("cart.html", cart=current_cart(), error=None)


@bp.post("/add")
def add():
    catalogue = services().catalogue
    try:
        product_id = product_id_from_form(request.form.get("product_id"))
    except FormError as exc:
        return form_error("cart.html", exc, cart=current_cart())
    try:
        quantity = form_int(request.form.get("quantity", "1"), "quantity", minimum=1, maximum=None)
        add_to_cart(product_id, quantity)
    except FormError as exc:
        # The product's form again; for a product that does not exist there is none, and
        # catalogue.product's NotFound goes to the error page.
        return form_error(
            "catalogue/product.html",
            exc,
            product=catalogue.product(product_id),
            categories=catalogue.categories(),
            # The form shown again returns where the first one would have, not to /cart/add.
            next_url=safe_next(
                request.form.get("next"), url_for("catalogue.product", product_id=product_id)
            ),
        )
    back = safe_next(request.form.get("next"), url_for("cart.view"))
    return redirect(_with_added(back, Added(product_id, quantity)), code=303)


def _with_added(target: str, added: Added) -> str:
    """``target`` with ``?added=`` saying what was added (replacing an earlier one)."""
    token = added_token(
        current_app.config["SECRET_KEY"], shop_session().sid, added, now=services().clock()
    )
    parts = urlsplit(target)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "added"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("added", token)])))


def added_to_cart() -> dict | None:
    """For the page the add redirected to: the product's name (from the catalogue, never
    from the link) and the quantity added; None on any other page."""
    token = request.args.get("added")
    if token is None:  # every other page: not even the session is looked at
        return None
    added = read_added(
        current_app.config["SECRET_KEY"], shop_session().sid, token, now=services().clock()
    )
    if added is None:
        return None
    try:
        product = services().catalogue.product(added.product_id)
    except NotFound:  # deleted since it was added: nothing left to name
        return None
    return {"name": product["name"], "quantity": added.quantity}


@bp.post("/update")
def update():
    try:
        product_id = product_id_from_form(request.form.get("product_id"))
        quantity = form_int(request.form.get("quantity"), "quantity", minimum=0, maximum=None)
        set_cart_quantity(product_id, quantity)
    except FormError as exc:
        return form_error("cart.html", exc, cart=current_cart())
    return redirect(url_for("cart.view"), code=303)


@bp.post("/remove")
def remove():
    try:
        remove_from_cart(product_id_from_form(request.form.get("product_id")))
    except FormError as exc:
        return form_error("cart.html", exc, cart=current_cart())
    return redirect(url_for("cart.view"), code=303)


@bp.post("/prices", endpoint="confirm_prices")
def confirm_prices_view():
    """The "Accept the new prices" button: the lines take the prices the page showed (not
    whatever the catalogue says by now, which the shopper has not seen)."""
    confirm_prices(parse_shown_prices(request.form.get("shown_prices")) or {})
    return redirect(url_for("cart.view"), code=303)
