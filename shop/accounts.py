"""Accounts: registration and password checks on the primary."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from .errors import DuplicateEmail, InvalidCredentials, InvalidInput
from .models import users
from .password_policy import check_password_policy

PASSWORD_METHOD = "scrypt"
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
# Compared against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = generate_password_hash("not a real password", method=PASSWORD_METHOD)


@dataclass(frozen=True)
class User:
    id: int
    email: str


def normalise_email(email: object) -> str:
    if not isinstance(email, str):
        raise InvalidInput("Email must be text.", field="email")
    cleaned = email.strip().lower()
    if len(cleaned) > 254 or not _EMAIL_RE.match(cleaned):
        raise InvalidInput("Enter a valid email address.", field="email")
    return cleaned


def register(engine: Engine, email: object, password: object) -> User:
    """Create an account; the unique index, not a prior lookup, refuses a taken email."""
    address = normalise_email(email)
    secret = check_password_policy(password, address)
    password_hash = generate_password_hash(secret, method=PASSWORD_METHOD)
    try:
        with engine.begin() as conn:
            user_id = conn.execute(
                insert(users)
                .values(email=address, password_hash=password_hash)
                .returning(users.c.id)
            ).scalar_one()
    except IntegrityError:
        raise DuplicateEmail("An account with this email already exists.", field="email") from None
    return User(user_id, address)


def authenticate(engine: Engine, email: object, password: object) -> User:
    """The account for these credentials; one message whichever of the two is wrong."""
    failure = InvalidCredentials("Wrong email or password.")
    if not isinstance(email, str) or not isinstance(password, str):
        raise failure
    with engine.connect() as conn:
        row = conn.execute(
            select(users.c.id, users.c.email, users.c.password_hash).where(
                users.c.email == email.strip().lower()
            )
        ).first()
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        raise failure
    if not check_password_hash(row.password_hash, password):
        raise failure
    return User(row.id, row.email)
