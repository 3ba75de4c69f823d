"""Prose that cannot drift: every setting is in README's table, every error code in
docs/api.md, every account route in README."""

from __future__ import annotations

import re

import pytest

from shop import errors
from shop.config import Settings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


SETTINGS = list(Settings.__dataclass_fields__)
ERRORS = sorted(
    {error.code: error for error in _subclasses(errors.ShopError)}.values(), key=lambda e: e.code
)


@pytest.mark.parametrize("name", SETTINGS)
def test_every_setting_is_in_the_readme(name):
    assert f"| `SHOP_{name.upper()}` |" in README


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.code)
def test_every_error_code_is_in_the_api_reference(error):
    assert f"`{error.code}`" in API


def test_every_account_page_and_endpoint_is_documented(app):
    documented = README + API
    for rule in app.url_map.iter_rules():
        pages = ("account.", "credentials.", "account_sessions.")
        if rule.endpoint.startswith(pages) and not rule.rule.startswith("/api/"):
            assert f"`{rule.rule}`" in README, rule.rule
        if "/api/" in rule.rule and ("account" in rule.rule or "password" in rule.rule):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)  # <id:x> -> {x}
            assert path.removeprefix("/api/v1") in documented, rule.rule
