"""Session ids: random, signed by the server that issued them, known to Redis only by a hash.

The cookie holds the id signed with its issue time (itsdangerous, under ``SHOP_SECRET_KEY``), so
an id the server did not issue, or one older than the absolute lifetime, is never used. The CSRF
token is an HMAC of the id, so it needs no storage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from itsdangerous import BadSignature, TimestampSigner, want_bytes

SESSION_ID_BYTES = 32  # 256 bits from secrets


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


class _Signer(TimestampSigner):
    """itsdangerous's signer, deriving its key from the secret once rather than for every
    cookie it reads (an HMAC per request on every page a visitor with a session opens)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keys: dict[bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        wanted = None if secret_key is None else want_bytes(secret_key)
        key = self._keys.get(wanted)
        if key is None:
            key = self._keys[wanted] = super().derive_key(secret_key)
        return key


class SessionIds:
    """Issues cookie values (``id.timestamp.signature``) and reads back only those it issued
    within ``max_age`` seconds; itsdangerous does the signing."""

    def __init__(self, secret_key: str, *, max_age: int, clock: Callable[[], float] = time.time):
        self.max_age = max_age
        self.clock = clock
        self._signer = _Signer(secret_key, salt="shop.session-id", digest_method=hashlib.sha256)
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


def masked_csrf_token(secret_key: str, session_id: str) -> str:
    """The token as a page carries it: XORed with fresh random bytes that travel with it, so
    no two responses carry the same bytes (a compressed page cannot leak it, BREACH-style)."""
    raw = base64.urlsafe_b64decode(csrf_token_for(secret_key, session_id) + "=")
    mask = secrets.token_bytes(len(raw))
    masked = mask + bytes(a ^ b for a, b in zip(mask, raw, strict=True))
    return base64.urlsafe_b64encode(masked).rstrip(b"=").decode()


def csrf_token_valid(secret_key: str, session_id: str | None, token: str | None) -> bool:
    """Either form of the session's token: masked (pages, the API) or plain."""
    if not session_id or not token or not token.isascii() or len(token) > 100:
        return False
    expected = csrf_token_for(secret_key, session_id)
    if len(token) == 86:  # 64 bytes: a mask and the masked token
        try:
            masked = base64.urlsafe_b64decode(token + "==")
        except ValueError:
            return False
        mask, hidden = masked[:32], masked[32:]
        unmasked = base64.urlsafe_b64encode(bytes(a ^ b for a, b in zip(mask, hidden, strict=True)))
        token = unmasked.rstrip(b"=").decode()
    return hmac.compare_digest(expected, token)


def session_ref(session_id: str) -> str:
    """The name a session goes by in Redis: a hash of its id, so that reading Redis (a backup,
    a replica, ``MONITOR``) yields no id that could be sent as a cookie."""
    digest = hashlib.sha256(session_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
