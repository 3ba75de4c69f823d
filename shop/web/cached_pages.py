"""Catalogue pages served from the page cache (shop/page_cache.py): the header's hole filled
per request, and the headers that let a shared cache keep an anonymous visitor's page.

An anonymous visitor (no session cookie, or one whose session has no record in Redis) gets the
same bytes as every other anonymous visitor, no cookie, ``Cache-Control: public`` with a short
``s-maxage`` and an ``xkey`` header naming what the page shows, for an edge cache to purge by
(``shop`` on every page, ``p<id>`` for each product). A visitor with a session gets the same
page with their cart count and account links filled in, ``private``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Response, current_app, request
from markupsafe import Markup, escape

from .context import cart_count, current_user, services, shop_session, shows_back_office

Render = Callable[[bool], tuple[str, Iterable[int]]]


def account_nav() -> Markup:
    """The header's cart and account links for this request's visitor (a Jinja global, and
    the fill of a cached page's hole)."""
    count, user = cart_count(), current_user()
    shape = _nav_shape(count is not None, user, shows_back_office())
    if count is not None:
        shape = shape.replace(_COUNT, str(count))
    if user is not None:
        shape = shape.replace(_EMAIL, str(escape(user["email"])))
    return Markup(shape)


# The nav is rendered once per app for each of its few shapes (a count or none; anonymous,
# signed in with the address confirmed or not; staff or not), with these in place of the
# count and the address, then filled by two replacements: a few microseconds, not a template
# render, per request. Neither can occur in the template's own text.
_COUNT = "__shop_nav_count__"
_EMAIL = "__shop_nav_email__"
_SHAPES = "shop_account_nav_shapes"


def _nav_shape(counted: bool, user: dict | None, back_office: bool) -> str:
    key = (counted, None if user is None else bool(user["email_verified"]), back_office)
    shapes = current_app.extensions.setdefault(_SHAPES, {})
    shape = shapes.get(key)
    if shape is None:
        template = current_app.jinja_env.get_template("_account_nav.html")
        placeholder = None if user is None else {"email": _EMAIL, "email_verified": key[1]}
        shape = shapes[key] = template.render(
            count=_COUNT if counted else None, user=placeholder, back_office=back_office
        )
    return shape


def _anonymous_nav() -> str:
    """The same for every anonymous visitor."""
    return _nav_shape(True, None, False).replace(_COUNT, "0")


def serve(key: str, render: Render) -> Response:
    """The page under ``key`` in the page cache (``render(True)`` on a miss: its text with the
    hole, and the products it shows), filled for this visitor. The page an add-to-cart
    redirects to carries a notice for this visitor alone: rendered in full (``render(False)``)
    and not kept."""
    current = shop_session()
    private = _SIGNED_IN if current.user_id is not None else _PRIVATE
    if "added" in request.args:
        html, _ = render(False)
        return current_app.response_class(html, headers=private)
    page = services().pages.get(key, lambda: render(True))
    xkey = ("xkey", " ".join(["shop", *[f"p{product_id}" for product_id in page.products]]))
    if not current.stored and current.user_id is None and not current.unavailable:
        return current_app.response_class(
            page.filled(_anonymous_nav()), headers=[*_public_headers(), xkey]
        )
    return current_app.response_class(page.filled(account_nav()), headers=[*private, xkey])


_HTML = ("Content-Type", "text/html; charset=utf-8")
# Final as they stand (shop/web/middleware.py adds nothing to them): a page with a visitor's
# own links, for their browser alone, and never stored at all once they are signed in.
_PRIVATE = [_HTML, ("Cache-Control", "private, no-cache"), ("Vary", "Cookie")]
_SIGNED_IN = [_HTML, ("Cache-Control", "private, no-cache, no-store"), ("Vary", "Cookie")]


def _public_headers() -> list[tuple[str, str]]:
    """An anonymous page's: any shared cache may keep it for a few seconds (browsers always
    ask again), and a visitor with a session cookie must not be given it."""
    settings = services().settings
    cache_control = (
        f"public, max-age=0, s-maxage={settings.page_edge_seconds}, "
        f"stale-while-revalidate={settings.page_edge_stale_seconds}"
    )
    return [_HTML, ("Cache-Control", cache_control), ("Vary", "Cookie")]
