"""The ceiling: a bare Flask app rendering the shop's own catalogue pages from memory.

No session, no cache, no database: the products are the shop's demo catalogue
(``shop.seed.demo_products``, the rows the benchmark seeds), built once per process in the shape
the shop's catalogue returns. Nothing built on Flask and these templates serves the pages faster.

``gunicorn 'bench.ceiling:create_app()' -c gunicorn.conf.py``; ``BENCH_CEILING_PRODUCTS`` is the
size of the catalogue (default 10000).
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, abort, render_template, request

from shop.seed import CATEGORIES, demo_products

from .shop_templates import PER_PAGE, flask_app, last_page, register_page_support

# The shop's CSRF token is 43 characters of base64url; the ceiling signs nothing.
_TOKEN = "c" * 43


def catalogue_in_memory(count: int) -> tuple[list[dict], list[dict]]:
    """Categories (by name, as the shop lists them) and products, ids as seeded: 1, 2, ..."""
    categories = [
        {"id": i, "slug": slug, "name": name} for i, (slug, name) in enumerate(CATEGORIES, 1)
    ]
    slugs = {c["id"]: c["slug"] for c in categories}
    products = [
        {
            "id": i,
            "name": row["name"],
            "description": row["description"],
            "price_cents": row["price_cents"],
            "stock": row["stock"],
            "category": slugs[row["category_id"]],
        }
        for i, row in enumerate(demo_products(count), 1)
    ]
    return sorted(categories, key=lambda c: c["name"]), products


def create_app(count: int | None = None) -> Flask:
    count = count or int(os.environ.get("BENCH_CEILING_PRODUCTS", "10000"))
    categories, products = catalogue_in_memory(count)
    app = flask_app(__name__)
    register_page_support(
        app, csrf_token=lambda: _TOKEN, cart_count=lambda: 0, current_user=lambda: None
    )
    pages = last_page(len(products))
    bp = Blueprint("catalogue", __name__)

    @bp.get("/")
    def grid():
        page = request.args.get("page", 1, type=int)
        if not 1 <= page <= pages:
            abort(404)
        start = (page - 1) * PER_PAGE
        result = {
            "items": products[start : start + PER_PAGE],
            "page": page,
            "per_page": PER_PAGE,
            "total": len(products),
        }
        return render_template(
            "catalogue/grid.html",
            result=result,
            pages=pages,
            category=None,
            q="",
            categories=categories,
            error=None,
        )

    @bp.get("/products/<int:product_id>")
    def product(product_id: int):
        if not 1 <= product_id <= len(products):
            abort(404)
        return render_template(
            "catalogue/product.html",
            product=products[product_id - 1],
            categories=categories,
            error=None,
        )

    app.register_blueprint(bp)
    return app
