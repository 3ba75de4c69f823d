"""The stack's mail server: an SMTP sink (aiosmtpd) that keeps every message as a file.

``python -m deploy.stack.smtp_sink --port P --dir D`` accepts any mail on 127.0.0.1:P and
writes each message, as received, to ``D/<time>-<n>.eml``; nothing is relayed. The instances'
``SHOP_SMTP_URL`` points at it, so a test (or you) reads what the shop sent with
:func:`read_mail` or any mail client that opens ``.eml`` files.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import itertools
import os
import signal
import socket
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from deploy.stack.processes import _wait_until, spawn_child
from deploy.stack.topology import LOOPBACK, REPO, Topology


class MaildirSink:
    """An aiosmtpd handler: each message becomes one file, written whole then renamed, so a
    reader never sees half a message."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope) -> str:
        name = f"{time.time_ns()}-{os.getpid()}-{next(self.counter)}"
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(envelope.original_content or envelope.content)
        tmp.replace(self.folder / f"{name}.eml")
        return "250 Message accepted for delivery"


def read_mail(folder: str | os.PathLike[str]) -> list[EmailMessage]:
    """Every message the sink kept, oldest first."""
    files = sorted(Path(folder).glob("*.eml"), key=lambda p: int(p.name.split("-")[0]))
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in files
    ]


def main(argv: list[str] | None = None) -> None:
    from aiosmtpd.controller import Controller

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="folder the messages are written to")
    args = parser.parse_args(argv)
    controller = Controller(MaildirSink(Path(args.dir)), hostname=args.host, port=args.port)
    controller.start()
    print(f"smtp sink on {args.host}:{args.port}, writing to {args.dir}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    controller.stop()


def _start_smtp(topology: Topology) -> str:
    """aiosmtpd keeping each message as a file in the sink's maildir (``make stack``)."""
    entry = topology.smtp
    Path(entry.pidfile).parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "deploy.stack.smtp_sink", "--port", str(entry.port)]
    argv += ["--dir", entry.maildir]
    entry.pid = spawn_child(argv, log=entry.log, pidfile=entry.pidfile, cwd=str(REPO))

    def ready() -> bool:
        try:
            with socket.create_connection((LOOPBACK, entry.port), timeout=1) as sock:
                return sock.recv(3) == b"220"
        except OSError:
            return False

    _wait_until(ready, "the SMTP sink", entry.log, 20)
    return f"{entry.url}  pid {entry.pid}  (mail kept in {entry.maildir})"


if __name__ == "__main__":
    main()
