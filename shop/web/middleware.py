"""Per-request plumbing: request ids in logs, CSRF on every state change, security headers."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from flask import Flask, current_app, g, has_request_context, request
from werkzeug.wrappers import Response

from ..config import Settings
from ..errors import CrossOriginRefused, CsrfFailure
from ..session_ids import csrf_token_valid
from .context import shop_session
from .inputs import check_text

log = logging.getLogger("shop.access")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
# The shop uses none of these browser features; nothing embedded or injected may either.
PERMISSIONS_POLICY = (
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), bluetooth=(), "
    "hid=(), midi=(), magnetometer=(), gyroscope=(), accelerometer=(), browsing-topics=()"
)


class RequestIdFilter(logging.Filter):
    """Stamps every log record with the request id (or '-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


def _start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = request.environ.get(REQUEST_ID_KEY) or request_id_for(request.environ)


def request_id_for(environ: dict) -> str:
    """The balancer's ``X-Request-ID`` when it is a sane one, else a new id."""
    incoming = environ.get("HTTP_X_REQUEST_ID", "")
    return incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)


def _before_request() -> None:
    """Every request's checks, in order (one hook: Flask's dispatch costs per hook)."""
    _start_request()
    _refuse_cross_origin()
    _check_csrf()
    _refuse_unusable_text()


def _refuse_unusable_text() -> None:
    if request.blueprint == "admin":
        return  # the back office's guard: after the role, and its views' own body limits
    refuse_unusable_text()


def refuse_unusable_text() -> None:
    """No text field of the shop can hold a NUL or a lone surrogate (PostgreSQL, the password
    hash and the log refuse them with an error): turn them away at the door for every form and
    query string (JSON: see ``json_body``)."""
    sources = [request.args]
    if request.method in UNSAFE_METHODS:
        sources.append(request.form)
    for source in sources:
        for name, value in source.items(multi=True):
            check_text(name, field=name)
            check_text(value, field=name)


