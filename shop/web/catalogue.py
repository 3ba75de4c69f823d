"""Catalogue pages: the grid (categories, search, pages) and a product page, served from the
page cache (shop/web/cached_pages.py) and rendered only on a miss."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request, url_for

from ..catalogue import GridQuery
from ..errors import FormError
from .actions import search_admission
from .cached_pages import serve
from .context import services
from .errors import form_error
from .inputs import page_args

bp = Blueprint("catalogue", __name__)


@bp.get("/")
def grid():
    catalogue = services().catalogue
    q = request.args.get("q", "")
    try:
        page, per_page = page_args(request.args, catalogue.paging)
        query = catalogue.grid_query(
            category=request.args.get("category") or None, q=q, page=page, per_page=per_page
        )
        # A page past the last, or a refused search, answers here and never takes the page
        # cache's rebuild lock; a warm page's data costs a dictionary lookup.
        catalogue.read_page(query, admit=search_admission(query.text))
    except FormError as exc:
        return form_error(
            "catalogue/grid.html",
            exc,
            result=None,
            category=None,
            q=q[:100],
            categories=catalogue.categories(),
        )
    return serve(services().pages.grid_key(query), lambda holes: _render_grid(query, holes))


def _render_grid(query: GridQuery, holes: bool) -> tuple[str, list[int]]:
    """The page's text from the canonical query alone (links, the forms' ``next``): extra
    query parameters never reach it, so they cannot make pages the cache would keep apart."""
    catalogue = services().catalogue
    # Everything shown is read again here, after the page cache noted the invalidations so
    # far: the category's name as well as the products.
    query = catalogue.grid_query(
        category=query.category["slug"] if query.category else None,
        q=query.text,
        page=query.page,
        per_page=query.per_page,
    )
    result = catalogue.read_page(query, admit=search_admission(query.text))
    pages = max(1, -(-result["total"] // result["per_page"]))
    if result.get("total_capped"):
        pages = result["page"] + (len(result["items"]) == result["per_page"])
    # The pager stops at the result window; its last page says how to see the rest.
    reachable = catalogue.paging.last_page(result["per_page"])
    beyond_window = pages > reachable
    link_args: dict[str, Any] = {
        "category": query.category["slug"] if query.category else None,
        "q": query.text or None,
        "per_page": query.per_page if query.per_page != catalogue.paging.per_page_default else None,
    }
    page = query.page if query.page > 1 else None
    html = render_template(
        "catalogue/grid.html",
        result=result,
        pages=min(pages, reachable),
        beyond_window=beyond_window,
        narrow=catalogue.paging.narrow_message(result["per_page"]) if beyond_window else None,
        category=query.category,
        q=query.text,
        categories=catalogue.categories(),
        error=None,
        link_args=link_args,
        next_url=url_for("catalogue.grid", page=page, **link_args),
        page_holes=holes,
    )
    return html, [item["id"] for item in result["items"]]


@bp.get("/products/<id:product_id>")
def product(product_id: int):
    services().catalogue.product(product_id)  # 404 here, before the page cache's lock
    return serve(
        services().pages.product_key(product_id),
        lambda holes: _render_product(product_id, holes),
    )


def _render_product(product_id: int, holes: bool) -> tuple[str, list[int]]:
    catalogue = services().catalogue
    html = render_template(
        "catalogue/product.html",
        product=catalogue.product(product_id),
        categories=catalogue.categories(),
        error=None,
        next_url=url_for("catalogue.product", product_id=product_id),
        page_holes=holes,
    )
    return html, [product_id]
