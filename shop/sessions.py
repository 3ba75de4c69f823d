"""Server-side sessions in Redis behind an opaque id cookie.

The browser holds only a random id, signed with a timestamp under ``SHOP_SECRET_KEY``: an id the
server did not issue, or one older than the absolute lifetime, is never used (a fresh one is
issued instead). A visitor who changes nothing gets an id (so pages can carry a CSRF token, an
HMAC of the id) but no Redis record: the record is written on the first state change. Redis
knows a session only by a hash of its id. Ending a session (logout, login's rotation, "log out
everywhere") leaves a tombstone, so the id never works again, and a request still in flight
cannot write the record back. Loading a session and its cart is one Redis round trip (a Lua
script), which also slides the idle timeout, at most once a minute, and enforces the absolute
lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis
from flask import Flask, Request, Response
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadSignature, TimestampSigner
from werkzeug.datastructures import CallbackDict

from .redis_client import RedisUnavailable

log = logging.getLogger(__name__)

SESSION_ID_BYTES = 32  # 256 bits from secrets
MAX_USER_AGENT = 200  # characters of User-Agent kept to describe a session to its owner


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


class SessionIds:
    """Issues cookie values (``id.timestamp.signature``) and reads back only those it issued
    within ``max_age`` seconds; itsdangerous does the signing."""

    def __init__(self, secret_key: str, *, max_age: int, clock: Callable[[], float] = time.time):
        self.max_age = max_age
        self.clock = clock
        self._signer = TimestampSigner(
            secret_key, salt="shop.session-id", digest_method=hashlib.sha256
        )
        self._signer.get_timestamp = lambda: int(self.clock())  # type: ignore[method-assign]

    def issue(self, session_id: str) -> str:
        return self._signer.sign(session_id).decode()

    def read(self, cookie: str | None) -> tuple[str, float] | None:
        """The id and when it was issued, or None for anything the server did not issue."""
        if not cookie or len(cookie) > 200 or not cookie.isascii():
            return None
        try:
            value, issued = self._signer.unsign(cookie, max_age=self.max_age, return_timestamp=True)
        except BadSignature:
            return None
        session_id = value.decode()
        if len(session_id) != 43:
            return None
        return session_id, issued.timestamp()


def csrf_token_for(secret_key: str, session_id: str) -> str:
    """A CSRF token bound to the session id; nothing needs storing to check it."""
    digest = hmac.new(secret_key.encode(), b"csrf:" + session_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def csrf_token_valid(secret_key: str, session_id: str | None, token: str | None) -> bool:
    if not session_id or not token or not token.isascii():
        return False
    return hmac.compare_digest(csrf_token_for(secret_key, session_id), token)


# KEYS: record, tombstone. ARGV: cart key prefix, ref, now, idle, absolute, refresh_after,
# user index prefix. Returns {record fields, cart fields, ended}: an expired record is deleted
# and tombstoned; ``ended`` is 1 when the id was ended (logout, rotation, "end session").
_LOAD_SCRIPT = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {{}, {}, redis.call('EXISTS', KEYS[2])} end
local record = {}
for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
local now = tonumber(ARGV[3])
local idle = tonumber(ARGV[4])
local left = tonumber(record['c'] or '0') + tonumber(ARGV[5]) - now
local uid = record['uid']
local anon_cart = ARGV[1] .. 's:' .. ARGV[2]
if left <= 0 then
  redis.call('DEL', KEYS[1], anon_cart)
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[5])
  return {{}, {}, 1}
end
local cart_key = anon_cart
if uid then cart_key = ARGV[1] .. 'u:' .. uid end
local cart = redis.call('HGETALL', cart_key)
local ttl = redis.call('TTL', KEYS[1])
local want = math.min(idle, left)
if ttl < want - tonumber(ARGV[6]) then
  redis.call('EXPIRE', KEYS[1], want)
  redis.call('HSET', KEYS[1], 'seen', now)
  if uid then
    local index = ARGV[7] .. uid
    redis.call('ZADD', index, now + want, ARGV[2])
    redis.call('EXPIRE', index, ARGV[5])
  else
    redis.call('EXPIRE', anon_cart, want)
  end
end
return {fields, cart, 0}
"""

