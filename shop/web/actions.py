"""The shopper's actions, shared by the pages and the JSON API so both follow one set of rules."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import request

from ..account_changes import (
    change_password,
    request_email_change,
    request_password_reset,
    reset_password,
)
from ..accounts import User, authenticate, register
from ..cart import CartOwner, PricedCart, price_cart
from ..errors import InvalidCredentials, ReauthRequired, WrongPassword
from ..order_records import claim_guest_orders
from ..redis_client import RedisUnavailable
from .context import (
    account_tokens,
    cart_owner,
    outbox,
    owner_key,
    require_login,
    require_session_store,
    services,
    shop_session,
)

log = logging.getLogger(__name__)


def client_address() -> str | None:
    """The client's address: the peer, or what the trusted proxies said (SHOP_TRUSTED_PROXIES)."""
    return request.remote_addr


def _count_cart_write(*, may_create: bool = True) -> None:
    """Cart writes per address, and carts a first write creates: a client cannot mint
    thousands of carted sessions, each kept for the idle timeout."""
    throttle = services().throttle
    throttle.hit("cart", client_address())
    if may_create and not shop_session().stored:
        throttle.hit("new_cart", client_address())


def search_admission(q: str | None) -> Callable[[], None] | None:
    """For a search: counts it against the client's search rule, asked only when the page
    misses the cache (a search someone made a moment ago costs nothing to repeat)."""
    if not (q or "").strip():
        return None

    def admit() -> None:
        # Redis down: the catalogue is read from the database, uncounted.
        with contextlib.suppress(*RedisUnavailable):
            services().throttle.hit("search", client_address())

    return admit


def current_cart() -> PricedCart:
    current = require_session_store()
    lines = services().carts.lines(cart_owner(current))
    return price_cart(lines, services().catalogue.products(list(lines)))


def add_to_cart(product_id: int, quantity: int) -> int:
    services().carts.check_quantity(quantity, allow_zero=False)
    current = require_session_store()
    _count_cart_write()
    product = services().catalogue.product(product_id)
    new_quantity = services().carts.add(
        cart_owner(current),
        product_id,
        quantity,
        stock=product["stock"],
        price_cents=product["price_cents"],
    )
    current.ensure_stored()
    return new_quantity


def set_cart_quantity(product_id: int, quantity: int) -> None:
    services().carts.check_quantity(quantity, allow_zero=True)
    current = require_session_store()
    _count_cart_write()
    product = services().catalogue.product(product_id) if quantity else None
    services().carts.set(
        cart_owner(current),
        product_id,
        quantity,
        stock=product["stock"] if product else 0,
        price_cents=product["price_cents"] if product else 0,
    )
    current.ensure_stored()


def confirm_prices(prices: dict[int, int]) -> None:
    """The shopper accepts the prices shown (cart page, API): its lines take them. Changes
    nothing for a visitor with no cart yet (no Redis write for browsing)."""
    current = require_session_store()
    if not current.stored and current.user_id is None:
        return
    _count_cart_write(may_create=False)
    services().carts.confirm_prices(cart_owner(current), prices)


def remove_from_cart(product_id: int) -> None:
    current = require_session_store()
    _count_cart_write(may_create=False)
    services().carts.remove(cart_owner(current), product_id)


def check_password(email: object, password: object) -> User:
    """Check the rate rules and back-off before the (expensive) hash, and count a failure
    after it: the one way a password is checked, for logging in and for confirming it."""
    throttle, address = services().throttle, client_address()
    throttle.hit("login", address)
    account = email if isinstance(email, str) else ""
    throttle.check_login(account, address)
    with services().hash_slots.hold():
        try:
            user = authenticate(services().engines.primary, email, password)
        except InvalidCredentials:
            throttle.login_failed(account, address)
            raise
    throttle.login_succeeded(account)
    return user


def log_in_with_password(email: object, password: object) -> User:
    require_session_store()
    user = check_password(email, password)
    sign_in(user)
    return user


def confirm_password(password: object) -> None:
    """The signed-in shopper enters their password again (a sensitive change)."""
    current = require_session_store()
    require_login()
    try:
        check_password(current.get("email"), password)
    except InvalidCredentials:
        raise InvalidCredentials("That is not your password.", field="password") from None
    current.confirm_password(services().sessions.clock())


