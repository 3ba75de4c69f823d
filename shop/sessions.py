"""Session records in Redis, keyed by a hash of the session id.

A visitor who changes nothing has no record: it is written on the first state change. Ending a
session (logout, login's rotation, "log out everywhere", the absolute lifetime) leaves a
tombstone, so the id never works again, and a request still in flight cannot write the record
back. Loading a session and its cart is one Redis round trip (a Lua script), which also slides
the idle timeout, at most once a minute, and enforces the absolute lifetime; a signed-in
session's cart is the account's, on the account's slot, read in a second. Each account has a
sorted set of its sessions, for "your sessions" and "log out everywhere".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from .cart import decode_line
from .session_ids import session_ref

MAX_USER_AGENT = 200  # characters of User-Agent kept to describe a session to its owner

# Key layout (hash tags, so a script's keys share a Redis Cluster slot): a session's record,
# tombstone and visitor cart begin with ``{s:<ref>}``, an account's cart and session index with
# ``{u:<id>}`` (:func:`session_tag`, :func:`account_tag`). A script touches one owner's keys.

# KEYS: record, tombstone, visitor cart. ARGV: now, idle, absolute, refresh_after.
# Returns {record fields, visitor cart (when not signed in), ended, new TTL (0: unchanged)}:
# the caller reads a signed-in session's cart, and slides its account's index, on the
# account's slot.
_LOAD_SCRIPT = """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {{}, {}, redis.call('EXISTS', KEYS[2]), 0} end
local record = {}
for i = 1, #fields, 2 do record[fields[i]] = fields[i + 1] end
local now = tonumber(ARGV[1])
local idle = tonumber(ARGV[2])
local left = tonumber(record['c'] or '0') + tonumber(ARGV[3]) - now
local uid = record['uid']
if left <= 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
  return {{}, {}, 1, 0}
end
local cart = {}
if not uid then cart = redis.call('HGETALL', KEYS[3]) end
local ttl = redis.call('TTL', KEYS[1])
local want = math.min(idle, left)
if ttl < want - tonumber(ARGV[4]) then
  redis.call('EXPIRE', KEYS[1], want)
  redis.call('HSET', KEYS[1], 'seen', now)
  if not uid then redis.call('EXPIRE', KEYS[3], want) end
  return {fields, cart, 0, want}
end
return {fields, cart, 0, 0}
"""

# KEYS: record, tombstone. ARGV: mode ('new' or 'existing'), data, created, uid (or ''), ttl,
# now, user agent.
# 'existing' writes only while the record still exists, so a request that loaded the session
# before a logout cannot bring it back; 'new' never writes an id that was ended.
_SAVE_SCRIPT = """
if ARGV[1] == 'existing' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
elseif redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
else
  redis.call('HSET', KEYS[1], 'ua', ARGV[7], 'seen', ARGV[6])
end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'c', ARGV[3])
if ARGV[4] == '' then
  redis.call('HDEL', KEYS[1], 'uid')