# KEYS: record, tombstone, user index (or ''). ARGV: mode ('new' or 'existing'), data, created,
# uid (or ''), ttl, ref, now, absolute, user agent.
# 'existing' writes only while the record still exists, so a request that loaded the session
# before a logout cannot bring it back; 'new' never writes an id that was ended.
_SAVE_SCRIPT = """
if ARGV[1] == 'existing' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
else
  redis.call('HSET', KEYS[1], 'ua', ARGV[9], 'seen', ARGV[7])
end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'c', ARGV[3])
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'uid')
else
  redis.call('HSET', KEYS[1], 'uid', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
if KEYS[3] ~= '' then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[7]) + tonumber(ARGV[5]), ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
return 1
"""

# KEYS: user index (or ''). ARGV: record prefix, cart prefix, absolute, then refs to end.
# Deletes each record and its visitor cart and leaves a tombstone, so the id never works again.
_END_SCRIPT = """
local ended = 0
for i = 4, #ARGV do
  local ref = ARGV[i]
  ended = ended + redis.call('DEL', ARGV[1] .. ref)
  redis.call('DEL', ARGV[2] .. 's:' .. ref)
  redis.call('SET', ARGV[1] .. ref .. ':ended', '1', 'EX', ARGV[3])
  if KEYS[1] ~= '' then redis.call('ZREM', KEYS[1], ref) end
end
return ended
"""


@dataclass(frozen=True)
class LoadedSession:
    data: dict[str, Any]
    user_id: int | None
    created: float
    cart: dict[int, int]


@dataclass(frozen=True)
class SessionSummary:
    """One of an account's live sessions, as its owner sees it on "your sessions"."""

    ref: str
    created: float
    last_seen: float
    user_agent: str


