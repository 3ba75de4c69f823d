"""The stack's mail server: every instance sends to an SMTP sink that keeps each message as a
file a test can read (the stack itself runs only in tests/stack)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from deploy.stack.processes import _MARKERS
from deploy.stack.smtp_sink import read_mail
from deploy.stack.topology import APP_NAMES, COMPONENTS, Ports, Topology, _build_topology
from shop.config import Settings
from shop.mail import Message, SmtpMailer, SmtpServer
from tests.support import ROOT, free_port


def test_every_instance_sends_mail_to_the_stack_s_sink(tmp_path):
    ports = Ports.from_env({"STACK_PORT_BASE": "31000"})
    topology = _build_topology(tmp_path, ports)
    assert topology.smtp.port == ports.smtp == 31003
    assert len(set(ports.all().values())) == len(ports.all())
    assert topology.smtp.maildir == str(tmp_path / "mail")
    for name in APP_NAMES:
        env = topology.apps[name].env
        assert env["SHOP_SMTP_URL"] == "smtp://127.0.0.1:31003"
        Settings.from_env({k: v for k, v in env.items() if k.startswith("SHOP_")})  # valid
    assert COMPONENTS.index("smtp") < COMPONENTS.index("app1") and "smtp" in _MARKERS
    again = Topology.from_json(topology.to_json())
    assert again.smtp == topology.smtp


def test_a_topology_from_before_the_sink_still_loads(tmp_path):
    data = _build_topology(tmp_path, Ports.from_env({})).to_json()
    del data["smtp"]
    old = Topology.from_json(data)
    assert old.smtp.pid is None and old.smtp.port == old.redis.port + 1


def test_the_sink_keeps_each_message_as_a_file_a_test_reads(tmp_path):
    port = free_port()
    folder = tmp_path / "mail"
    sink = subprocess.Popen(
        [sys.executable, "-m", "deploy.stack.smtp_sink", "--port", str(port), "--dir", folder],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and sink.poll() is None, sink.stdout.read()
                time.sleep(0.05)
        mailer = SmtpMailer(SmtpServer.from_url(f"smtp://127.0.0.1:{port}"), "s@x.test", timeout=5)
        for n in (1, 2):
            mailer.send(
                Message("ada@example.com", f"Order {n}", "Thank you", message_id=f"<{n}@x>")
            )
        received = read_mail(folder)
    finally:
        os.kill(sink.pid, signal.SIGTERM)
        sink.wait(10)
    assert [m["Subject"] for m in received] == ["Order 1", "Order 2"]
    assert received[0]["Message-ID"] == "<1@x>" and received[1]["To"] == "ada@example.com"
    assert sink.returncode == 0
