"""Changes to an account: its password (changed, or reset through a mailed link) and its
address (confirmed through a link mailed to the new one). As in ``accounts``: collaborators
passed in, answers that reveal no other account, hashing only through ``hash_password`` and
``password_matches``.
"""

from __future__ import annotations

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError

from . import account_mail
from .account_mail import MailKind, Outbox
from .accounts import (
    CHANGE_EMAIL,
    RESET,
    User,
    email_state,
    find_row,
    hash_password,
    hours,
    minutes,
    normalise_email,
    now,
    password_matches,
    redeem,
    reset_state,
    send_needed,
    to_user,
)
from .errors import DuplicateEmail, InvalidInput, InvalidToken, LoginRequired, WrongPassword
from .models import users
from .password_policy import check_password_policy
from .tokens import Tokens

# -- passwords -------------------------------------------------------------------------------


def change_password(
    engine: Engine,
    tokens: Tokens,
    outbox: Outbox,
    user_id: int,
    current_password: object,
    new_password: object,
) -> User:
    """Check the current password, store the new one, send a notice to a verified address.
    The caller ends the account's other sessions."""
    with engine.connect() as conn:
        row = find_row(conn, user_id=user_id)
    if row is None:
        raise LoginRequired("Please log in first.")
    secret = check_password_policy(new_password, row.email, field="new_password")
    if not isinstance(current_password, str) or not password_matches(
        row.password_hash, current_password
    ):
        raise WrongPassword("Your current password is not right.", field="current_password")
    if secret == current_password:
        raise InvalidInput(
            "Choose a new password different from your current one.", field="new_password"
        )
    with engine.begin() as conn:
        changed = conn.execute(
            update(users)
            .where(users.c.id == row.id, users.c.password_hash == row.password_hash)
            .values(password_hash=hash_password(secret), password_changed_at=now(tokens))
        ).rowcount
    if not changed:  # changed meanwhile by another request: the current password was the old
        raise WrongPassword("Your password was just changed elsewhere; log in again.")
    user = to_user(row)
    outbox.notify(
        MailKind.PASSWORD_CHANGED, user, account_mail.password_changed(outbox.links, row.email)
    )
    return user


def request_password_reset(engine: Engine, tokens: Tokens, outbox: Outbox, email: object) -> str:
    """Mail a reset link to the address if it has an account, and a "no account here" note if
    not: the same answer and one mail either way."""
    address = normalise_email(email)
    with engine.connect() as conn:
        row = find_row(conn, email=address)
    if row is None:
        send_needed(
            outbox, MailKind.NO_ACCOUNT, None, account_mail.no_account(outbox.links, address)
        )
    else:
        token = tokens.make(RESET, row.id, reset_state(row))
        message = account_mail.password_reset(outbox.links, address, token, minutes(tokens, RESET))
        send_needed(outbox, MailKind.PASSWORD_RESET, to_user(row), message)
    return address


def check_reset_link(engine: Engine, tokens: Tokens, token: object) -> User:
    """The account a reset link is for, if it still works (no change made)."""
    with engine.connect() as conn:
        row, _ = redeem(conn, tokens, RESET, token)
    return to_user(row)


def reset_password(
    engine: Engine, tokens: Tokens, outbox: Outbox, token: object, new_password: object
) -> User:
    """Set a new password through a mailed link. Following it proved the address, so it is
    verified too. The link stops working (the hash it was bound to changed); the caller ends
    every session of the account."""
    with engine.connect() as conn:
        row, _ = redeem(conn, tokens, RESET, token)
    secret = check_password_policy(new_password, row.email, field="new_password")
    moment = now(tokens)
    with engine.begin() as conn:
        changed = conn.execute(
            update(users)
            .where(users.c.id == row.id, users.c.password_hash == row.password_hash)
            .where(users.c.email == row.email)
            .values(
                password_hash=hash_password(secret),
                password_changed_at=moment,
                email_verified_at=row.email_verified_at or moment,
            )
        ).rowcount
    if not changed:
        raise InvalidToken("This link was already used.")
    user = User(row.id, row.email, True)
    outbox.notify(
        MailKind.PASSWORD_CHANGED, user, account_mail.password_changed(outbox.links, row.email)
    )
    return user


# -- address change ----------------------------------------------------------------------------


def request_email_change(
    engine: Engine,
    tokens: Tokens,
    outbox: Outbox,
    user_id: int,
    password: object,
    new_email: object,
) -> str:
    """After the password, mail the new address a link that confirms the change; if the new
    address has an account, mail it a note instead. The answer is the same."""
    new_address = normalise_email(new_email)
    with engine.connect() as conn:
        row = find_row(conn, user_id=user_id)
        if row is None:
            raise LoginRequired("Please log in first.")
        if not isinstance(password, str) or not password_matches(row.password_hash, password):
            raise WrongPassword("Your password is not right.", field="password")
        if new_address == row.email:
            raise InvalidInput("That is already your address.", field="email")
        other = find_row(conn, email=new_address)
    if other is not None:
        message = account_mail.address_taken(outbox.links, new_address)
        send_needed(outbox, MailKind.ADDRESS_TAKEN, to_user(other), message)
    else:
        token = tokens.make(CHANGE_EMAIL, row.id, email_state(row), data=new_address)
        message = account_mail.confirm_new_address(
            outbox.links, new_address, token, hours(tokens, CHANGE_EMAIL)
        )
        send_needed(outbox, MailKind.CONFIRM_NEW_ADDRESS, None, message)
    return new_address


def confirm_email_change(engine: Engine, tokens: Tokens, outbox: Outbox, token: object) -> User:
    """Move the account to the address the link was mailed to (now verified) and send the old
    address a notice. The link stops working (the address it was bound to changed)."""
    try:
        with engine.begin() as conn:
            row, new_address = redeem(conn, tokens, CHANGE_EMAIL, token)
            changed = conn.execute(
                update(users)
                .where(users.c.id == row.id, users.c.email == row.email)
                .where(users.c.password_hash == row.password_hash)
                .values(email=new_address, email_verified_at=now(tokens))
            ).rowcount
    except IntegrityError:
        raise DuplicateEmail(
            "This address got an account of its own meanwhile; the change was not made."
        ) from None
    if not changed:
        raise InvalidToken("This link was already used.")
    old = to_user(row)
    outbox.notify(
        MailKind.ADDRESS_CHANGED,
        old,
        account_mail.address_changed(outbox.links, old.email, new_address),
    )
    return User(row.id, new_address, True)
