"""Mail goes out through SMTP (a real aiosmtpd server in this process) or, without
SHOP_SMTP_URL, into the log; a server that fails raises MailNotSent, never hangs."""

from __future__ import annotations

import logging
import time

import pytest

from shop.config import ConfigError, Settings
from shop.mail import LogMailer, MailNotSent, Message, SmtpMailer, SmtpServer, mailer_from_settings
from tests.support import free_port

MESSAGE = Message(
    to="ada@example.com",
    subject="Confirm your address",
    body="Follow https://shop.example.com/verify/abc to confirm.\nÜmlauts survive.",
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", SmtpServer("mail.example.com", 25)),
        (
            "smtp://ada:s%40cret%3A1@mail.example.com:2525?starttls=1",
            SmtpServer(
                "mail.example.com", 2525, starttls=True, username="ada", password="s@cret:1"
            ),
        ),
        ("smtp://mail.example.com?starttls=1", SmtpServer("mail.example.com", 587, starttls=True)),
        (
            "smtps://u:p@mail.example.com",
            SmtpServer("mail.example.com", 465, True, False, "u", "p"),
        ),
    ],
)
def test_smtp_url_format(url, expected):
    assert SmtpServer.from_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://mail.example.com", "must look like"),
        ("smtp://", "must look like"),
        ("smtp://mail.example.com?starttls=maybe", "starttls must be 0 or 1"),
        ("smtp://mail.example.com?tls=1", "unknown option 'tls'"),
        ("smtps://mail.example.com?starttls=1", "TLS already"),
        ("smtp://mail.example.com:99999", "SHOP_SMTP_URL"),
    ],
)
def test_a_malformed_smtp_url_stops_the_start(url, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"SHOP_SMTP_URL": url})


def test_settings_read_mail_variables_and_mask_the_smtp_password():
    settings = Settings.from_env(
        {
            "SHOP_SMTP_URL": "smtp://ada:hunter2hunter2@mail.example.com:587?starttls=1",
            "SHOP_MAIL_FROM": "Shop <shop@example.com>",
            "SHOP_SMTP_TIMEOUT": "2.5",
            "SHOP_PUBLIC_URL": "https://shop.example.com",
            "SHOP_PASSWORD_RESET_TTL": "600",
            "SHOP_EMAIL_LINK_TTL": "7200",
        }
    )
    assert (settings.mail_from, settings.smtp_timeout) == ("Shop <shop@example.com>", 2.5)
    assert (settings.password_reset_ttl, settings.email_link_ttl) == (600, 7200)
    assert "hunter2hunter2" not in repr(settings)
    assert "smtp://ada:***@mail.example.com:587?starttls=1" in repr(settings)
    mailer = mailer_from_settings(settings)
    assert isinstance(mailer, SmtpMailer) and mailer.timeout == 2.5
    assert mailer.server.password == "hunter2hunter2"


@pytest.mark.parametrize(
    ("name", "value"),
    [("SHOP_PUBLIC_URL", "shop.example.com"), ("SHOP_PASSWORD_RESET_TTL", "0")],
)
def test_bad_account_settings_are_refused(name, value):
    with pytest.raises(ConfigError):
        Settings.from_env({name: value})


