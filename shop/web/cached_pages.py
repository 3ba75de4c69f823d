"""Catalogue pages served from the page cache (shop/page_cache.py): the header's hole filled
per request, and the headers that let a shared cache keep an anonymous visitor's page.

An anonymous visitor (no session cookie, or one whose session has no record in Redis) gets the
same bytes as every other anonymous visitor, no cookie, ``Cache-Control: public`` with a short
``s-maxage`` and an ``xkey`` header naming what the page shows, for an edge cache to purge by
(``shop`` on every page, ``p<id>`` for each product). A visitor with a session gets the same
page with their cart count and account links filled in, ``private``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable

from flask import Response, current_app, request
from markupsafe import Markup, escape
from werkzeug.http import parse_cookie

from ..page_cache import ADDRESS_KEY, GENERATION_KEY, ROUTE_KEY, PageCache, WarmAnswer
from ..redis_client import RedisUnavailable
from ..sessions import LoadedSession
from .context import cart_count, current_user, services, shop_session, shows_back_office
from .session_interface import SESSION_LOADED_KEY, RedisSessionInterface

Render = Callable[[bool], tuple[str, Iterable[int]]]


def account_nav() -> Markup:
    """The header's cart and account links for this request's visitor (a Jinja global, and
    the fill of a cached page's hole)."""
    count, user = cart_count(), current_user()
    shape = _nav_shape(count is not None, user, shows_back_office())
    return Markup(_filled(shape, count, None if user is None else user["email"]))


def _filled(shape: str, count: int | None, email: str | None) -> str:
    if count is not None:
        shape = shape.replace(_COUNT, str(count))
    if email is not None:
        shape = shape.replace(_EMAIL, str(escape(email)))
    return shape


def _shape_key(counted: bool, user_verified: bool | None, back_office: bool) -> tuple:
    return (counted, user_verified, back_office)


# The nav is rendered once per app for each of its few shapes (a count or none; anonymous,
# signed in with the address confirmed or not; staff or not), with these in place of the
# count and the address, then filled by two replacements: a few microseconds, not a template
# render, per request. Neither can occur in the template's own text.
_COUNT = "__shop_nav_count__"
_EMAIL = "__shop_nav_email__"
_SHAPES = "shop_account_nav_shapes"


def _nav_shape(counted: bool, user: dict | None, back_office: bool) -> str:
    key = _shape_key(counted, None if user is None else bool(user["email_verified"]), back_office)
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
    anonymous = _anonymous_nav().encode()
    public = (*_public_headers(), xkey)
    length = ("Content-Length", str(len(page.head) + len(anonymous) + len(page.tail)))
    route = request.url_rule.rule  # type: ignore[union-attr]  # a view's request has one
    services().pages.remember(
        request.environ,
        WarmAnswer(key, weakref.ref(page), anonymous, (*public, length), xkey, route),
    )
    if not current.stored and current.user_id is None and not current.unavailable:
        body = b"".join((page.head, anonymous, page.tail))
        return current_app.response_class(body, headers=public)
    return current_app.response_class(page.filled(account_nav()), headers=[*private, xkey])


class WarmPages:
    """WSGI middleware: a ``GET`` of an address the app has answered with a page that this
    process's tier still holds is answered here, without the app (no request context, routing
    or hooks), the way a full-page cache in front of an application answers (Magento's,
    Varnish). An anonymous visitor gets the app's own bytes and headers: a lookup in
    :class:`PageCache` and one join of the page's parts. A visitor with a session cookie gets
    the page with their own header filled in, from the session's one load (the same as the
    app's, by the same store), with the app's private headers. Anything else (another method,
    an address not yet answered, a page dropped since, a cookie that is no live session of
    ours, a header shape not yet rendered) goes to the app, which remembers the answer for the
    next visitor; a session already loaded here is handed to it, not loaded again. Inside
    :class:`ResponseHeaders`, so every answer carries the security headers and its request id,
    and inside the metrics."""

    def __init__(
        self,
        wsgi_app: Callable,
        pages: PageCache,
        sessions: RedisSessionInterface,
        extensions: dict,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.pages = pages
        self.sessions = sessions
        self.extensions = extensions  # the app's: the header's rendered shapes (_SHAPES)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        local = self.pages.local
        if local is None or environ.get("REQUEST_METHOD") != "GET":
            return self.wsgi_app(environ, start_response)
        address = PageCache.address(environ)
        warm = self.pages.warm(address)
        if warm is None:
            return self._to_app(environ, start_response, address, local.generation)
        answer, page = warm
        cookies = environ.get("HTTP_COOKIE", "")
        if self.sessions.cookie_name not in cookies:
            body = b"".join((page.head, answer.account, page.tail))
            return self._answer(environ, start_response, answer, list(answer.headers), body)
        value = parse_cookie(cookies).get(self.sessions.cookie_name)
        issued = self.sessions.ids.read(value)
        if issued is None:
            return self._to_app(environ, start_response, address, local.generation)
        try:
            loaded = self.sessions.store.load(issued[0])
        except RedisUnavailable:
            return self._to_app(environ, start_response, address, local.generation)
        environ[SESSION_LOADED_KEY] = (value, loaded)  # the app uses it rather than load again
        account = self._account(loaded) if isinstance(loaded, LoadedSession) else None
        if account is None:
            return self._to_app(environ, start_response, address, local.generation)
        body = b"".join((page.head, account, page.tail))
        private = _SIGNED_IN if loaded.user_id is not None else _PRIVATE  # type: ignore[union-attr]
        headers = [*private, answer.xkey, ("Content-Length", str(len(body)))]
        return self._answer(environ, start_response, answer, headers, body)

    def _to_app(
        self, environ: dict, start_response: Callable, address: tuple, generation: int
    ) -> Iterable[bytes]:
        environ[ADDRESS_KEY] = address
        environ[GENERATION_KEY] = generation
        return self.wsgi_app(environ, start_response)

    def _answer(
        self,
        environ: dict,
        start_response: Callable,
        answer: WarmAnswer,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Iterable[bytes]:
        hook = self.pages.cache.lookup_hook
        if hook is not None:
            hook("page", "local")
        environ[ROUTE_KEY] = answer.route
        start_response("200 OK", headers)
        return [body]

    def _account(self, loaded: LoadedSession) -> bytes | None:
        """The header for this session, from its shape as the app rendered it (None: not yet
        rendered in this process; the app renders it)."""
        data, user_id = loaded.data, loaded.user_id
        signed_in = user_id is not None
        verified = bool(data.get("verified")) if signed_in else None
        key = _shape_key(True, verified, signed_in and bool(data.get("staff")))
        shape = self.extensions.get(_SHAPES, {}).get(key)
        if shape is None:
            return None
        email = data.get("email") if signed_in else None
        return _filled(shape, sum(loaded.cart.values()), email).encode()


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
