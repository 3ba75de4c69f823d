"""The mail outbox on the real PostgreSQL: instances delivering at once never send a mail twice,
and a mail exists only if the transaction that wrote it committed."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import select

from shop.config import Settings
from shop.db import make_engine
from shop.mail import Message, SmtpMailer, SmtpServer
from shop.models import outbox
from shop.outbox import enqueue
from shop.services import mail_delivery
from tests.support import Mailbox, free_port

MAILS = 40


class SlowMailbox(Mailbox):
    """A server that takes a little while per message, so the workers' passes overlap."""

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


def test_instances_delivering_at_once_send_each_mail_exactly_once(pg_url):
    from aiosmtpd.controller import Controller

    mailbox = SlowMailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings = Settings(smtp_url=f"smtp://127.0.0.1:{controller.port}", mail_from="s@shop.test")
    engines = [make_engine(pg_url, name=f"instance{i}") for i in range(3)]
    try:
        with engines[0].begin() as conn:
            for i in range(MAILS):
                enqueue(conn, Message(f"buyer{i}@example.com", f"Order {i}", "Thank you"))
        start = threading.Barrier(len(engines))
        reports = []

        def instance(engine) -> None:
            mailer = SmtpMailer(
                SmtpServer.from_url(settings.smtp_url or ""), "s@shop.test", timeout=5
            )
            delivery = mail_delivery(settings, engine, mailer)
            start.wait()
            reports.append(delivery.run_once())

        threads = [threading.Thread(target=instance, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        controller.stop()
    assert sum(report.sent for report in reports) == MAILS
    assert sum(1 for report in reports if report.sent) > 1, "the passes did not overlap"
    ids = [mail.message["Message-ID"] for mail in mailbox.received]
    assert len(ids) == MAILS and len(set(ids)) == MAILS
    with engines[0].connect() as conn:
        rows = conn.execute(select(outbox.c.status, outbox.c.attempts)).all()
    assert set(rows) == {("sent", 1)}
    for engine in engines:
        engine.dispose()


def test_a_rolled_back_transaction_leaves_no_mail(pg_url):
    engine = make_engine(pg_url, name="primary")
    try:
        with engine.begin() as conn:
            enqueue(conn, Message("ada@example.com", "Kept", "Hi"))
        try:
            with engine.begin() as conn:
                enqueue(conn, Message("ada@example.com", "Lost", "Hi"))
                raise RuntimeError("the status change failed")
        except RuntimeError:
            pass
        with engine.connect() as conn:
            subjects = conn.execute(select(outbox.c.subject)).scalars().all()
        assert subjects == ["Kept"]
    finally:
        engine.dispose()
