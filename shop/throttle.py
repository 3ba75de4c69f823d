"""Throttling that runs before anything expensive: rate rules shared by every instance through
Redis, growing waits after failed logins, and a bound on password hashes per process.

The counting is the `limits` package's (the engine under Flask-Limiter), on the shop's own Redis
connection pool. Flask-Limiter's decorators charge a request before the view runs; a failed
login must be charged only once it has failed, and checked before the password is hashed, so
the rules are called from the shop's actions instead.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import limits
import redis
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from .errors import ServiceUnavailable, TooManyRequests

# The rules a deployment can tune (SHOP_LIMIT_<NAME>, the `limits` notation, "" turns one off).
RULES = ("login", "signup", "reset", "cart", "new_cart", "search")


def client_key(address: str | None) -> str:
    """Whom a per-address rule counts: the address, or its /64 for IPv6 (one subscriber's
    network, which can otherwise rotate through 2^64 addresses)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address) + "/64"
    return str(ip)


def account_key(email: str) -> str:
    """Failed logins count per account; the address appears in Redis only as a hash."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]


class SharedClientStorage(RedisStorage):
    """`limits`' Redis storage on the shop's own client, a plain or a cluster one (its keys
    carry their own hash tags, so its scripts are cluster-safe)."""

    def __init__(self, client: redis.Redis, *, key_prefix: str) -> None:
        self._client = client
        # The pool is never connected: every command goes through get_connection().
        super().__init__("redis://", connection_pool=redis.ConnectionPool(), key_prefix=key_prefix)
        self.storage = client

    def get_connection(self, readonly: bool = False) -> Any:
        return self._client


class Throttle:
    """Per-address rules and per-account failed-login back-off, counted in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        rules: Mapping[str, str],
        *,
        account_failures: str = "100/hour",
        address_failures: str = "300/hour",
        free_failures: int = 5,
        max_wait: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        storage = SharedClientStorage(client, key_prefix=f"{prefix}rl")
        self.client = client
        self.prefix = prefix
        self.windows = SlidingWindowCounterRateLimiter(storage)
        # Failed logins are few and the hourly cap is a promise (ASVS 2.2.1): count them exactly.
        self.exact = MovingWindowRateLimiter(storage)
        self.rules = {name: limits.parse_many(rules[name]) for name in RULES if rules.get(name)}
        self.failure_caps = {
            "account": limits.parse(account_failures),
            "address": limits.parse(address_failures),
        }
        self.free_failures = free_failures
        self.max_wait = max_wait
        self.clock = clock

    def hit(self, rule: str, address: str | None) -> None:
        """Count one request under ``rule``; 429 once the client is over any of its limits."""
        for item in self.rules.get(rule, ()):
            if not self.windows.hit(item, rule, client_key(address)):
                reset, _ = self.windows.get_window_stats(item, rule, client_key(address))
                raise TooManyRequests(_MESSAGES[rule], retry_after=self._seconds_until(reset))

    def check_login(self, email: str, address: str | None) -> None:
        """Before a password is hashed: refuse while a back-off runs or a cap is reached."""
        for kind, who in (("account", account_key(email)), ("address", client_key(address))):
            wait = cast(int, self.client.pttl(self._wait_key(kind, who)))
            if wait > 0:
                raise TooManyRequests(
                    "Too many failed attempts. Wait a moment before trying again.",
                    retry_after=math.ceil(wait / 1000),
                )
            cap = self.failure_caps[kind]
            if not self.exact.test(cap, "login-failed", kind, who):
                reset, _ = self.exact.get_window_stats(cap, "login-failed", kind, who)
                raise TooManyRequests(
                    "Too many failed attempts for now. Try again later or reset your password.",
                    retry_after=self._seconds_until(reset),
                )

    def login_failed(self, email: str, address: str | None) -> None:
        """Count a failure; past the free ones, the next try must wait 1, 2, 4 … seconds."""
        for kind, who, free in (
            ("account", account_key(email), self.free_failures),
            ("address", client_key(address), self.free_failures * 4),
        ):
            cap = self.failure_caps[kind]
            self.exact.hit(cap, "login-failed", kind, who)
            _, remaining = self.exact.get_window_stats(cap, "login-failed", kind, who)
            failures = cap.amount - remaining
            if failures >= free:
                wait = min(self.max_wait, 2 ** (failures - free))
                self.client.set(self._wait_key(kind, who), "1", ex=wait)

    def login_succeeded(self, email: str) -> None:
        self.client.delete(self._wait_key("account", account_key(email)))

    def _wait_key(self, kind: str, who: str) -> str:
        return f"{self.prefix}rl:wait:{kind}:{who}"

    def _seconds_until(self, reset: float) -> int:
        return max(1, math.ceil(reset - self.clock()))


_MESSAGES = {
    "login": "Too many sign-in attempts from your network. Wait a moment and try again.",
    "signup": "Too many accounts created from your network. Try again later.",
    "reset": "Too many password resets requested from your network. Try again later.",
    "cart": "Too many cart changes in a short time. Wait a moment and try again.",
    "new_cart": "Too many new carts from your network. Try again later.",
    "search": "Too many searches in a short time. Wait a moment and try again.",
}


class HashSlots:
    """At most ``slots`` password hashes at once in this process, and at most ``queue`` more
    waiting: a flood of logins waits behind itself for a moment, then is told to come back,
    and never takes every thread that catalogue pages need."""

    def __init__(self, slots: int, queue: int, *, wait: float = 1.0) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._admitted = threading.BoundedSemaphore(slots + queue)
        self.wait = wait

    @contextmanager
    def hold(self) -> Iterator[None]:
        busy = ServiceUnavailable(
            "Sign-in is busy right now. Please try again in a moment.", retry_after=1
        )
        if not self._admitted.acquire(blocking=False):
            raise busy
        try:
            if not self._slots.acquire(timeout=self.wait):
                raise busy
            try:
                yield
            finally:
                self._slots.release()
        finally:
            self._admitted.release()
