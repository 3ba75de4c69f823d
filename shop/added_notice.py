"""What "Add to cart" tells the page it redirects to: which product and how many it added,
carried on the redirect as ``?added=<product>.<quantity>.<time>.<signature>``.

A query parameter rather than a one-time message in the session: showing it then costs no
Redis write (a flash must be deleted as it is shown, on a page view that otherwise writes
nothing), and the add itself has already written the session. The signature is an HMAC under
the secret key, bound to the session id, so a link someone else sends cannot make your page
claim that something was added to your cart; the time stamp lets a reload or a bookmark show
it for ``ADDED_NOTICE_SECONDS`` only. The page reads the product's name from the catalogue
cache, never from the link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

ADDED_NOTICE_SECONDS = 600
CLOCK_SKEW_SECONDS = 60  # another instance's clock may be a little ahead of this one's
_MAX_TOKEN = 80


@dataclass(frozen=True)
class Added:
    product_id: int
    quantity: int


def added_token(secret_key: str, session_id: str, added: Added, *, now: float) -> str:
    body = f"{added.product_id}.{added.quantity}.{int(now)}"
    return f"{body}.{_signature(secret_key, session_id, body)}"


def read_added(
    secret_key: str,
    session_id: str,
    token: str | None,
    *,
    now: float,
    max_age: int = ADDED_NOTICE_SECONDS,
) -> Added | None:
    """What the token says was added, if this session's add issued it within ``max_age``
    seconds; None for anything else (it is a courtesy message, never an error)."""
    if not token or len(token) > _MAX_TOKEN or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 4 or not all(part.isdigit() for part in parts[:3]):
        return None
    body = ".".join(parts[:3])
    if not hmac.compare_digest(parts[3], _signature(secret_key, session_id, body)):
        return None
    product_id, quantity, issued = (int(part) for part in parts[:3])
    if not -CLOCK_SKEW_SECONDS <= now - issued <= max_age or min(product_id, quantity) < 1:
        return None
    return Added(product_id, quantity)


def _signature(secret_key: str, session_id: str, body: str) -> str:
    message = f"added:{session_id}:{body}".encode()
    digest = hmac.new(secret_key.encode(), message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