def require_recent_password() -> None:
    """Refuse until the password has been entered within ``SHOP_REAUTH_SECONDS``."""
    current = shop_session()
    age = current.password_age(services().sessions.clock())
    if age > services().settings.reauth_seconds:
        raise ReauthRequired(
            "For your security, enter your password again to ship to a new address.",
            field="password",
        )


def sign_up(email: object, password: object) -> str:
    """Register: the same answer (the address) whether or not it has an account, and no
    sign-in. Counted per address; the hash runs in a slot, the mail after it."""
    services().throttle.hit("signup", client_address())
    box = outbox(deferred=True)
    with services().hash_slots.hold():
        address = register(services().engines.primary, account_tokens(), box, email, password)
    box.flush()
    return address


@contextmanager
def _password_attempt(email: str) -> Iterator[None]:
    """A password asked again before a change counts as a login attempt: the same rules and
    back-off before the hash, a failure counted after it."""
    throttle, address = services().throttle, client_address()
    throttle.hit("login", address)
    throttle.check_login(email, address)
    try:
        with services().hash_slots.hold():
            yield
    except WrongPassword:
        throttle.login_failed(email, address)
        raise


def change_own_password(current_password: object, new_password: object) -> tuple[User, int]:
    """Change the signed-in account's password and end its other sessions (ASVS 3.3.3); this
    one stays signed in. Returns the account and how many sessions ended."""
    user_id = require_login()  # the session store too: sessions must be ended after
    current = shop_session()
    box = outbox(deferred=True)
    with _password_attempt(current.get("email") or ""):
        user = change_password(
            services().engines.primary,
            account_tokens(),
            box,
            user_id,
            current_password,
            new_password,
        )
    ended = services().sessions.end_user_sessions(user.id, keep=current.sid)
    current.confirm_password(services().sessions.clock())
    box.flush()
    return user, ended


def ask_password_reset(email: object) -> str:
    """Mail a reset link (or a "no account here" note): the same answer for any address."""
    services().throttle.hit("reset", client_address())
    return request_password_reset(services().engines.primary, account_tokens(), outbox(), email)


def reset_with_link(token: object, new_password: object) -> tuple[User, int]:
    """Set a new password through a mailed link and end every session of the account, this
    browser's too if it was one. Refused whole while sessions cannot be ended."""
    current = require_session_store()
    box = outbox(deferred=True)
    with services().hash_slots.hold():
        user = reset_password(
            services().engines.primary, account_tokens(), box, token, new_password
        )
    if current.user_id == user.id:
        current.log_out()
    ended = services().sessions.end_user_sessions(user.id)
    services().throttle.login_succeeded(user.email)  # the owner proved the address: no back-off
    box.flush()
    return user, ended


def ask_email_change(password: object, new_email: object) -> str:
    """After the password, mail the new address a confirmation link."""
    user_id = require_login()
    box = outbox(deferred=True)
    with _password_attempt(shop_session().get("email") or ""):
        address = request_email_change(
            services().engines.primary, account_tokens(), box, user_id, password, new_email
        )
    box.flush()
    return address


def sign_in(user: User) -> None:
    """Log in: the visitor's cart joins the account's (capped by stock), and the id rotates."""
    current = require_session_store()
    carts = services().carts
    visitor = CartOwner.session(current.ref)
    quantities = carts.get(visitor)
    if quantities:
        stock = {
            pid: product["stock"]
            for pid, product in services().catalogue.products(list(quantities)).items()
        }
        carts.merge(
            visitor, CartOwner.account(user.id), {pid: stock.get(pid, 0) for pid in quantities}
        )
    # Orders this browser placed as a guest become the account's.
    claim_guest_orders(services().engines.primary, owner_key=owner_key(current), user_id=user.id)
    current.log_in(user.id, user.email, now=services().sessions.clock())
    current["verified"] = user.verified
    if user.role != "customer":
        current["staff"] = True  # shows the back-office link; /admin asks the database


def note_account(user: User) -> None:
    """Keep what the session shows of its account (address, verified) up to date after a
    change made in this request; other sessions of the account catch up at their next login
    or account page."""
    current = shop_session()
    if current.unavailable or current.user_id != user.id:
        return
    if current.get("email") != user.email or current.get("verified") != user.verified:
        current["email"] = user.email
        current["verified"] = user.verified


def sign_out() -> None:
    current = require_session_store()
    current.log_out()