def same_origin() -> bool | None:
    """What the browser says about where the request comes from: True for this site's own
    pages (or the address typed by the user), False for another site, None when it says
    nothing (curl, the API's clients, a browser from before 2020). ``Sec-Fetch-Site`` first,
    else ``Origin``: every current browser sends one of them on a POST."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    return urlsplit(origin).netloc == request.host


def _refuse_cross_origin() -> None:
    """A state change from another site is refused even with a valid token, as Go's
    ``CrossOriginProtection`` and Django do. Clients that send neither header are left to the
    token (``check_csrf``)."""
    if request.method not in UNSAFE_METHODS:
        return
    if same_origin() is False:
        raise CrossOriginRefused(
            "This request came from another site and was refused. Use the shop's own pages."
        )


def _check_csrf() -> None:
    if request.blueprint == "admin":
        return  # checked by the back office's guard, after the role (shop/web/admin)
    check_csrf()


def check_csrf() -> None:
    """Refuse a state change without this session's token, unless a browser says it comes
    from this site's own page (:func:`same_origin`): Fetch Metadata needs no token, as Go's
    ``CrossOriginProtection`` decides, so pages can be the same bytes for every visitor. Only
    a request that says nothing about its origin (not a browser another site could trick into
    sending it, or one too old to say) must prove itself with the token."""
    if request.method not in UNSAFE_METHODS or request.routing_exception is not None:
        return  # no such route (404/405): nothing would change, so say that instead
    if getattr(current_app.view_functions.get(request.endpoint or ""), "csrf_exempt", False):
        return  # a provider's call (signed), not the shopper's browser
    if same_origin():
        return
    token = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
    current = shop_session()
    if current.fresh or not csrf_token_valid(current_app.config["SECRET_KEY"], current.sid, token):
        raise CsrfFailure(
            "The form or request expired or was not sent by this site (CSRF token missing or "
            "invalid). Reload the page and try again; API clients send the token from "
            "GET /api/v1/session in an X-CSRF-Token header."
        )


# What every response carries unless its view set its own.
SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
    ("Cross-Origin-Opener-Policy", "same-origin"),
)
REQUEST_ID_KEY = "shop.request_id"


class ResponseHeaders:
    """WSGI middleware: what every response carries (the security headers, the instance's
    name, HSTS over HTTPS, the request id), added as plain pairs where the response leaves the
    app. Per response that is one pass over its header names: no werkzeug ``Headers`` to
    parse, validate and copy again, which cost a warm page a sixth of its time. A response
    that set one of them itself (an image's own policy, say) keeps its own. Every answer gets
    them, the error pages werkzeug makes included."""

    def __init__(self, wsgi_app: Callable, settings: Settings) -> None:
        self.wsgi_app = wsgi_app
        constant = list(SECURITY_HEADERS)
        if settings.served_by_header:
            constant.append(("X-Served-By", str(settings.instance_name)))
        for name, value in constant:  # checked once here instead of per response
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError(f"header {name!r} may not hold a line break")
        self.constant = tuple(constant)
        self.names = frozenset(name.lower() for name, _ in constant)
        self.hsts = (
            ("Strict-Transport-Security", f"max-age={settings.hsts_seconds}; includeSubDomains")
            if settings.hsts_seconds
            else None
        )

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request_id = environ[REQUEST_ID_KEY] = request_id_for(environ)

        def start(status: str, headers: list[tuple[str, str]], exc_info=None):
            present = {name.lower() for name, _ in headers}
            if self.names.isdisjoint(present):
                headers.extend(self.constant)
            else:
                headers.extend(pair for pair in self.constant if pair[0].lower() not in present)
            if (
                self.hsts is not None
                and environ.get("wsgi.url_scheme") == "https"
                and "strict-transport-security" not in present
            ):
                headers.append(self.hsts)
            if "x-request-id" in present:
                headers[:] = [pair for pair in headers if pair[0].lower() != "x-request-id"]
            headers.append(("X-Request-ID", request_id))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def _finish_response(response: Response) -> Response:
    headers = response.headers
    cache_control = headers.get("Cache-Control")
    directives = _directives(cache_control) if cache_control else ()
    if "public" not in directives and not _kept_private(response, directives):
        # Pages with a per-visitor part: never for a shared cache. (A response marked public,
        # an image or an anonymous catalogue page, is the same for everyone.)
        response.vary.add("Cookie")
        if request.method in UNSAFE_METHODS or shop_session().user_id is not None:
            response.cache_control.no_store = True
        if response.mimetype == "text/html" or response.cache_control.no_store:
            response.cache_control.private = True
    if 400 <= response.status_code < 500 and response.status_code not in (401, 404):
        # Refused input: one line an operator can grep (with the request id), no traceback.
        log.info(
            "refused %s %s: %s %s",
            request.method,
            request.path[:200],
            response.status_code,
            g.get("error_code", "-"),
        )
    started = g.get("started")
    if started is not None and log.isEnabledFor(logging.DEBUG):
        # gunicorn's access log already carries the line (with X-Request-ID); this one is for
        # `flask run` and debugging, and costs nothing (no lock, no formatting) when off.
        log.debug(
            "%s %s %s %s %.1fms",
            request.remote_addr,
            request.method,
            request.full_path.rstrip("?"),
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
    return response


def _directives(cache_control: str) -> list[str]:
    return [part.strip().lower() for part in cache_control.split(",")]


def _kept_private(response: Response, directives: Sequence[str]) -> bool:
    """True when the view already said all that the rule above would (a cached page for a
    visitor with a session does): private, varying on the cookie, and not stored when it
    must not be."""
    if "private" not in directives or "cookie" not in response.headers.get("Vary", "").lower():
        return False
    must_not_store = request.method in UNSAFE_METHODS or shop_session().user_id is not None
    return "no-store" in directives or not must_not_store


def register_middleware(app: Flask, settings: Settings) -> None:
    app.before_request(_before_request)
    app.after_request(_finish_response)
    # Flask's documented way to add WSGI middleware; mypy sees a method replaced.
    app.wsgi_app = ResponseHeaders(app.wsgi_app, settings)  # type: ignore[method-assign]
