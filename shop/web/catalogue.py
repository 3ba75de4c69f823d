"""Catalogue pages: the grid (categories, search, pages) and a product page."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from ..errors import FormError
from .actions import search_admission
from .context import services
from .errors import form_error
from .inputs import page_args

bp = Blueprint("catalogue", __name__)


@bp.get("/")
def grid():
    catalogue = services().catalogue
    category = request.args.get("category") or None
    q = request.args.get("q", "")
    try:
        page, per_page = page_args(request.args, catalogue.paging)
        result = catalogue.page(
            category=category, q=q, page=page, per_page=per_page, admit=search_admission(q)
        )
    except FormError as exc:
        return form_error(
            "catalogue/grid.html",
            exc,
            result=None,
            category=None,
            q=q[:100],
            categories=catalogue.categories(),
        )
    pages = max(1, -(-result["total"] // result["per_page"]))
    if result.get("total_capped"):
        pages = result["page"] + (len(result["items"]) == result["per_page"])
    # The pager stops at the result window; its last page says how to see the rest.
    reachable = catalogue.paging.last_page(result["per_page"])
    beyond_window = pages > reachable
    return render_template(
        "catalogue/grid.html",
        result=result,
        pages=min(pages, reachable),
        beyond_window=beyond_window,
        narrow=catalogue.paging.narrow_message(result["per_page"]) if beyond_window else None,
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
