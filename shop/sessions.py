"""Server-side sessions in Redis behind an opaque id cookie.

The browser holds only a random id. A visitor who changes nothing gets an id (so pages can
carry a CSRF token, an HMAC of the id) but no Redis record: the record is written on the first
state change. Loading a session and its cart is one Redis round trip (a Lua script), which also
slides the idle timeout, at most once a minute, and enforces the absolute lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from werkzeug.datastructures import CallbackDict

from .redis_client import RedisUnavailable

log = logging.getLogger(__name__)

SESSION_ID_BYTES = 32  # 256 bits from secrets
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def is_well_formed(session_id: str | None) -> bool:
    return bool(session_id) and _SESSION_ID_RE.fullmatch(session_id) is not None


def csrf_token_for(secret_key: str, session_id: str) -> str:
    """A CSRF token bound to the session id; nothing needs storing to check it."""
    digest = hmac.new(secret_key.encode(), b"csrf:" + session_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def csrf_token_valid(secret_key: str, session_id: str | None, token: str | None) -> bool:
    if not session_id or not token or not token.isascii():
        return False
    return hmac.compare_digest(csrf_token_for(secret_key, session_id), token)


# KEYS[1] session hash. ARGV: cart key prefix, session id, now, idle, absolute, refresh_after.
# Returns {session fields, cart fields} as flat lists; an expired session is deleted.
_LOAD_SCRIPT = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {{}, {}} end
local record = {}
for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
local created = tonumber(record['c'] or '0')
local now = tonumber(ARGV[3])
local idle = tonumber(ARGV[4])
local left = created + tonumber(ARGV[5]) - now
local uid = record['uid']
local anon_cart = ARGV[1] .. 's:' .. ARGV[2]
if left <= 0 then
  redis.call('DEL', KEYS[1], anon_cart)
  return {{}, {}}
end
local cart_key = anon_cart
if uid then cart_key = ARGV[1] .. 'u:' .. uid end
local cart = redis.call('HGETALL', cart_key)
local ttl = redis.call('TTL', KEYS[1])
local want = math.min(idle, left)
if ttl < want - tonumber(ARGV[6]) then
  redis.call('EXPIRE', KEYS[1], want)
  if not uid then redis.call('EXPIRE', anon_cart, want) end
end
return {fields, cart}
"""


@dataclass(frozen=True)
class LoadedSession:
    data: dict[str, Any]
    user_id: int | None
    created: float
    cart: dict[int, int]


class SessionStore:
    """Session records in Redis: a hash of ``d`` (JSON data), ``c`` (created) and ``uid``."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        idle_timeout: int,
        absolute_lifetime: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.idle_timeout = idle_timeout
        self.absolute_lifetime = absolute_lifetime
        self.clock = clock
        self.refresh_after = min(60, max(1, idle_timeout // 10))
        self._load = client.register_script(_LOAD_SCRIPT)

    def key(self, session_id: str) -> str:
        return f"{self.prefix}s:{session_id}"

    def cart_prefix(self) -> str:
        return f"{self.prefix}cart:"

    def load(self, session_id: str) -> LoadedSession | None:
        """The session and its cart in one round trip; None if there is no live record."""
        fields, cart = self._load(
            keys=[self.key(session_id)],
            args=[
                self.cart_prefix(),
                session_id,
                int(self.clock()),
                self.idle_timeout,
                self.absolute_lifetime,
                self.refresh_after,
            ],
        )
        if not fields:
            return None
        record = dict(zip(fields[::2], fields[1::2], strict=True))
        uid = record.get("uid")
        return LoadedSession(
            data=json.loads(record.get("d") or "{}"),
            user_id=int(uid) if uid else None,
            created=float(record.get("c") or 0),
            cart={int(k): int(v) for k, v in zip(cart[::2], cart[1::2], strict=True)},
        )

    def save(
        self, session_id: str, data: dict[str, Any], *, user_id: int | None, created: float
    ) -> None:
        left = int(created + self.absolute_lifetime - self.clock())
        ttl = max(1, min(self.idle_timeout, left))
        key = self.key(session_id)
        record = {"d": json.dumps(data, separators=(",", ":")), "c": int(created)}
        pipe = self.client.pipeline(transaction=True)
        if user_id is None:
            pipe.hdel(key, "uid")
        else:
            record["uid"] = user_id
        pipe.hset(key, mapping=record)
        pipe.expire(key, ttl)
        pipe.execute()

    def delete(self, session_id: str) -> None:
        self.client.delete(self.key(session_id), f"{self.cart_prefix()}s:{session_id}")

    def ttl(self, session_id: str) -> int:
        return int(self.client.ttl(self.key(session_id)))


class ShopSession(CallbackDict, SessionMixin):
    """Flask's session, plus what the shop needs to know about its Redis record."""

    def __init__(
        self,
        session_id: str,
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
        self.sid = session_id
        self.user_id = user_id
        self.created = created
        self.cart = cart or {}
        self.stored = stored  # a record exists in Redis
        self.fresh = fresh  # no valid cookie came in: the id is ours to issue
        self.issued = False  # the response must set the cookie
        self.unavailable = unavailable  # Redis could not be reached when loading
        self.modified = False
        self.must_store = False
        self.previous_sid: str | None = None

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
        """Give the session a new id (login, logout); the old record is deleted on save."""
        if self.previous_sid is None:
            self.previous_sid = self.sid
        self.sid = new_session_id()
        self.issued = True
        self.must_store = True

    def log_in(self, user_id: int, email: str) -> None:
        self.rotate()
        self.user_id = user_id
        self["email"] = email

    def log_out(self) -> None:
        self.rotate()
        self.user_id = None
        self.clear()
        self.must_store = False
        self.created = None


class RedisSessionInterface(SessionInterface):
    """Flask session interface over :class:`SessionStore`; keeps nothing in process memory."""

    def __init__(self, store: SessionStore, *, cookie_name: str, secure: bool, max_age: int):
        self.store = store
        self.cookie_name = cookie_name
        self.secure = secure
        self.max_age = max_age

    def open_session(self, app: Flask, request: Request) -> ShopSession:
        session_id = request.cookies.get(self.cookie_name)
        if not is_well_formed(session_id):
            # No cookie, or a tampered one: a fresh id, nothing stored.
            return ShopSession(new_session_id(), fresh=True)
        try:
            loaded = self.store.load(session_id)
        except RedisUnavailable as exc:
            log.warning("session store unavailable, serving without a session: %s", exc)
            return ShopSession(session_id, unavailable=True)
        if loaded is None:
            return ShopSession(session_id)
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
            if session.previous_sid is not None:
                self.store.delete(session.previous_sid)
            if session.must_store or (session.modified and (session.stored or session)):
                if session.created is None:
                    session.created = self.store.clock()
                self.store.save(
                    session.sid, dict(session), user_id=session.user_id, created=session.created
                )
        except RedisUnavailable as exc:
            log.error("could not save session: %s", exc)
        if session.issued:
            response.set_cookie(
                self.cookie_name,
                session.sid,
                max_age=self.max_age,
                httponly=True,
                secure=self.secure,
                samesite="Lax",
                path="/",
            )
            response.vary.add("Cookie")
