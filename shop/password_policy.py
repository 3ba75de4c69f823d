"""What a password must be (OWASP ASVS 4.0.3 level 2, V2.1): 12 to 128 characters, any
printable ones, no composition rules, not in a list of breached passwords, not the email's
local part. Checked before any hashing, so a refused password costs no scrypt."""

from __future__ import annotations

import gzip
import unicodedata
from functools import cache
from importlib import resources

from .errors import InvalidInput, WeakPassword

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128
# Django's common-passwords.txt.gz (BSD licence, see shop/data/NOTICE): 20,000 passwords
# from breaches, lower case, one a line.
BREACHED_PASSWORDS = "data/common-passwords.txt.gz"


@cache
def breached_passwords() -> frozenset[str]:
    """The list, read once per process on first use (~20,000 entries, ~1 MB in memory)."""
    data = resources.files("shop").joinpath(BREACHED_PASSWORDS).read_bytes()
    return frozenset(line.strip() for line in gzip.decompress(data).decode().splitlines())


def is_breached(password: str) -> bool:
    return password.lower() in breached_passwords()  # the list is in lower case, as Django's


def check_password_policy(password: object, email: str = "", *, field: str = "password") -> str:
    """The password if it may be used by the account with ``email``; raises otherwise.

    Lengths count characters after Unicode NFKC normalisation (what a person sees as one
    character, however it was typed); the password itself is kept as given."""
    if not isinstance(password, str):
        raise InvalidInput("Password must be text.", field=field)
    length = len(unicodedata.normalize("NFKC", password))
    if length < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            f"Use at least {MIN_PASSWORD_LENGTH} characters for your password "
            "(a few words with spaces are easy to remember).",
            field=field,
        )
    if length > MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"Passwords are limited to {MAX_PASSWORD_LENGTH} characters.", field=field
        )
    if not password.isprintable():
        raise InvalidInput(
            "Passwords may hold any printable character, spaces included, but no control "
            "characters such as tabs or line breaks.",
            field=field,
        )
    if is_breached(password):
        raise WeakPassword(
            "That password is in a list of passwords stolen from other sites, so attackers "
            "try it first; choose another.",
            field=field,
        )
    local_part = email.split("@")[0].casefold() if email else ""
    if local_part and local_part in password.casefold():
        raise WeakPassword(
            "Your password may not contain your email address's name; choose another.",
            field=field,
        )
    return password