def session_ref(session_id: str) -> str:
    """The name a session goes by in Redis: a hash of its id, so that reading Redis (a backup,
    a replica, ``MONITOR``) yields no id that could be sent as a cookie."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class SessionStore:
    """Session records in Redis, keyed by :func:`session_ref`: a hash of ``d`` (JSON data),
    ``c`` (created), ``uid``, ``ua`` (user agent) and ``seen``; a tombstone for each ended id;
    and, per account, a sorted set of its sessions' refs (scored by when each expires)."""

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
        self._save = client.register_script(_SAVE_SCRIPT)
        self._end = client.register_script(_END_SCRIPT)

    def key(self, session_id: str) -> str:
        return self.record_prefix() + session_ref(session_id)

    def record_prefix(self) -> str:
        return f"{self.prefix}s:"

    def tombstone_key(self, ref: str) -> str:
        return f"{self.record_prefix()}{ref}:ended"

    def user_index_prefix(self) -> str:
        return f"{self.prefix}us:"

    def user_index_key(self, user_id: int) -> str:
        return f"{self.user_index_prefix()}{user_id}"

    def cart_prefix(self) -> str:
        return f"{self.prefix}cart:"

    def load(self, session_id: str) -> LoadedSession | Literal["ended"] | None:
        """The session and its cart in one round trip; None if the id has no record (yet),
        ``"ended"`` if it was ended and must not be used again."""
        ref = session_ref(session_id)
        fields, cart, ended = self._load(
            keys=[self.record_prefix() + ref, self.tombstone_key(ref)],
            args=[
                self.cart_prefix(),
                ref,
                int(self.clock()),
                self.idle_timeout,
                self.absolute_lifetime,
                self.refresh_after,
                self.user_index_prefix(),
            ],
        )
        if int(ended):
            return "ended"
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
        self,
        session_id: str,
        data: dict[str, Any],
        *,
        user_id: int | None,
        created: float,
        existing: bool = False,
        user_agent: str = "",
    ) -> bool:
        """Write the record; False if it may not be written. ``existing``: the request loaded
        a record, and only that record may be updated (if a logout deleted it meanwhile,
        nothing is written). Otherwise the id must not have been ended."""
        now = self.clock()
        left = int(created + self.absolute_lifetime - now)
        ttl = max(1, min(self.idle_timeout, left))
        ref = session_ref(session_id)
        written = self._save(
            keys=[
                self.record_prefix() + ref,
                self.tombstone_key(ref),
                self.user_index_key(user_id) if user_id is not None else "",
            ],
            args=[
                "existing" if existing else "new",
                json.dumps(data, separators=(",", ":")),
                int(created),
                "" if user_id is None else user_id,
                ttl,
                ref,
                int(now),
                self.absolute_lifetime,
                user_agent[:MAX_USER_AGENT],
            ],
        )
        return bool(written)

    def delete(self, session_id: str, *, user_id: int | None = None) -> None:
        """End a session: its record and visitor cart go, and its id never works again."""
        self._end_refs([session_ref(session_id)], user_id)

    def _end_refs(self, refs: list[str], user_id: int | None) -> int:
        if not refs:
            return 0
        index = self.user_index_key(user_id) if user_id is not None else ""
        return int(
            self._end(
                keys=[index],
                args=[self.record_prefix(), self.cart_prefix(), self.absolute_lifetime, *refs],
            )
        )

    def user_sessions(self, user_id: int) -> list[SessionSummary]:
        """The account's live sessions, most recently seen first."""
        index = self.user_index_key(user_id)
        now = int(self.clock())
        pipe = self.client.pipeline(transaction=False)
        pipe.zremrangebyscore(index, "-inf", now)
        pipe.zrange(index, 0, -1)
        refs = pipe.execute()[1]
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            pipe.hmget(self.record_prefix() + ref, "uid", "c", "seen", "ua")
        found = []
        for ref, (uid, created, seen, agent) in zip(refs, pipe.execute(), strict=True):
            if uid != str(user_id):
                continue  # expired since, or not this account's
            found.append(SessionSummary(ref, float(created or 0), float(seen or 0), agent or ""))
        return sorted(found, key=lambda s: s.last_seen, reverse=True)

    def end_user_session(self, user_id: int, ref: str) -> bool:
        """End one of the account's sessions; False if it has no such live session."""
        if self.client.zscore(self.user_index_key(user_id), ref) is None:
            return False
        return self._end_refs([ref], user_id) > 0

    def end_user_sessions(self, user_id: int, *, keep: str | None = None) -> int:
        """End every session of the account ("log out everywhere", a password change or reset)
        except ``keep`` (the current session's id); returns how many were ended."""
        kept = session_ref(keep) if keep else None
        refs = [
            ref for ref in self.client.zrange(self.user_index_key(user_id), 0, -1) if ref != kept
        ]
        return self._end_refs(refs, user_id)

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
        self.stored = stored  # a record existed in Redis when the request began
        self.fresh = fresh  # no usable cookie came in: the id is ours to issue
        self.issued = False  # the response must set the cookie
        self.unavailable = unavailable  # Redis could not be reached when loading
        self.modified = False
        self.must_store = False
        # Ids this request ended (login and logout rotate), with the account each belonged to.
        self.ended: list[tuple[str, int | None]] = []

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
        issued = self.ids.read(request.cookies.get(self.cookie_name))
        if issued is None:
            # No cookie, or one we did not issue: a fresh id, nothing stored.
            return ShopSession(new_session_id(), fresh=True)
        session_id, issued_at = issued
        try:
            loaded = self.store.load(session_id)
        except RedisUnavailable as exc:
            log.warning("session store unavailable, serving without a session: %s", exc)
            return ShopSession(session_id, unavailable=True)
        if loaded == "ended":
            return ShopSession(new_session_id(), fresh=True)
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
            response.cache_control.no_store = True
            response.cache_control.private = True


def _request_user_agent() -> str:
    from flask import request

    return request.headers.get("User-Agent", "")
