"""The mail outbox: a mail is a row written in the transaction of what it reports, and a
worker delivers it afterwards, so an SMTP outage delays mail and loses none.

:func:`enqueue` writes in the caller's transaction: the mail exists exactly when the change it
reports committed. :class:`Delivery` claims one due row at a time, sends it through the
:class:`~shop.mail.Mailer`, and marks it sent; a send that fails is retried after
``SHOP_MAIL_RETRY_DELAY`` seconds, twice as long each time up to ``SHOP_MAIL_RETRY_MAX_DELAY``,
and after ``SHOP_MAIL_RETRY_ATTEMPTS`` sends the row is left ``failed`` for an operator.

A claim is one statement (PostgreSQL: the row picked ``FOR UPDATE SKIP LOCKED``; SQLite: a
conditional update under its single writer lock) and a lease: a row whose worker died mid-send
is due again once the lease lapses. So several instances never send a row twice, except after
an ambiguous failure (the server took the message but its answer was lost): the retry carries
the same Message-ID, so the copy can be recognised.

:class:`MailWorker` runs delivery passes in a daemon thread of every process, started lazily
(and again after a fork); ``flask --app shop mail deliver`` runs one pass.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, update

from .background import ProcessLoop
from .mail import Mailer, Message, recipient_domain
from .models import outbox

log = logging.getLogger(__name__)

PENDING, SENDING, SENT, FAILED = "pending", "sending", "sent", "failed"
STATUSES = (PENDING, SENDING, SENT, FAILED)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue(
    conn: Connection, message: Message, *, kind: str = "mail", clock: Clock = utcnow
) -> str:
    """Write ``message`` in the caller's transaction (it is sent only if that commits), due at
    once. Returns its key, the left part of its Message-ID."""
    key = uuid.uuid4().hex
    conn.execute(
        insert(outbox).values(
            message_key=key,
            kind=kind,
            recipient=message.to,
            subject=message.subject,
            body_text=message.body,
            body_html=message.html,
            status=PENDING,
            attempts=0,
            next_attempt_at=clock(),
        )
    )
    return key


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 12
    delay: float = 30.0
    max_delay: float = 3600.0

    def wait_after(self, attempt: int) -> float:
        """Seconds before the next send once send number ``attempt`` (1, 2, ...) failed."""
        return min(self.delay * 2 ** min(attempt - 1, 40), self.max_delay)


@dataclass
class Report:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


@dataclass
class Delivery:
    """Sends what is due in ``engine``'s outbox through ``mailer``."""

    engine: Engine
    mailer: Mailer
    retry: RetryPolicy
    domain: str  # of the Message-IDs: the sender's
    lease: float = 300.0  # seconds a claim lasts: longer than any send can take
    clock: Clock = utcnow

    def message_id(self, key: str) -> str:
        return f"<{key}@{self.domain}>"

    def run_once(self, *, stop: Callable[[], bool] = lambda: False) -> Report:
        """One pass: send every mail due now (a mail that fails is not tried again in it)."""
        report = Report()
        while not stop():
            row = self._claim()
            if row is None:
                break
            self._deliver(row, report)
        return report

    def _claim(self) -> Any:
        """The next due row, now ours (``sending``, one more attempt, leased), or None."""
        now = self.clock()
        due = (
            select(outbox.c.id)
            .where(outbox.c.status.in_((PENDING, SENDING)), outbox.c.next_attempt_at <= now)
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(1)
        )
        with self.engine.connect() as conn:
            # A read first, in a transaction of its own: an idle poll takes no write lock
            # (SQLite has one for the whole database).
            if conn.execute(due).first() is None:
                return None
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            return conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == due.scalar_subquery(),
                    # SQLite: the statement runs under its one writer lock; this repeats the
                    # condition so a row another worker just claimed is never taken.
                    outbox.c.status.in_((PENDING, SENDING)),
                    outbox.c.next_attempt_at <= now,
                )
                .values(
                    status=SENDING,
                    attempts=outbox.c.attempts + 1,
                    next_attempt_at=now + timedelta(seconds=self.lease),
                )
                .returning(*outbox.c)
            ).first()

    def _deliver(self, row: Any, report: Report) -> None:
        message = Message(
            row.recipient,
            row.subject,
            row.body_text,
            row.body_html,
            self.message_id(row.message_key),
        )
        named = f"{message.message_id} ({row.kind}) to {recipient_domain(row.recipient)}"
        if row.attempts > self.retry.attempts:  # the lease of its last attempt lapsed
            self._finish(row, FAILED, last_error="the last attempt's worker never reported back")
            log.error("mail %s failed for good: its last attempt never reported back", named)
            report.failed += 1
            return
        try:
            self.mailer.send(message)
        except Exception as exc:  # noqa: BLE001 - MailNotSent, or a bug: retried alike
            error = f"{type(exc).__name__}: {exc}"[:500]
            if row.attempts >= self.retry.attempts:
                self._finish(row, FAILED, last_error=error)
                log.error("mail %s failed for good after %d sends: %s", named, row.attempts, error)
                report.failed += 1
                return
            wait = self.retry.wait_after(row.attempts)
            self._finish(
                row,
                PENDING,
                last_error=error,
                next_attempt_at=self.clock() + timedelta(seconds=wait),
            )
            log.warning(
                "mail %s not sent (send %d of %d), next try in %.0f s: %s",
                named,
                row.attempts,
                self.retry.attempts,
                wait,
                error,
            )
            report.retrying += 1
            return
        self._finish(row, SENT, sent_at=self.clock(), last_error=None)
        log.info("mail %s sent (send %d)", named, row.attempts)
        report.sent += 1

    def _finish(self, row: Any, status: str, **values: Any) -> None:
        """Record the outcome, unless the claim lapsed and another worker holds the row."""
        with self.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == row.id,
                    outbox.c.status == SENDING,
                    outbox.c.attempts == row.attempts,
                )
                .values(status=status, **values)
            )


def counts(engine: Engine) -> dict[str, int]:
    """How many mails are in each state (for ``flask --app shop mail status``)."""
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all()
    found = {status: 0 for status in STATUSES}
    found.update({status: n for status, n in rows})
    return found


class MailWorker(ProcessLoop):
    """Delivery passes every ``poll`` seconds in this process's background loop
    (``make_delivery`` builds its :class:`Delivery` once per thread). It runs on the process's
    primary engine, borrowing a connection for the milliseconds of each claim and outcome (never
    during a send), so a worker stays within its connection budget (:func:`shop.db.pool_sizes`);
    its statements show in no request's count."""

    name = "mail-outbox"

    def __init__(self, make_delivery: Callable[[], Delivery], *, poll: float) -> None:
        super().__init__(interval=poll)
        self.make_delivery = make_delivery
        self._local = threading.local()  # a forked child's thread makes its own

    def run_pass(self, stop: threading.Event) -> None:
        delivery: Delivery | None = getattr(self._local, "delivery", None)
        if delivery is None:
            delivery = self._local.delivery = self.make_delivery()
        delivery.run_once(stop=stop.is_set)
