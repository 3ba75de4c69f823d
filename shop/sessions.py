"""Session records in Redis, keyed by a hash of the session id.

A visitor who changes nothing has no record: it is written on the first state change. Ending a
session (logout, login's rotation, "log out everywhere", the absolute lifetime) leaves a
tombstone, so the id never works again, and a request still in flight cannot write the record
back. Loading a session and its cart is one Redis round trip (a Lua script), which also slides
the idle timeout, at most once a minute, and enforces the absolute lifetime. Each account has a
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
            cart={
                int(k): decode_line(v).quantity for k, v in zip(cart[::2], cart[1::2], strict=True)
            },
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
            pipe.hmget(self.record_prefix() + ref, ["uid", "c", "seen", "ua"])
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
