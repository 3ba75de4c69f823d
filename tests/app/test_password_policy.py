"""The password policy (ASVS 4.0.3 level 2, V2.1): length after NFKC, any printable character,
a breached-password list shipped with the package, not the email's local part."""

from __future__ import annotations

import gzip
from importlib import resources

import pytest

from shop.errors import InvalidInput, WeakPassword
from shop.password_policy import (
    BREACHED_PASSWORDS,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    breached_passwords,
    check_password_policy,
)

EMAIL = "ada@example.com"


def test_the_breached_list_ships_with_the_package_and_is_large_enough():
    data = resources.files("shop").joinpath(BREACHED_PASSWORDS).read_bytes()
    assert data[:2] == b"\x1f\x8b"  # kept gzipped
    assert len(gzip.decompress(data).splitlines()) >= 10_000
    assert len(breached_passwords()) >= 10_000
    assert resources.files("shop").joinpath("data/NOTICE").read_text().count("BSD") >= 1


def test_the_list_is_read_once():
    assert breached_passwords() is breached_passwords()


@pytest.mark.parametrize(
    ("password", "error", "message"),
    [
        ("password12", WeakPassword, "at least 12 characters"),
        ("qwerty1234", WeakPassword, "at least 12 characters"),
        ("Password1!", WeakPassword, "at least 12 characters"),
        ("qwertyuiop123", WeakPassword, "stolen from other sites"),
        ("QwertyUIOP123", WeakPassword, "stolen from other sites"),  # case-insensitive
        ("password1234", WeakPassword, "stolen from other sites"),
        ("ada lovelace 1815", WeakPassword, "email address's name"),
        ("my ADA horse 42", WeakPassword, "email address's name"),
        ("x" * (MAX_PASSWORD_LENGTH + 1), InvalidInput, "limited to 128"),
        ("tab\tseparated words", InvalidInput, "printable"),
        ("line\nbreak in a phrase", InvalidInput, "printable"),
        (12345678901234, InvalidInput, "text"),
        (None, InvalidInput, "text"),
    ],
)
def test_refused(password, error, message):
    with pytest.raises(error, match=message) as refused:
        check_password_policy(password, EMAIL)
    assert refused.value.field == "password"
    if error is WeakPassword:
        assert refused.value.code == "weak_password"


@pytest.mark.parametrize(
    "password",
    [
        "correct horse 42",  # the tests' password: 15 characters
        "a" * MIN_PASSWORD_LENGTH,  # no composition rules: length is what counts
        "x" * MAX_PASSWORD_LENGTH,
        "  spaces count too  ",
        "ünïcödé pässwörd",
        "пароль на русском",
        "emoji 🐍🐍🐍 are fine",
    ],
)
def test_allowed(password):
    assert check_password_policy(password, EMAIL) == password


def test_length_is_counted_after_nfkc_normalisation():
    # U+FB03 (the "ffi" ligature) is three characters after NFKC; 4 ligatures = 12 characters.
    assert check_password_policy("\ufb03" * 4, EMAIL) == "\ufb03" * 4
    with pytest.raises(WeakPassword):
        check_password_policy("\ufb03" * 3, EMAIL)  # 9 characters after NFKC
    # A combining accent is a character of its own either way: "e" + U+0301 is one after NFKC.
    with pytest.raises(WeakPassword):
        check_password_policy("e\u0301" * 11, EMAIL)  # 22 code points, 11 characters


def test_no_email_no_local_part_rule():
    assert check_password_policy("ada lovelace 1815") == "ada lovelace 1815"


@pytest.mark.real_password_hash
def test_accounts_are_hashed_with_scrypt_at_production_cost(shopper, app):
    """The fast tests swap in a cheaper scrypt (tests/conftest.py); the shop itself must not."""
    from sqlalchemy import select

    from shop.models import users

    assert shopper.register(email="cost@example.com").status_code < 400
    with app.extensions["shop"].engines.primary.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("scrypt:32768:8:1$")


def test_the_fast_tests_hash_cheaply(shopper, app):
    from sqlalchemy import select

    from shop.models import users

    shopper.register(email="cheap@example.com")
    with app.extensions["shop"].engines.primary.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("scrypt:256:8:1$")
