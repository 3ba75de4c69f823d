"""Single-use, time-limited links that need no storage (as Django's
``PasswordResetTokenGenerator``): a token is the user id, the time it was made, optional data
(a new address) and an HMAC under ``SHOP_SECRET_KEY`` over those, the token's purpose and the
account's *state* at that time. Using the token changes the state (a new password hash, a
verified address, a new email), so the same token stops matching by itself; changing the secret
key ends every outstanding token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_TOKEN_RE = re.compile(
    r"^([0-9a-z]{1,12})\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{0,400})\.([A-Za-z0-9_-]{43})$"
)


CLOCK_SKEW = 60  # seconds an instance's clock may be ahead of another's


@dataclass(frozen=True)
class Claim:
    """What a token says before it is checked against the account."""

    user_id: int
    issued: int
    data: str
    signature: str


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text


class Tokens:
    """Makes and checks tokens for one secret key. ``lifetimes`` gives each purpose its
    seconds of validity; ``clock`` is where expiry reads the time."""

    def __init__(
        self,
        secret_key: str,
        lifetimes: Mapping[str, int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = hashlib.sha256(b"shop.tokens\x00" + secret_key.encode()).digest()
        self.lifetimes = dict(lifetimes)
        self.clock = clock

    def _signature(self, purpose: str, user_id: int, issued: int, data: str, state: str) -> str:
        text = "\x00".join([purpose, str(user_id), str(issued), data, state])
        digest = hmac.new(self.key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def make(self, purpose: str, user_id: int, state: str, data: str = "") -> str:
        if purpose not in self.lifetimes:
            raise ValueError(f"no lifetime for tokens of purpose {purpose!r}")
        issued = int(self.clock())
        encoded = base64.urlsafe_b64encode(data.encode()).rstrip(b"=").decode()
        signature = self._signature(purpose, user_id, issued, data, state)
        return f"{_b36(user_id)}.{_b36(issued)}.{encoded}.{signature}"

    def read(self, token: object) -> Claim | None:
        """The token's parts, or None if it is not one of ours in shape (not yet checked)."""
        if not isinstance(token, str):
            return None
        match = _TOKEN_RE.match(token)
        if match is None:
            return None
        user_id, issued, encoded, signature = match.groups()
        try:
            data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        return Claim(int(user_id, 36), int(issued, 36), data, signature)

    def valid(self, purpose: str, claim: Claim, state: str) -> bool:
        """True if the claim was made for ``purpose`` while the account was in ``state``, and is
        at most the purpose's lifetime old (and not from the future, but for the clock skew
        between instances)."""
        age = int(self.clock()) - claim.issued
        expected = self._signature(purpose, claim.user_id, claim.issued, claim.data, state)
        max_age = self.lifetimes[purpose]
        return hmac.compare_digest(expected, claim.signature) and -CLOCK_SKEW <= age <= max_age
