"""Flask's session interface over the Redis session store: the browser holds one signed,
opaque id cookie, and this process keeps nothing about the visitor."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Request, Response, request
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from ..metrics import SESSIONS_CREATED
from ..redis_client import RedisUnavailable
from ..session_ids import SessionIds, new_session_id, session_ref
from ..sessions import SessionStore

log = logging.getLogger(__name__)

# Where a layer in front of Flask that has already loaded this request's session leaves it
# (the cookie's value and what the store answered), so it is not loaded twice (WarmPages).
SESSION_LOADED_KEY = "shop.session_loaded"


class ShopSession(CallbackDict, SessionMixin):
    """Flask's session, plus what the shop needs to know about its Redis record."""

    def __init__(
        self,
        session_id: str | None,
        *,
        data: dict[str, Any] | None = None,
        user_id: int | None = None,
        created: float | None = None,
        cart: dict[int, int] | None = None,
        stored: bool = False,
        fresh: bool = False,
        unavailable: bool = False,
    ) -> None:
        def on_update(_self: CallbackDict) -> None:
            self.modified = True

        super().__init__(data or {}, on_update)
        self._sid = session_id
        self.user_id = user_id
        self.created = created
        self.cart = cart or {}
        self.stored = stored  # a record existed in Redis when the request began
        self.fresh = fresh  # no usable cookie came in: the id is ours to issue
        self.issued = False  # the response must set the cookie
        self.unavailable = unavailable  # Redis could not be reached when loading
        self.modified = False
        self.must_store = False
        # Ids this request ended (login and logout rotate), with the account each belonged to.
        self.ended: list[tuple[str, int | None]] = []

    @property
    def sid(self) -> str:
        """The id; a fresh visitor's is drawn when something first needs it (most anonymous
        pages never do)."""
        if self._sid is None:
            self._sid = new_session_id()
        return self._sid

    @sid.setter
    def sid(self, value: str) -> None:
        self._sid = value

    @property
    def ref(self) -> str:
        """The session's name in Redis (a hash of the id): what a visitor's cart is keyed by."""
        return session_ref(self.sid)

    def use_id(self) -> str:
        """The id, to be sent in the cookie if it is new (a page with a form needs it for its
        CSRF token); a response that never uses it, such as /healthz, sets no cookie."""
        if self.fresh:
            self.issued = True
        return self.sid

    def ensure_stored(self) -> None:
        """Ask for a Redis record at the end of this request (the first state change)."""
        self.use_id()
        self.must_store = True

    def rotate(self) -> None:
        """Give the session a new id (login, logout); the old one is ended on save."""
        if not self.fresh:  # the id went out in a cookie: it must never work again
            self.ended.append((self.sid, self.user_id))
        self.sid = new_session_id()
        self.stored = False
        self.fresh = False
        self.issued = True
        self.must_store = True
        self.created = None

    def log_in(self, user_id: int, email: str, *, now: float) -> None:
        self.rotate()
        self.user_id = user_id
        self["email"] = email
        self.confirm_password(now)

    def confirm_password(self, now: float) -> None:
        """The password was just entered: sensitive changes are allowed for a while."""
        self["auth"] = int(now)

    def password_age(self, now: float) -> float:
        """Seconds since the password was last entered in this session (inf if never)."""
        confirmed = self.get("auth")
        return now - confirmed if isinstance(confirmed, int) else float("inf")

    def log_out(self) -> None:
        self.rotate()
        self.user_id = None
        self.clear()
        self.must_store = False


class RedisSessionInterface(SessionInterface):
    """Flask session interface over :class:`SessionStore`; keeps nothing in process memory."""

    def __init__(
        self,
        store: SessionStore,
        ids: SessionIds,
        *,
        cookie_name: str,
        secure: bool,
        max_age: int,
    ):
        self.store = store
        self.ids = ids
        # A __Host- cookie is only ever set by this host, over HTTPS, for the whole site: a
        # sibling subdomain or a plain-HTTP attacker cannot plant one.
        self.cookie_name = f"__Host-{cookie_name}" if secure else cookie_name
        self.secure = secure
        self.max_age = max_age

    def open_session(self, app: Flask, request: Request) -> ShopSession:
        value = request.cookies.get(self.cookie_name)
        issued = self.ids.read(value)
        if issued is None:
            # No cookie, or one we did not issue: a fresh id (drawn when used), nothing stored.
            return ShopSession(None, fresh=True)
        session_id, issued_at = issued
        preloaded = request.environ.get(SESSION_LOADED_KEY)
        try:
            if preloaded is not None and preloaded[0] == value:
                loaded = preloaded[1]
            else:
                loaded = self.store.load(session_id)
        except RedisUnavailable as exc:
            log.warning("session store unavailable, serving without a session: %s", exc)
            return ShopSession(session_id, unavailable=True)
        if loaded == "ended":
            return ShopSession(None, fresh=True)
        if loaded is None:
            return ShopSession(session_id, created=issued_at)
        return ShopSession(
            session_id,
            data=loaded.data,
            user_id=loaded.user_id,
            created=loaded.created,
            cart=loaded.cart,
            stored=True,
        )

    def save_session(self, app: Flask, session: ShopSession, response: Response) -> None:  # type: ignore[override]
        if session.unavailable:
            return
        try:
            for ended_id, user_id in session.ended:
                self.store.delete(ended_id, user_id=user_id)
            if session.must_store or (session.modified and (session.stored or session)):
                if session.created is None:
                    session.created = self.store.clock()
                self.store.save(
                    session.sid,
                    dict(session),
                    user_id=session.user_id,
                    created=session.created,
                    existing=session.stored,
                    user_agent=_request_user_agent(),
                )
                if not session.stored:
                    SESSIONS_CREATED.inc()
        except RedisUnavailable as exc:
            log.error("could not save session: %s", exc)
        if session.issued:
            response.set_cookie(
                self.cookie_name,
                self.ids.issue(session.sid),
                max_age=self.max_age,
                httponly=True,
                secure=self.secure,
                samesite="Lax",
                path="/",
            )
            response.vary.add("Cookie")
            # A response that hands out an id must never be stored and replayed to another.
            response.cache_control.public = False  # even a page that was the same for all
            response.cache_control.no_store = True
            response.cache_control.private = True


def _request_user_agent() -> str:
    return request.headers.get("User-Agent", "")
