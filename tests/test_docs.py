"""Prose that cannot drift: the accounts' settings are in README's table, their error codes in
docs/api.md, every account route in README.

(Only the accounts' own: several settings and codes that other work added on main, such as
SHOP_LIMIT_* or rate_limited, are not documented there yet; widen the lists once they are.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from shop import errors

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()


ACCOUNT_SETTINGS = [
    "smtp_url",
    "mail_from",
    "smtp_timeout",
    "public_url",
    "password_reset_ttl",
    "email_link_ttl",
]
ACCOUNT_ERRORS = [
    errors.WeakPassword,
    errors.InvalidCredentials,
    errors.InvalidToken,
    errors.WrongPassword,
    errors.AlreadyVerified,
    errors.DuplicateEmail,
    errors.MailUnavailable,
    errors.LoginRequired,
]


@pytest.mark.parametrize("name", ACCOUNT_SETTINGS)
def test_every_account_setting_is_in_the_readme(name):
    from shop.config import Settings

    assert name in Settings.__dataclass_fields__
    assert f"| `SHOP_{name.upper()}` |" in README


@pytest.mark.parametrize("error", ACCOUNT_ERRORS, ids=lambda e: e.code)
def test_every_account_error_code_is_in_the_api_reference(error):
    assert f"`{error.code}`" in API


def test_every_account_page_and_endpoint_is_documented(app):
    documented = README + API
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("account.", "credentials.")):
            assert f"`{rule.rule}`" in README, rule.rule
        if rule.endpoint.startswith("api.") and ("account" in rule.rule or "password" in rule.rule):
            assert rule.rule.removeprefix("/api/v1") in documented, rule.rule
