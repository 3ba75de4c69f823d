"""Cart pages: see the cart, add, change quantities, remove lines."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from ..cart import parse_shown_prices
from ..errors import FormError
from .actions import (
    add_to_cart,
    confirm_prices,
    current_cart,
    remove_from_cart,
    set_cart_quantity,
)
from .context import services
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
    return redirect(safe_next(request.form.get("next"), url_for("cart.view")), code=303)


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
