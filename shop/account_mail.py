"""The mails accounts send: their kinds, who may get which (``mail_allowed``), and their text.

Mails that answer someone typing an address (a sign-up, a reset request, an address change)
carry a link whose use proves the address; they are the only mails an unverified address gets,
with order confirmations. Notices (a password or an address changed) go to verified addresses
only: an unverified address may belong to someone who never asked for anything.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from typing import Protocol

from .errors import MailUnavailable
from .mail import Mailer, MailNotSent, Message, recipient_domain

log = logging.getLogger(__name__)

MAIL_NOT_SENT = (
    "We could not send the e-mail just now (our mail server did not answer). Nothing is lost: "
    "please try again in a few minutes."
)


class MailKind(enum.Enum):
    VERIFY_ADDRESS = "verify_address"
    ALREADY_REGISTERED = "already_registered"  # a sign-up with an address that has an account
    PASSWORD_RESET = "password_reset"
    NO_ACCOUNT = "no_account"  # a reset asked for an address that has no account
    CONFIRM_NEW_ADDRESS = "confirm_new_address"
    ADDRESS_TAKEN = "address_taken"  # an address change to an address that has an account
    PASSWORD_CHANGED = "password_changed"
    ADDRESS_CHANGED = "address_changed"
    ORDER_CONFIRMATION = "order_confirmation"


# What an unverified address may get: the answers to a request naming it, whose link proves
# the address when followed (a reset sets it verified too), and order confirmations.
UNVERIFIED_MAY_GET = frozenset(
    {
        MailKind.VERIFY_ADDRESS,
        MailKind.ALREADY_REGISTERED,
        MailKind.PASSWORD_RESET,
        MailKind.ORDER_CONFIRMATION,
    }
)


class Recipient(Protocol):
    @property
    def verified(self) -> bool: ...


def mail_allowed(kind: MailKind, recipient: Recipient | None) -> bool:
    """The one rule for who gets which mail. ``recipient`` is the account at the address, or
    None when no account has it (a new address, a reset for an unknown address)."""
    if recipient is None or recipient.verified:
        return True
    return kind in UNVERIFIED_MAY_GET


class Links(Protocol):
    """Absolute URLs of the pages a mail points to (built by the web layer)."""

    def verify(self, token: str) -> str: ...
    def reset(self, token: str) -> str: ...
    def confirm_email(self, token: str) -> str: ...
    def reset_request(self) -> str: ...
    def login(self) -> str: ...
    def register(self) -> str: ...


@dataclass
class Outbox:
    """Sends the accounts' mails through ``mailer``, asking ``mail_allowed`` first. A
    ``deferred`` outbox keeps them until ``flush``, so that a caller can send them once it no
    longer holds something scarce (a password-hashing slot)."""

    mailer: Mailer
    links: Links
    deferred: bool = False
    pending: list[tuple[Message, bool]] = field(default_factory=list)

    def send(self, kind: MailKind, recipient: Recipient | None, message: Message) -> bool:
        """Send a mail the shopper needs (a link to follow); raises MailNotSent (deferred: at
        ``flush``, as MailUnavailable). False if the rule says this address gets no such mail."""
        if not mail_allowed(kind, recipient):
            log.info("no %s mail to an unverified address", kind.value)
            return False
        if self.deferred:
            self.pending.append((message, True))
        else:
            self.mailer.send(message)
        return True

    def notify(self, kind: MailKind, recipient: Recipient | None, message: Message) -> bool:
        """Send a notice of something already done: a failure is logged, never raised, since
        the change it reports stands."""
        if self.deferred and mail_allowed(kind, recipient):
            self.pending.append((message, False))
            return True
        try:
            return self.send(kind, recipient, message)
        except MailNotSent:
            log.error(
                "%s notice to %s not sent; the change stands",
                kind.value,
                recipient_domain(message.to),
            )
            return False

    def flush(self) -> None:
        """Send what was kept; MailUnavailable if a needed mail could not be sent."""
        pending, self.pending = self.pending, []
        failed = False
        for message, needed in pending:
            try:
                self.mailer.send(message)
            except MailNotSent:
                log.error("mail %r to %s not sent", message.subject, recipient_domain(message.to))
                failed = failed or needed
        if failed:
            raise MailUnavailable(MAIL_NOT_SENT)


SIGNATURE = "\n-- \nshop\n"


def verify_address(links: Links, to: str, token: str, hours: int) -> Message:
    return Message(
        to,
        "Confirm your email address",
        f"Welcome to the shop!\n\nTo confirm that {to} is your address, follow this link "
        f"(it works once, for {hours} hours):\n\n{links.verify(token)}\n\n"
        "If you did not create an account, ignore this message: an address that is not "
        f"confirmed gets no news from us.\n{SIGNATURE}",
    )


def already_registered(links: Links, to: str, reset_token: str, minutes: int) -> Message:
    return Message(
        to,
        "Someone tried to register with your address",
        f"Someone, maybe you, tried to create an account with {to}, which already has one.\n\n"
        f"If it was you, log in:\n\n{links.login()}\n\nor, if you forgot your password, set a "
        f"new one with this link (it works once, for {minutes} minutes):\n\n"
        f"{links.reset(reset_token)}\n\nIf it was not you, ignore this message: nothing was "
        f"changed.\n{SIGNATURE}",
    )


def password_reset(links: Links, to: str, token: str, minutes: int) -> Message:
    return Message(
        to,
        "Reset your password",
        f"Someone, maybe you, asked to reset the password of the account {to}.\n\nTo choose "
        f"a new password, follow this link (it works once, for {minutes} minutes):\n\n"
        f"{links.reset(token)}\n\nIf it was not you, ignore this message: your password "
        f"stays as it is.\n{SIGNATURE}",
    )


def no_account(links: Links, to: str) -> Message:
    return Message(
        to,
        "Password reset requested",
        f"Someone, maybe you, asked to reset the password of an account with {to}, but this "
        f"address has no account here.\n\nIf you meant to create one:\n\n{links.register()}\n\n"
        f"If it was not you, ignore this message.\n{SIGNATURE}",
    )


def confirm_new_address(links: Links, to: str, token: str, hours: int) -> Message:
    return Message(
        to,
        "Confirm your new email address",
        f"Someone, maybe you, asked to use {to} as the address of their account.\n\n"
        f"To confirm, follow this link (it works once, for {hours} hours):\n\n"
        f"{links.confirm_email(token)}\n\nIf it was not you, ignore this message: nothing "
        f"changes.\n{SIGNATURE}",
    )


def address_taken(links: Links, to: str) -> Message:
    return Message(
        to,
        "Someone tried to move an account to your address",
        f"Someone, maybe you, asked to change another account's address to {to}, which "
        "already has an account here. Nothing was changed.\n\nIf you forgot this account's "
        f"password: {links.reset_request()}\n{SIGNATURE}",
    )


def password_changed(links: Links, to: str) -> Message:
    return Message(
        to,
        "Your password was changed",
        f"The password of your account {to} was just changed, and every other session of it "
        "was signed out.\n\nIf you did not do this, set a new password now:\n\n"
        f"{links.reset_request()}\n{SIGNATURE}",
    )


def address_changed(links: Links, to: str, new: str) -> Message:
    return Message(
        to,
        "Your account's email address was changed",
        f"The address of your account was just changed from {to} to {new}; mail about the "
        "account now goes there.\n\nIf you did not do this, contact the shop's support at once: "
        "someone else knows your password.\n"
        f"{SIGNATURE}",
    )
