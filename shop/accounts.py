"""Accounts on the primary: registration, sign-in, verification, and what the changes in
``account_changes`` share (rows, the state each kind of link is bound to, redeeming a link).

Every function takes its collaborators: the engine, ``Tokens`` (signed single-use links and the
clock) and an ``Outbox`` (mail). No answer reveals whether an address has an account: where
that would differ, the mail differs instead. Hashing a password is expensive, so it happens
only in ``hash_password`` and ``password_matches`` (a throttle can wrap them), once per request,
except a password change (the current one checked, the new one hashed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from . import account_mail
from .account_mail import MAIL_NOT_SENT, MailKind, Outbox
from .errors import (
    AlreadyVerified,
    InvalidCredentials,
    InvalidInput,
    InvalidToken,
    LoginRequired,
    MailUnavailable,
)
from .mail import MailNotSent
from .models import MAX_ID, users
from .password_policy import check_password_policy
from .tokens import Tokens

PASSWORD_METHOD = "scrypt"
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
# Compared against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = generate_password_hash("not a real password", method=PASSWORD_METHOD)

# Token purposes, each with its lifetime in Tokens.lifetimes.
VERIFY, RESET, CHANGE_EMAIL = "verify", "reset", "change_email"


@dataclass(frozen=True)
class User:
    id: int
    email: str
    verified: bool = False
    role: str = "customer"  # shop/staff.py


@dataclass(frozen=True)
class Account:
    """What the account page shows."""

    id: int
    email: str
    created_at: datetime
    email_verified_at: datetime | None
    password_changed_at: datetime | None

    @property
    def verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def user(self) -> User:
        return User(self.id, self.email, self.verified)


def hash_password(secret: str) -> str:
    return generate_password_hash(secret, method=PASSWORD_METHOD)


def password_matches(password_hash: str, secret: str) -> bool:
    return check_password_hash(password_hash, secret)


def normalise_email(email: object, field: str = "email") -> str:
    if not isinstance(email, str):
        raise InvalidInput("Email must be text.", field=field)
    cleaned = email.strip().lower()
    if len(cleaned) > 254 or not _EMAIL_RE.match(cleaned):
        raise InvalidInput("Enter a valid email address.", field=field)
    return cleaned


# -- rows, and the state each kind of link is bound to (shared with account_changes) ----


def find_row(conn: Connection, *, user_id: int | None = None, email: str | None = None) -> Any:
    where = users.c.id == user_id if user_id is not None else users.c.email == email
    return conn.execute(select(users).where(where)).first()


def to_user(row: Any) -> User:
    return User(row.id, row.email, row.email_verified_at is not None, row.role)


def verify_state(row: Any) -> str:
    return f"{row.email}\x00{int(row.email_verified_at is not None)}"


def reset_state(row: Any) -> str:
    return f"{row.email}\x00{row.password_hash}"


def email_state(row: Any) -> str:
    return f"{row.email}\x00{row.password_hash}"


_STATES = {VERIFY: verify_state, RESET: reset_state, CHANGE_EMAIL: email_state}


def now(tokens: Tokens) -> datetime:
    return datetime.fromtimestamp(tokens.clock(), UTC)


def redeem(conn: Connection, tokens: Tokens, purpose: str, token: object) -> tuple[Any, str]:
    """The account a link is for and the link's data; InvalidToken if it does not match the
    account as it is now (used, expired, tampered with, or for another purpose)."""
    claim = tokens.read(token)
    row = find_row(conn, user_id=claim.user_id) if claim and claim.user_id <= MAX_ID else None
    if claim is None or row is None or not tokens.valid(purpose, claim, _STATES[purpose](row)):
        raise InvalidToken(
            "This link has expired or was already used. Ask for a new one below or on your "
            "account page."
        )
    return row, claim.data


def hours(tokens: Tokens, purpose: str) -> int:
    return max(1, tokens.lifetimes[purpose] // 3600)


def minutes(tokens: Tokens, purpose: str) -> int:
    return max(1, tokens.lifetimes[purpose] // 60)


def send_needed(outbox: Outbox, kind: MailKind, recipient: User | None, message: Any) -> None:
    try:
        outbox.send(kind, recipient, message)
    except MailNotSent:
        raise MailUnavailable(MAIL_NOT_SENT) from None


# -- registration and sign-in ------------------------------------------------------------------


def register(
    engine: Engine, tokens: Tokens, outbox: Outbox, email: object, password: object
) -> str:
    """Create an account, or not if the address has one: either way the answer is the
    address, the cost one hash, and one mail goes to the address (a verification link, or "you
    already have an account" with a reset link). The unique index decides, not a lookup."""
    address = normalise_email(email)
    password_hash = hash_password(check_password_policy(password, address))
    try:
        with engine.begin() as conn:
            conn.execute(insert(users).values(email=address, password_hash=password_hash))
        created = True
    except IntegrityError:
        created = False
    with engine.connect() as conn:
        row = find_row(conn, email=address)
    user = to_user(row)
    if created:
        token = tokens.make(VERIFY, row.id, verify_state(row))
        message = account_mail.verify_address(outbox.links, address, token, hours(tokens, VERIFY))
        send_needed(outbox, MailKind.VERIFY_ADDRESS, user, message)
    else:
        token = tokens.make(RESET, row.id, reset_state(row))
        message = account_mail.already_registered(
            outbox.links, address, token, minutes(tokens, RESET)
        )
        send_needed(outbox, MailKind.ALREADY_REGISTERED, user, message)
    return address


def authenticate(engine: Engine, email: object, password: object) -> User:
    """The account for these credentials; one message whichever of the two is wrong."""
    failure = InvalidCredentials("Wrong email or password.")
    if not isinstance(email, str) or not isinstance(password, str):
        raise failure
    with engine.connect() as conn:
        row = find_row(conn, email=email.strip().lower())
    if row is None:
        password_matches(_DUMMY_HASH, password)
        raise failure
    if not password_matches(row.password_hash, password):
        raise failure
    return to_user(row)


def get_account(engine: Engine, user_id: int) -> Account:
    with engine.connect() as conn:
        row = find_row(conn, user_id=user_id)
    if row is None:  # deleted meanwhile: the session is for nobody
        raise LoginRequired("Please log in first.")
    return Account(
        row.id, row.email, row.created_at, row.email_verified_at, row.password_changed_at
    )


# -- verification ------------------------------------------------------------------------------


def send_verification(engine: Engine, tokens: Tokens, outbox: Outbox, user_id: int) -> str:
    """Mail a new verification link to the account's address (which is returned)."""
    with engine.connect() as conn:
        row = find_row(conn, user_id=user_id)
    if row is None:
        raise LoginRequired("Please log in first.")
    if row.email_verified_at is not None:
        raise AlreadyVerified("Your address is already confirmed.")
    token = tokens.make(VERIFY, row.id, verify_state(row))
    message = account_mail.verify_address(outbox.links, row.email, token, hours(tokens, VERIFY))
    send_needed(outbox, MailKind.VERIFY_ADDRESS, to_user(row), message)
    return row.email


def verify_email(engine: Engine, tokens: Tokens, token: object) -> User:
    """Mark the address verified; the link then no longer matches (single use)."""
    with engine.begin() as conn:
        row, _ = redeem(conn, tokens, VERIFY, token)
        changed = conn.execute(
            update(users)
            .where(users.c.id == row.id, users.c.email == row.email)
            .where(users.c.email_verified_at.is_(None))
            .values(email_verified_at=now(tokens))
        ).rowcount
    if not changed:  # a concurrent use won
        raise InvalidToken("This link was already used.")
    return User(row.id, row.email, True)
