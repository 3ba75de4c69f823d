"""What a view needs from the current request: the services, the session, the cart owner."""

from __future__ import annotations

from typing import cast

from flask import current_app, g, session

from ..account_mail import Outbox
from ..accounts import CHANGE_EMAIL, RESET, VERIFY
from ..cart import CartOwner
from ..errors import LoginRequired, ServiceUnavailable
from ..services import Services
from ..session_ids import masked_csrf_token
from ..tokens import Tokens
from .links import RequestLinks
from .session_interface import ShopSession

SESSIONS_DOWN = (
    "Carts and sign-in are unavailable for a moment (the session store cannot be reached). "
    "Browsing still works; please try again shortly."
)


def services() -> Services:
    return current_app.extensions["shop"]


def shop_session() -> ShopSession:
    return cast(ShopSession, session._get_current_object())  # type: ignore[attr-defined]


def require_session_store() -> ShopSession:
    """The session, or a 503 when Redis could not be reached for it."""
    current = shop_session()
    if current.unavailable:
        raise ServiceUnavailable(SESSIONS_DOWN)
    return current


def require_login() -> int:
    current = require_session_store()
    if current.user_id is None:
        raise LoginRequired("Please log in first.")
    return current.user_id


def cart_owner(current: ShopSession) -> CartOwner:
    if current.user_id is not None:
        return CartOwner.account(current.user_id)
    return CartOwner.session(current.ref)


def owner_key(current: ShopSession) -> str:
    """Whose orders and idempotency keys: the cart owner's name (``u:<id>`` / ``s:<ref>``)."""
    owner = cart_owner(current)
    return f"{owner.kind}:{owner.ident}"


def csrf_token() -> str:
    """The token for this session id, computed once per request (a grid page has a form per
    product) and again only if the id rotates."""
    current = shop_session()
    session_id = current.use_id()
    cached = g.get("csrf_token")
    if cached is None or cached[0] != session_id:
        cached = (session_id, masked_csrf_token(current_app.config["SECRET_KEY"], session_id))
        g.csrf_token = cached
    return cached[1]


def cart_count() -> int | None:
    """Items in the cart for the header, from the session load (no extra round trip)."""
    current = shop_session()
    if current.unavailable:
        return None
    return sum(current.cart.values())


def current_user() -> dict | None:
    current = shop_session()
    if current.user_id is None:
        return None
    return {
        "id": current.user_id,
        "email": current.get("email"),
        "email_verified": bool(current.get("verified")),
    }


def shows_back_office() -> bool:
    """Whether the header links to /admin: the role seen at sign-in (the back office itself
    asks the database on every request)."""
    current = shop_session()
    return current.user_id is not None and bool(current.get("staff"))


def account_tokens() -> Tokens:
    """Signed links under the app's secret key, with the configured lifetimes."""
    settings = services().settings
    lifetimes = {
        VERIFY: settings.email_link_ttl,
        CHANGE_EMAIL: settings.email_link_ttl,
        RESET: settings.password_reset_ttl,
    }
    return Tokens(current_app.config["SECRET_KEY"], lifetimes, clock=services().clock)


def outbox(*, deferred: bool = False) -> Outbox:
    """The accounts' mail; ``deferred`` holds it until ``flush`` (after a hash slot is free)."""
    return Outbox(
        services().mailer, RequestLinks(services().settings.public_url), deferred=deferred
    )
