"""Prose that cannot drift: every setting is in README's table, every error code in
docs/api.md, every account route in README."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shop import errors
from shop.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
API = (ROOT / "docs" / "api.md").read_text()


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Settings)])
def test_every_setting_is_in_the_readme(name):
    assert f"SHOP_{name.upper()}" in README


def _codes() -> list[str]:
    found = set()
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.ShopError):
            found.add(value.code)
    return sorted(found)


@pytest.mark.parametrize("code", _codes())
def test_every_error_code_is_in_the_api_reference(code):
    assert f"`{code}`" in API


def test_every_account_page_and_endpoint_is_documented(app):
    documented = README + API
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("account.", "credentials.")):
            assert f"`{rule.rule}`" in README, rule.rule
        if rule.endpoint.startswith("api.") and ("account" in rule.rule or "password" in rule.rule):
            assert rule.rule.removeprefix("/api/v1") in documented, rule.rule