else
  redis.call('HSET', KEYS[1], 'uid', ARGV[4])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: record, visitor cart, tombstone (one session's). ARGV: absolute.
# Deletes the record and its visitor cart and leaves a tombstone, so the id never works again.
_END_SCRIPT = """
local ended = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
return ended
"""


def session_tag(ref: str) -> str:
    """The hash tag of a session's keys (record, tombstone, visitor cart)."""
    return "{s:" + ref + "}"


def account_tag(user_id: int | str) -> str:
    """The hash tag of an account's keys (its cart, its index of sessions)."""
    return "{u:" + str(user_id) + "}"


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
        return self.record_key(session_ref(session_id))

    def record_key(self, ref: str) -> str:
        return f"{self.prefix}{session_tag(ref)}"

    def tombstone_key(self, ref: str) -> str:
        return f"{self.record_key(ref)}:ended"

    def visitor_cart_key(self, ref: str) -> str:
        return f"{self.record_key(ref)}:cart"  # = CartStore.key(CartOwner.session(ref))

    def user_index_key(self, user_id: int) -> str:
        return f"{self.prefix}{account_tag(user_id)}:sessions"

    def account_cart_key(self, user_id: int) -> str:
        return f"{self.prefix}{account_tag(user_id)}:cart"  # = CartStore.key(CartOwner.account)

    def load(self, session_id: str) -> LoadedSession | Literal["ended"] | None:
        """The session and its cart; None if the id has no record (yet), ``"ended"`` if it
        was ended and must not be used again. One round trip for a visitor; a signed-in
        session's cart lives on its account's slot, read by a second one."""
        ref = session_ref(session_id)
        fields, cart, ended, slid = self._load(
            keys=[self.record_key(ref), self.tombstone_key(ref), self.visitor_cart_key(ref)],
            args=[
                int(self.clock()),
                self.idle_timeout,
                self.absolute_lifetime,
                self.refresh_after,
            ],
        )
        if int(ended):
            return "ended"
        if not fields:
            return None
        record = dict(zip(fields[::2], fields[1::2], strict=True))
        uid = record.get("uid")
        if uid:
            cart = self._account_cart(int(uid), ref, int(slid))
        return LoadedSession(
            data=json.loads(record.get("d") or "{}"),
            user_id=int(uid) if uid else None,
            created=float(record.get("c") or 0),
            cart={
                int(k): decode_line(v).quantity for k, v in zip(cart[::2], cart[1::2], strict=True)
            },
        )

    def _account_cart(self, user_id: int, ref: str, slid: int) -> list[str]:
        """The account's cart as a flat list; when the session's idle timeout just slid,
        its entry in the account's index slides too (same slot: one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.account_cart_key(user_id))
        if slid:
            index = self.user_index_key(user_id)
            pipe.zadd(index, {ref: int(self.clock()) + slid})
            pipe.expire(index, self.absolute_lifetime)
        lines = cast(dict[str, str], pipe.execute()[0])
        return [item for pair in lines.items() for item in pair]

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
        if user_id is not None:
            # The account's index first (its own slot): a session written is always listed, so
            # "log out everywhere" finds it; a listed ref whose write is refused ends nothing.
            index = self.user_index_key(user_id)
            pipe = self.client.pipeline(transaction=False)
            pipe.zadd(index, {ref: int(now) + ttl})
            pipe.expire(index, self.absolute_lifetime)
            pipe.execute()
        written = self._save(
            keys=[self.record_key(ref), self.tombstone_key(ref)],
            args=[
                "existing" if existing else "new",
                json.dumps(data, separators=(",", ":")),
                int(created),
                "" if user_id is None else user_id,
                ttl,
                int(now),
                user_agent[:MAX_USER_AGENT],
            ],
        )
        return bool(written)

    def delete(self, session_id: str, *, user_id: int | None = None) -> None:
        """End a session: its record and visitor cart go, and its id never works again."""
        self._end_refs([session_ref(session_id)], user_id)

    def _end_refs(self, refs: list[str], user_id: int | None) -> int:
        """End each session on its own slot (a script each), then drop them from the index."""
        ended = 0
        for ref in refs:
            keys = [self.record_key(ref), self.visitor_cart_key(ref), self.tombstone_key(ref)]
            ended += int(self._end(keys=keys, args=[self.absolute_lifetime]))
        if refs and user_id is not None:
            self.client.zrem(self.user_index_key(user_id), *refs)
        return ended

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
            pipe.hmget(self.record_key(ref), ["uid", "c", "seen", "ua"])
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
        indexed = cast(list[str], self.client.zrange(self.user_index_key(user_id), 0, -1))
        refs = [ref for ref in indexed if ref != kept]
        return self._end_refs(refs, user_id)

    def ttl(self, session_id: str) -> int:
        return cast(int, self.client.ttl(self.key(session_id)))
