"""Sending e-mail: a small ``Mailer`` interface, an SMTP mailer and a log mailer.

``SHOP_SMTP_URL`` picks the SMTP server::

    smtp://[user[:password]@]host[:port][?starttls=1]   plain SMTP (port 25), or STARTTLS
                                                        with starttls=1 (port 587)
    smtps://[user[:password]@]host[:port]               TLS from the first byte (port 465)

User and password are percent-encoded. Without ``SHOP_SMTP_URL`` (the embedded default) each
message is written to the log instead, so a developer can follow its links.

A mailer either hands the message over or raises :class:`MailNotSent`; it never retries (an
account mail's shopper is told to try again; the outbox, shop/outbox.py, retries order mail),
and every attempt is bounded by ``SHOP_SMTP_TIMEOUT``. Logs name a message by its Message-ID
and its recipient by the address's domain, never the whole address nor the SMTP password.
"""

from __future__ import annotations

import html
import logging
import re
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from .config import ConfigError, Settings

log = logging.getLogger(__name__)


_URL = re.compile(r"https?://[^\s<>\"]+")


def html_alternative(body: str) -> str:
    """The plain text as HTML, for mail clients that prefer it: escaped, line breaks kept,
    links clickable. The plain text stays the message; this adds nothing else."""
    parts, last = [], 0
    for found in _URL.finditer(body):
        url = html.escape(found.group(0), quote=True)
        parts += [html.escape(body[last : found.start()]), f'<a href="{url}">{url}</a>']
        last = found.end()
    parts.append(html.escape(body[last:]))
    return (
        '<!doctype html><html><body><div style="white-space: pre-wrap; font-family: sans-serif">'
        + "".join(parts)
        + "</div></body></html>\n"
    )


class MailNotSent(Exception):
    """The message could not be handed to the mail server (nothing was sent)."""


@dataclass(frozen=True)
class Message:
    """An e-mail to one address: plain text, sent with ``html`` as its HTML part (by default
    an HTML rendering of the same text). ``message_id`` (a Message-ID header, ``<...@...>``)
    is given when every attempt must carry the same one (the outbox); by default each send
    makes a new one."""

    to: str
    subject: str
    body: str
    html: str | None = None
    message_id: str | None = None


def recipient_domain(address: str) -> str:
    """What logs say of a recipient: the domain alone (an address is personal data)."""
    return "@" + address.rpartition("@")[2] if "@" in address else "(no domain)"


def sender_domain(sender: str) -> str | None:
    """The domain of a From like ``shop <no-reply@example.com>``, for Message-IDs."""
    return sender.rpartition("@")[2].strip("> ") or None


class Mailer(Protocol):
    def send(self, message: Message) -> None:
        """Hand the message over, or raise :class:`MailNotSent`."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: bool = False  # smtps: TLS from the first byte
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"SHOP_SMTP_URL: {exc}") from None
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ConfigError(
                "SHOP_SMTP_URL must look like smtp://user:password@host:587?starttls=1 or "
                "smtps://user:password@host:465"
            )
        query = parse_qs(parts.query)
        unknown = set(query) - {"starttls"}
        if unknown:
            raise ConfigError(f"SHOP_SMTP_URL: unknown option {sorted(unknown)[0]!r}")
        starttls = _flag(query.get("starttls", ["0"])[-1])
        tls = parts.scheme == "smtps"
        if tls and starttls:
            raise ConfigError("SHOP_SMTP_URL: smtps:// is TLS already; drop starttls=1")
        default_port = 465 if tls else 587 if starttls else 25
        return cls(
            host=parts.hostname,
            port=port or default_port,
            tls=tls,
            starttls=starttls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )


def _flag(value: str) -> bool:
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ConfigError(f"SHOP_SMTP_URL: starttls must be 0 or 1, not {value!r}")


class SmtpMailer:
    """One SMTP connection per message: mails are rare (sign-up, resets), and a fresh
    connection cannot have been dropped by the server while idle."""

    def __init__(self, server: SmtpServer, sender: str, *, timeout: float) -> None:
        self.server = server
        self.sender = sender
        self.timeout = timeout

    def send(self, message: Message) -> None:
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = message.message_id or make_msgid(domain=sender_domain(self.sender))
        mail.set_content(message.body)
        mail.add_alternative(message.html or html_alternative(message.body), subtype="html")
        server = self.server
        try:
            if server.tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    server.host,
                    server.port,
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
            with smtp:
                if server.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if server.username:
                    smtp.login(server.username, server.password or "")
                smtp.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            log.error(
                "mail %s %r to %s not sent via %s:%s: %s: %s",
                mail["Message-ID"],
                message.subject,
                recipient_domain(message.to),
                server.host,
                server.port,
                type(exc).__name__,
                exc,
            )
            raise MailNotSent(f"{type(exc).__name__}: {exc}") from exc
        log.info(
            "mail %s %r sent to %s",
            mail["Message-ID"],
            message.subject,
            recipient_domain(message.to),
        )


class LogMailer:
    """The embedded default: every message goes to the log, in full, at WARNING (so that the
    default INFO level shows it and a developer can follow its links). The one place a log
    shows an address: nothing is sent, and the log is the developer's mailbox."""

    def send(self, message: Message) -> None:
        log.warning(
            "no SHOP_SMTP_URL: this mail is not sent, only logged\nTo: %s\nSubject: %s\n\n%s",
            message.to,
            message.subject,
            message.body,
        )


def mailer_from_settings(settings: Settings) -> Mailer:
    if settings.smtp_url is None:
        return LogMailer()
    return SmtpMailer(
        SmtpServer.from_url(settings.smtp_url), settings.mail_from, timeout=settings.smtp_timeout
    )
