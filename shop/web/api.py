"""The JSON API under /api/v1: the same rules and session cookie as the pages."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..errors import NotFound
from ..models import MAX_ID
from ..orders import Shipping, get_order, list_orders
from .actions import (
    add_to_cart,
    checkout,
    current_cart,
    log_in_with_password,
    remove_from_cart,
    search_admission,
    set_cart_quantity,
    sign_out,
    sign_up,
)
from .context import csrf_token, current_user, require_login, services
from .inputs import json_body, json_int, page_args

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
    body = json_body()
    sign_up(body.get("email"), body.get("password"))
    return jsonify(_session_body()), 201


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
    return jsonify(result)


@bp.get("/products/<id:product_id>")
def product(product_id: int):
    return jsonify(services().catalogue.product(product_id))


@bp.get("/cart")
def cart():
    return jsonify(current_cart().as_json())


def _quantity(body: dict, *, minimum: int) -> int:
    return json_int(
        body.get("quantity"),
        "quantity",
        minimum=minimum,
        maximum=services().settings.max_line_quantity,
    )


@bp.post("/cart/items")
def add_item():
    body = json_body()
    product_id = json_int(body.get("product_id"), "product_id", minimum=1, maximum=MAX_ID)
    add_to_cart(product_id, _quantity(body, minimum=1))
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
    require_login()  # 401 before anything about the body
    body = json_body()
    shipping = body.get("shipping")
    if not isinstance(shipping, dict):
        shipping = {}
    placed = checkout(
        Shipping.parse(shipping.get("name"), shipping.get("address")),
        request.headers.get("Idempotency-Key", ""),
        password=body.get("password"),
    )
    return jsonify(placed.order.as_json()), 201 if placed.created else 200


@bp.get("/orders")
def orders():
    user_id = require_login()
    found = list_orders(services().engines.primary, user_id=user_id)
    return jsonify({"items": [order.as_json() for order in found]})


@bp.get("/orders/<id:order_id>")
def order(order_id: int):
    user_id = require_login()
    found = get_order(services().engines.primary, user_id=user_id, order_id=order_id)
    if found is None:
        raise NotFound(f"There is no order {order_id} in your account.")
    return jsonify(found.as_json())
