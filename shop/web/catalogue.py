"""Catalogue pages: the grid (categories, search, pages) and a product page."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from ..errors import ShopError
from .context import services
from .inputs import page_args

bp = Blueprint("catalogue", __name__)


@bp.get("/")
def grid():
    settings = services().settings
    catalogue = services().catalogue
    category = request.args.get("category") or None
    q = request.args.get("q", "")
    try:
        page, per_page = page_args(
            request.args,
            per_page_default=settings.per_page_default,
            per_page_max=settings.per_page_max,
        )
        result = catalogue.page(category=category, q=q, page=page, per_page=per_page)
    except ShopError as exc:
        return (
            render_template(
                "catalogue/grid.html",
                result=None,
                error=exc,
                category=None,
                q=q[:100],
                categories=catalogue.categories(),
            ),
            exc.status,
            exc.headers(),
        )
    pages = max(1, -(-result["total"] // result["per_page"]))
    if result.get("total_capped"):
        pages = result["page"] + (len(result["items"]) == result["per_page"])
    return render_template(
        "catalogue/grid.html",
        result=result,
        pages=pages,
        category=catalogue.category(category) if category else None,
        q=q,
        categories=catalogue.categories(),
        error=None,
    )


@bp.get("/products/<id:product_id>")
def product(product_id: int):
    catalogue = services().catalogue
    return render_template(
        "catalogue/product.html",
        product=catalogue.product(product_id),
        categories=catalogue.categories(),
        error=None,
    )