def test_smtp_mailer_delivers_plain_text_with_an_html_rendering(mailbox):
    mailer = SmtpMailer(SmtpServer.from_url(mailbox.url), "Shop <shop@example.com>", timeout=5)
    mailer.send(MESSAGE)
    received = mailbox.last("ada@example.com")
    assert received.sender == "shop@example.com"
    assert received.recipients == ["ada@example.com"]
    assert received.subject == "Confirm your address"
    assert received.message["From"] == "Shop <shop@example.com>"
    assert received.message.get_content_type() == "multipart/alternative"
    assert received.body.rstrip("\n") == MESSAGE.body
    html_part = received.message.get_body(preferencelist=("html",)).get_content()
    link = "https://shop.example.com/verify/abc"
    assert f'<a href="{link}">{link}</a>' in html_part
    assert "Ümlauts survive." in html_part
    assert received.message["Message-ID"].endswith("@example.com>")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_message_sent_twice_keeps_its_message_id_and_its_html(mailbox):
    """The outbox gives each mail one Message-ID, so a retry is recognisably the same mail."""
    mailer = SmtpMailer(SmtpServer.from_url(mailbox.url), "shop@example.com", timeout=5)
    message = Message("ada@example.com", "Hi", "Text", html="<p>Own HTML</p>", message_id="<k@x>")
    mailer.send(message)
    mailer.send(message)
    first, second = mailbox.to("ada@example.com")
    assert first.message["Message-ID"] == second.message["Message-ID"] == "<k@x>"
    assert "<p>Own HTML</p>" in second.message.get_body(preferencelist=("html",)).get_content()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_failed_login_never_logs_the_password(caplog):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from tests.support import Mailbox

    controller = Controller(
        Mailbox(),
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=lambda *args: AuthResult(success=False),
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    try:
        url = f"smtp://ada:hunter2secret@127.0.0.1:{controller.port}"
        with caplog.at_level(logging.DEBUG), pytest.raises(MailNotSent):
            SmtpMailer(SmtpServer.from_url(url), "shop@example.com", timeout=0.5).send(MESSAGE)
    finally:
        controller.stop()
    assert "not sent" in caplog.text
    assert "hunter2secret" not in caplog.text and "ada@example.com" not in caplog.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_mailer_logs_in_with_the_url_s_credentials():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    from tests.support import Mailbox

    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s@cret:1")

    mailbox = Mailbox()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,  # a test server on loopback without a certificate
    )
    controller.start()
    try:
        url = f"smtp://ada:s%40cret%3A1@127.0.0.1:{controller.port}"
        SmtpMailer(SmtpServer.from_url(url), "shop@example.com", timeout=5).send(MESSAGE)
        wrong = f"smtp://ada:nope@127.0.0.1:{controller.port}"
        with pytest.raises(MailNotSent):
            SmtpMailer(SmtpServer.from_url(wrong), "shop@example.com", timeout=1).send(MESSAGE)
    finally:
        controller.stop()
    assert logins == [("ada", "s@cret:1"), ("ada", "nope")]
    assert len(mailbox.to("ada@example.com")) == 1


def test_a_refusing_server_raises_mail_not_sent(mailbox, caplog):
    mailbox.refuse = "554 5.7.1 rejected"
    mailer = SmtpMailer(SmtpServer.from_url(mailbox.url), "shop@example.com", timeout=5)
    with caplog.at_level(logging.ERROR, logger="shop.mail"), pytest.raises(MailNotSent):
        mailer.send(MESSAGE)
    # The log names the message and the recipient's domain, never the whole address.
    assert "not sent" in caplog.text and "to @example.com" in caplog.text
    assert "ada@example.com" not in caplog.text and "<" in caplog.text  # the Message-ID
    assert mailbox.to("ada@example.com") == []


def test_an_unreachable_server_fails_fast():
    url = f"smtp://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(MailNotSent):
        SmtpMailer(SmtpServer.from_url(url), "shop@example.com", timeout=1).send(MESSAGE)
    assert time.monotonic() - started < 2


def test_a_server_that_never_answers_is_given_up_after_the_timeout():
    import socket

    with socket.socket() as silent:  # accepts connections (backlog) but never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"smtp://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(MailNotSent):
            SmtpMailer(SmtpServer.from_url(url), "shop@example.com", timeout=0.5).send(MESSAGE)
        assert time.monotonic() - started < 1.5


def test_without_smtp_url_mail_goes_to_the_log(caplog):
    mailer = mailer_from_settings(Settings())
    assert isinstance(mailer, LogMailer)
    with caplog.at_level(logging.WARNING, logger="shop.mail"):
        mailer.send(MESSAGE)
    assert "https://shop.example.com/verify/abc" in caplog.text
    assert "To: ada@example.com" in caplog.text


def test_the_html_rendering_escapes_the_text():
    from shop.mail import html_alternative

    rendered = html_alternative('Hi <b>"you"</b> & co: http://x.example/a?b=1&c=<2>\nbye')
    assert "<b>" not in rendered and "&lt;b&gt;&quot;you&quot;&lt;/b&gt; &amp; co" in rendered
    assert '<a href="http://x.example/a?b=1&amp;c=">http://x.example/a?b=1&amp;c=</a>' in rendered
    assert "&lt;2&gt;\nbye" in rendered
