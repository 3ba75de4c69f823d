"""The back office (/admin): for staff and admins only.

Every request under /admin passes :func:`guard` first: anyone without a back-office role gets
the same 404 as an address that does not exist (no hint that the back office is there); the
role is read from the primary each time, so a role taken away stops working at once. Then the
password must have been entered within ``SHOP_ADMIN_REAUTH_SECONDS``, and a state change must
carry the CSRF token (checked here, after the role, so that the token's refusal cannot tell an
outsider that the address exists). Views that only an admin may use are marked with
:func:`admin_only`; the others are open to staff. Each capability has its module here, and
every change they make is written to the audit trail (shop/audit.py) in its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from werkzeug.exceptions import NotFound as NoSuchPage
from werkzeug.exceptions import RequestEntityTooLarge

from ...audit import Actor
from ...back_office_summary import summary
from ...config import Settings
from ...errors import AdminOnly, FormError
from ...order_lifecycle import utcnow
from ...redis_client import RedisUnavailable
from ...staff import ADMIN, BACK_OFFICE_ROLES, role_of
from ..actions import confirm_password
from ..context import require_session_store, services
from ..errors import NO_PAGE, form_error
from ..middleware import check_csrf, refuse_unusable_text

bp = Blueprint("admin", __name__, url_prefix="/admin")

View = TypeVar("View", bound=Callable[..., Any])

REAUTH_ENDPOINT = "admin.reauth"


@dataclass(frozen=True)
class Section:
    """An entry of the back office's navigation: its page, its label, the endpoints that
    belong to it (a prefix) and where it stands."""

    endpoint: str
    label: str
    prefix: str
    order: int
    admin: bool = False


SECTIONS: list[Section] = []


def add_section(
    endpoint: str, label: str, *, order: int, admin: bool = False, prefix: str | None = None
) -> None:
    """Each capability's module puts itself in the navigation; the link is marked current on
    every endpoint starting with ``prefix`` (default: the endpoint up to its last ``_``)."""
    if prefix is None:
        prefix = endpoint.rsplit("_", 1)[0] if "_" in endpoint else endpoint
    SECTIONS.append(Section(endpoint, label, prefix, order, admin))
    SECTIONS.sort(key=lambda section: section.order)


def admin_sections() -> list[Section]:
    """The sections this request's actor may open."""
    actor = g.get("actor")
    return [s for s in SECTIONS if not s.admin or (actor is not None and actor.role == ADMIN)]


def admin_only(view: View) -> View:
    """Mark a back-office view as an admin's: staff get 403 ``admin_only``."""
    view.admin_only = True  # type: ignore[attr-defined]
    return view


def is_admin_only(endpoint: str | None) -> bool:
    return getattr(current_app.view_functions.get(endpoint or ""), "admin_only", False)


def allow_body(max_bytes: int | Callable[[Settings], int]) -> Callable[[View], View]:
    """Let a view take a body of up to ``max_bytes`` (an upload; or a function of the settings
    giving it) instead of SHOP_MAX_BODY_BYTES; the guard applies it once the role is known, so
    to anyone else the address answers as any other."""

    def mark(view: View) -> View:
        view.max_body = max_bytes  # type: ignore[attr-defined]
        return view

    return mark


def _read_form() -> None:
    """The form's text checked and its CSRF token, within the view's body limit."""
    limit = getattr(current_app.view_functions.get(request.endpoint or ""), "max_body", None)
    if callable(limit):
        limit = limit(services().settings)
    if limit:
        request.max_content_length = request.max_form_memory_size = limit
    try:
        refuse_unusable_text()
        check_csrf()
    except RequestEntityTooLarge:
        largest = limit or current_app.config["MAX_CONTENT_LENGTH"]
        raise RequestEntityTooLarge(
            f"What was sent is too large: at most {largest // 1024:,} KiB can be sent here. "
            "Nothing was changed."
        ) from None


@bp.before_request
def guard():
    current = require_session_store()
    role = None
    if current.user_id is not None:
        with services().engines.primary.connect() as conn:
            role = role_of(conn, current.user_id)
    if role not in BACK_OFFICE_ROLES:
        if current.get("staff"):
            del current["staff"]  # the role was taken away: the header stops offering /admin
        refuse_unusable_text()  # as at any address, before its 404
        raise NoSuchPage(NO_PAGE)
    if not current.get("staff"):
        current["staff"] = True  # granted while signed in: the header offers /admin from now
    assert current.user_id is not None and role is not None
    g.actor = Actor(current.user_id, current.get("email") or "", role)
    _read_form()
    if is_admin_only(request.endpoint) and role != ADMIN:
        raise AdminOnly("Only an admin can do this.")
    if request.endpoint == REAUTH_ENDPOINT:
        return None
    age = current.password_age(services().sessions.clock())
    if age <= services().settings.admin_reauth_seconds:
        return None
    if request.method == "GET":
        return redirect(url_for(REAUTH_ENDPOINT, next=request.full_path.rstrip("?")), code=303)
    # A form sent after the password went stale: nothing is done; the page asks for it again
    # and then returns to the page the form was on.
    return render_template("admin/reauth.html", error=None, next=_back_to(request.referrer)), 401


def actor() -> Actor:
    """Who is making this back-office request (set by :func:`guard`)."""
    return g.actor


def now() -> datetime:
    return utcnow(services().clock)


def _back_to(target: str | None) -> str:
    """A back-office path to return to (never elsewhere)."""
    if target:
        parts = urlsplit(target)
        if (not parts.netloc or parts.netloc == request.host) and parts.path.startswith("/admin"):
            return parts.path + (f"?{parts.query}" if parts.query else "")
    return url_for("admin.home")


def refresh_catalogue(product_ids: list[int], *, structural: bool = False) -> str | None:
    """After a committed catalogue change: drop what shows it, on every instance. Returns a
    warning for the page when the cache could not be reached (entries then expire by TTL)."""
    catalogue = services().catalogue
    try:
        catalogue.invalidate(product_ids, structural=structural)
    except RedisUnavailable:
        ttl = services().settings.catalogue_cache_ttl
        return (
            "Saved, but the cache could not be told: the shop shows the change within "
            f"{ttl} seconds."
        )
    return None


@bp.route("/reauth", methods=["GET", "POST"])
def reauth():
    """The password again, before the back office (every SHOP_ADMIN_REAUTH_SECONDS)."""
    target = _back_to(request.values.get("next"))
    if request.method == "GET":
        return render_template("admin/reauth.html", error=None, next=target)
    try:
        confirm_password(request.form.get("password", ""))
    except FormError as exc:  # a wrong password, the rate rules, the back-off
        return form_error("admin/reauth.html", exc, next=target)
    return redirect(target, code=303)


@bp.get("/")
def home():
    waiting = summary(
        services().engines.primary, low_stock_default=services().settings.low_stock_default
    )
    return render_template("admin/home.html", summary=waiting)


@bp.app_context_processor
def _navigation() -> dict[str, Any]:
    return {"admin_sections": admin_sections}


# Each capability's routes, on bp; the order of the navigation is each one's add_section.
from . import (  # noqa: E402,F401
    audit_pages,
    categories,
    images,
    orders,
    product_import,
    products,
    staff_pages,
    stock,
)
