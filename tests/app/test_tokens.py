"""Signed single-use links: valid while the account's state is what it was, for their
lifetime, and for nothing else."""

from __future__ import annotations

import pytest

from shop.tokens import CLOCK_SKEW, Tokens

SECRET = "test-secret-key-0123456789"
LIFETIMES = {"reset": 3600, "verify": 86400}


@pytest.fixture
def clock() -> list[float]:
    return [1_800_000_000.0]


@pytest.fixture
def tokens(clock) -> Tokens:
    return Tokens(SECRET, LIFETIMES, clock=lambda: clock[0])


def check(tokens: Tokens, token: str, state: str = "hash-1", purpose: str = "reset") -> bool:
    claim = tokens.read(token)
    return claim is not None and tokens.valid(purpose, claim, state)


def test_a_token_is_valid_for_its_account_state(tokens):
    token = tokens.make("reset", 42, "hash-1", data="new@example.com")
    claim = tokens.read(token)
    assert (claim.user_id, claim.data) == (42, "new@example.com")
    assert check(tokens, token)


def test_a_used_token_stops_working_because_the_state_changed(tokens):
    token = tokens.make("reset", 42, "hash-1")
    assert not check(tokens, token, state="hash-2")


def test_expiry_follows_the_clock(tokens, clock):
    token = tokens.make("reset", 42, "hash-1")
    clock[0] += 3600
    assert check(tokens, token)
    clock[0] += 1
    assert not check(tokens, token)
    assert check(tokens, tokens.make("verify", 42, "hash-1"), purpose="verify")


def test_a_token_from_the_future_counts_only_within_the_clock_skew(tokens, clock):
    token = tokens.make("reset", 42, "hash-1")
    clock[0] -= CLOCK_SKEW
    assert check(tokens, token)
    clock[0] -= 1
    assert not check(tokens, token)


def test_tampering_breaks_the_signature(tokens):
    token = tokens.make("reset", 42, "hash-1", data="new@example.com")
    user, issued, data, signature = token.split(".")
    assert check(tokens, token)
    forged = [
        f"{int(user, 36) + 1:x}.{issued}.{data}.{signature}",  # another user
        f"{user}.{issued[:-1]}z.{data}.{signature}",  # another time
        f"{user}.{issued}.ZXZlQGV4YW1wbGUuY29t.{signature}",  # eve@example.com
        f"{user}.{issued}.{data}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}",
    ]
    for token in forged:
        assert not check(tokens, token), token


def test_a_token_is_for_one_purpose_and_one_secret(tokens, clock):
    token = tokens.make("verify", 42, "hash-1")
    assert check(tokens, token, purpose="verify")
    assert not check(tokens, token, purpose="reset")
    other = Tokens("another-secret-key-0123456", LIFETIMES, clock=lambda: clock[0])
    assert not check(other, token, purpose="verify")


@pytest.mark.parametrize(
    "token",
    ["", "abc", "1.2.3", "1.2..short", None, 7, "1.2.%%%." + "x" * 43, "A.2.." + "x" * 43],
)
def test_garbage_is_not_a_token(tokens, token):
    assert tokens.read(token) is None


def test_a_purpose_needs_a_lifetime(tokens):
    with pytest.raises(ValueError, match="no lifetime"):
        tokens.make("unknown", 1, "s")
