"""The JSON API under /api/v1: the same rules and session cookie as the pages."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..accounts import get_account, send_verification
from ..models import MAX_ID
from ..order_records import list_orders
from ..orders import Shipping
from .account import SENT_TO_CONFIRM
from .actions import (
    add_to_cart,
    ask_email_change,
    ask_password_reset,
    change_own_password,
    confirm_prices,
    current_cart,
    log_in_with_password,
    note_account,
    remove_from_cart,
    reset_with_link,
    search_admission,
    set_cart_quantity,
    sign_out,
    sign_up,
)
from .checkout import viewed_order
from .context import (
    account_tokens,
    csrf_token,
    current_user,
    outbox,
    require_login,
    services,
)
from .credentials import SENT_NEW_ADDRESS, SENT_RESET
from .images import public_image
from .inputs import json_body, json_int, json_prices, page_args
from .ordering import checkout, order_token, payment_url

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def _session_body() -> dict:
    return {"csrf_token": csrf_token(), "user": current_user()}


@bp.get("/session")
def session_info():
    return jsonify(_session_body())


@bp.post("/session/login")
def login():
    body = json_body()
    log_in_with_password(body.get("email"), body.get("password"))
    return jsonify(_session_body())


@bp.post("/session/logout")
def logout():
    sign_out()
    return jsonify(_session_body())


@bp.post("/users")
def create_user():
    """202 whether or not the address has an account (the mail differs); no sign-in."""
    body = json_body()
    address = sign_up(body.get("email"), body.get("password"))
    return jsonify({"email": address, "message": SENT_TO_CONFIRM.format(email=address)}), 202


@bp.get("/account")
def account():
    found = get_account(services().engines.primary, require_login())
    note_account(found.user)
    return jsonify(
        {
            "id": found.id,
            "email": found.email,
            "email_verified": found.verified,
            "email_verified_at": _iso(found.email_verified_at),
            "password_changed_at": _iso(found.password_changed_at),
            "created_at": _iso(found.created_at),
        }
    )


def _iso(moment) -> str | None:
    return moment.isoformat() if moment is not None else None


@bp.post("/account/verify/resend")
def resend_verification():
    user_id = require_login()
    address = send_verification(services().engines.primary, account_tokens(), outbox(), user_id)
    return jsonify({"email": address, "message": SENT_TO_CONFIRM.format(email=address)}), 202


@bp.put("/account/password")
def put_password():
    require_login()  # 401 before anything about the body
    body = json_body()
    _, ended = change_own_password(body.get("current_password"), body.get("new_password"))
    return jsonify({**_session_body(), "sessions_ended": ended})


@bp.post("/account/email")
def post_email():
    require_login()
    body = json_body()
    address = ask_email_change(body.get("password"), body.get("email"))
    return jsonify({"email": address, "message": SENT_NEW_ADDRESS.format(email=address)}), 202


@bp.post("/password/reset")
def post_password_reset():
    address = ask_password_reset(json_body().get("email"))
    return jsonify({"email": address, "message": SENT_RESET.format(email=address)}), 202


@bp.post("/password/reset/confirm")
def confirm_password_reset():
    body = json_body()
    _, ended = reset_with_link(body.get("token"), body.get("new_password"))
    return jsonify({**_session_body(), "sessions_ended": ended})


@bp.get("/categories")
def categories():
    items = services().catalogue.categories()
    return jsonify({"items": [{"slug": c["slug"], "name": c["name"]} for c in items]})


@bp.get("/products")
def products():
    page, per_page = page_args(request.args, services().catalogue.paging)
    q = request.args.get("q", "")
    result = services().catalogue.page(
        category=request.args.get("category") or None,
        q=q,
        admit=search_admission(q),
        page=page,
        per_page=per_page,
    )
    return jsonify({**result, "items": [_public_product(item) for item in result["items"]]})


@bp.get("/products/<id:product_id>")
def product(product_id: int):
    return jsonify(_public_product(services().catalogue.product(product_id)))


def _public_product(product: dict) -> dict:
    """A product with its images' URLs (the cached dict is shared: copied, not changed)."""
    shown = {**product, "image": public_image(product.get("image"))}
    if "images" in product:
        shown["images"] = [public_image(image) for image in product["images"]]
    return shown


@bp.get("/cart")
def cart():
    return jsonify(current_cart().as_json())


def _quantity(body: dict, *, minimum: int) -> int:
    """A whole number; its maximum is the cart's rule (``CartStore.check_quantity``)."""
    return json_int(body.get("quantity"), "quantity", minimum=minimum, maximum=None)


@bp.post("/cart/items")
def add_item():
    body = json_body()
    product_id = json_int(body.get("product_id"), "product_id", minimum=1, maximum=MAX_ID)
    add_to_cart(product_id, _quantity(body, minimum=1))
    return jsonify(current_cart().as_json())


@bp.post("/cart/prices")
def confirm_cart_prices():
    """The client has shown the shopper these unit prices; the cart's lines take them."""
    confirm_prices(json_prices(json_body().get("items"), services().settings.max_cart_lines))
    return jsonify(current_cart().as_json())


# One rule for both methods: with two, an id the converter refuses (0, too large) under one
# method was answered "405, use the other method" instead of 404.
@bp.route("/cart/items/<id:product_id>", methods=["PUT", "DELETE"])
def cart_item(product_id: int):
    if request.method == "DELETE":
        remove_from_cart(product_id)
    else:
        set_cart_quantity(product_id, _quantity(json_body(), minimum=0))
    return jsonify(current_cart().as_json())


@bp.post("/orders")
def create_order():
    """An account's or a guest's order (a guest gives ``email``), waiting for payment at
    ``payment_url``; ``access_token`` opens it without the session (``?token=``)."""
    body = json_body()
    shipping = body.get("shipping")
    if not isinstance(shipping, dict):
        shipping = {}
    placed = checkout(
        Shipping.parse(shipping.get("name"), shipping.get("address")),
        request.headers.get("Idempotency-Key", ""),
        email=body.get("email"),
        password=body.get("password"),
    )
    url = payment_url(placed.order)
    found = placed.order.as_json(access_token=order_token(placed.order))
    found["payment_url"] = url
    return jsonify({"order": found}), 201 if placed.created else 200


@bp.get("/orders")
def orders():
    user_id = require_login()
    found = list_orders(services().engines.primary, user_id=user_id)
    return jsonify({"items": [order.as_json() for order in found]})


@bp.get("/orders/<id:order_id>")
def order(order_id: int):
    """The owner's session (account or guest) or ``?token=`` sees it; anyone else gets 404."""
    found = viewed_order(order_id)
    return jsonify({"order": found.as_json(access_token=order_token(found))})
