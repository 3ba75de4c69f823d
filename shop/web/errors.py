"""The one place where errors become responses: JSON under /api, a page elsewhere.

A view catches only a :class:`FormError` (and shows its form again with :func:`form_error`);
everything else comes here: a login redirect for pages, the status, and ``Retry-After`` on
every 503 and 429.
"""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from ..db import DatabaseUnavailable, PoolTimeout
from ..errors import FormError, LoginRequired, ServiceUnavailable, ShopError
from ..redis_client import RedisUnavailable
from .context import SESSIONS_DOWN
from .inputs import safe_next

log = logging.getLogger(__name__)

DATABASE_DOWN = (
    "Orders and accounts are unavailable for a moment (the database cannot be reached). "
    "Nothing was charged or ordered; please try again shortly."
)
DATABASE_BUSY = (
    "The shop is very busy right now (every database connection is in use). "
    "Nothing was charged or ordered; please try again in a few seconds."
)
# What any 404 with no more to say reads: an unknown address, and the back office to anyone who
# is not staff (shop/web/admin), so the two cannot be told apart.
NO_PAGE = "There is no page at this address."
RETRY_AFTER = "5"  # seconds, for a 503 or 429 whose cause named no time of its own


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, code: str, message: str, details: dict | None = None):
    g.error_code = code
    response: ResponseReturnValue
    if wants_json():
        body: dict = {"error": {"code": code, "message": message}}
        if details:
            body["error"].update(details)
        response = jsonify(body)
        response.status_code = status
    else:
        response = render_template(
            "error.html", status=status, code=code, message=message, details=details or {}
        )
        response = (response, status)
    return response


def _shop_error(exc: ShopError):
    details = exc.details() or {}
    if exc.field:
        details = {"field": exc.field, **details}
    response = make_response(error_response(exc.status, exc.code, exc.message, details))
    response.headers.update(exc.headers())
    return response


def form_error(template: str, exc: ShopError, **context):
    """The form shown again with an error the shopper can fix there, with the error's status
    and headers (a 429's ``Retry-After``); any other error is not the form's business and is
    raised, to be answered here like everywhere else."""
    if not isinstance(exc, FormError):
        raise exc
    return render_template(template, error=exc, **context), exc.status, exc.headers()


def _login_required(exc: LoginRequired):
    """The API answers 401; a page sends the shopper to log in and come back here."""
    if wants_json():
        return _shop_error(exc)
    g.error_code = exc.code
    back = safe_next(request.path, url_for("catalogue.grid"))
    return redirect(url_for("account.login", next=back), code=303)


def _retry_after(response):
    """Every 503 and 429 says when to come back, whoever answered it."""
    if response.status_code in (429, 503) and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = RETRY_AFTER
    return response


def _http_error(exc: HTTPException):
    code = (exc.name or "error").lower().replace(" ", "_")
    message = exc.description or exc.name
    if exc.code == 413 and exc.description == RequestEntityTooLarge.description:
        message = "The request body is too large."
    if exc.code == 404 and request.routing_exception is exc:
        message = NO_PAGE
    response = error_response(exc.code or 500, code, message)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response = _with_allow(response, exc.valid_methods)
    return response


def _with_allow(response, methods):
    response = make_response(response)
    response.headers["Allow"] = ", ".join(methods)
    return response


def _database_down(exc: Exception):
    if isinstance(exc, PoolTimeout):  # every connection of this worker's pool stayed busy
        log.error("database pool exhausted: %s", str(exc).strip().splitlines()[0])
        return _shop_error(ServiceUnavailable(DATABASE_BUSY))
    cause = getattr(exc, "orig", None) or exc
    log.error("primary database unavailable: %s", str(cause).strip().splitlines()[0])
    return _shop_error(ServiceUnavailable(DATABASE_DOWN))


def _redis_down(exc: Exception):
    log.error("redis unavailable: %s", exc)
    return _shop_error(ServiceUnavailable(SESSIONS_DOWN))


def _unexpected(exc: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal_error", "Something went wrong on our side.")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ShopError, _shop_error)
    app.register_error_handler(LoginRequired, _login_required)
    app.register_error_handler(HTTPException, _http_error)
    for down in DatabaseUnavailable:
        app.register_error_handler(down, _database_down)
    for error in RedisUnavailable:
        app.register_error_handler(error, _redis_down)
    app.register_error_handler(Exception, _unexpected)
    app.after_request(_retry_after)
