"""Settings that refuse mistakes: a misspelt variable, shared sessions over a database of the
host's own, a number out of its range or an unknown log level stop the start, every problem
named in one message, which the flask command and gunicorn print without a traceback."""

from __future__ import annotations

import dataclasses
import re

import pytest

from shop.config import (
    OTHER_VARIABLES,
    RANGES,
    ConfigError,
    Settings,
    known_variables,
)
from tests.support import ROOT

SERVERS = {
    "SHOP_DATABASE_URL": "postgresql://shop@db/shop",
    "SHOP_REDIS_URL": "redis://cache:6379/0",
    "SHOP_SECRET_KEY": "x" * 32,
}


def refused(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(environ)
    return str(raised.value)


def test_a_misspelt_variable_is_refused_naming_the_closest_setting():
    message = refused({**SERVERS, "SHOP_DATABSE_URL": "postgresql://shop@db2/shop"})
    assert "SHOP_DATABSE_URL is not a setting; did you mean SHOP_DATABASE_URL?" in message
    assert "did you mean SHOP_MAX_REQUESTS_JITTER?" in refused({"SHOP_MAX_REQUEST_JITTER": "5"})
    assert "SHOP_NONSENSE_XYZ is not a setting" in refused({"SHOP_NONSENSE_XYZ": "1"})


def test_variables_gunicorn_compose_and_the_tests_read_are_known():
    environ = {
        **SERVERS,
        **dict.fromkeys(OTHER_VARIABLES, "1"),
        "SHOP_TEST_POSTGRES_URL": "postgresql://x",
        "SHOP_TEST_ANYTHING_NEW": "1",
        "OTHER_PROGRAM_SETTING": "1",  # not SHOP_*: not ours to judge
    }
    assert Settings.from_env(environ).database_url == SERVERS["SHOP_DATABASE_URL"]


def test_every_variable_gunicorn_conf_reads_is_known():
    read = set(re.findall(r"\bSHOP_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / "gunicorn.conf.py").read_text()))
    assert {"SHOP_BIND", "SHOP_WORKERS", "SHOP_MAX_REQUESTS_JITTER"} <= read
    assert read - known_variables() == set()


def test_every_variable_the_deployments_and_docs_set_is_known():
    files = [
        "README.md",
        "Dockerfile",
        "docker-compose.yml",
        "deploy/aws/shop.yaml",
        "deploy/stack/stack.py",
        "bench/servers.py",
        *(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md")),
    ]
    refused_examples = {"SHOP_PER_PAGE_MAX", "SHOP_DATABSE_URL"}  # named to say they are refused
    for name in files:
        mentioned = set(re.findall(r"\bSHOP_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / name).read_text()))
        mentioned = {n for n in mentioned if not n.startswith("SHOP_TEST_")}
        assert mentioned - known_variables() - refused_examples == set(), name


@pytest.mark.parametrize("database", [None, "sqlite:////var/lib/shop/shop.db"])
def test_shared_sessions_over_a_database_of_this_host_are_refused(database):
    environ = {**SERVERS, "SHOP_DATABASE_URL": database}
    if database is None:
        del environ["SHOP_DATABASE_URL"]
    message = refused(environ)
    assert "SHOP_REDIS_URL is set" in message and "set SHOP_DATABASE_URL" in message
    assert Settings.from_env(SERVERS).redis_url == SERVERS["SHOP_REDIS_URL"]
    # A server database with the in-process fakeredis is one instance's choice: still allowed.
    alone = {k: v for k, v in SERVERS.items() if k != "SHOP_REDIS_URL"}
    assert Settings.from_env(alone).redis_url is None


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SHOP_CATALOGUE_CACHE_TTL", "-300", "must be at least 1"),
        ("SHOP_SESSION_IDLE_TIMEOUT", "0", "must be at least 1"),
        ("SHOP_ACCOUNT_CART_TTL", "-1", "must be at least 1"),
        ("SHOP_REAUTH_SECONDS", "0", "must be at least 1"),
        ("SHOP_MAX_LINE_QUANTITY", "0", "must be at least 1"),
        ("SHOP_MAX_CART_LINES", "-2", "must be at least 1"),
        ("SHOP_MAX_BODY_BYTES", "10", "must be at least 1024"),
        ("SHOP_CATALOGUE_CACHE_JITTER", "1", "must be at least 0 and below 1"),
        ("SHOP_CATALOGUE_CACHE_JITTER", "-0.1", "must be at least 0 and below 1"),
        ("SHOP_CATALOGUE_LOCAL_TTL", "-1", "must be at least 0"),
        ("SHOP_REDIS_SOCKET_TIMEOUT", "0", "must be positive"),
        ("SHOP_REPLICA_RETRY_AFTER", "nan", "must be positive"),
        ("SHOP_SMTP_TIMEOUT", "inf", "must be positive"),
        ("SHOP_DB_CONNECT_TIMEOUT", "0", "must be at least 1"),
        ("SHOP_TRUSTED_PROXIES", "-1", "must be at least 0"),
        ("SHOP_HSTS_SECONDS", "-1", "must be at least 0"),
        ("SHOP_LOGIN_FREE_FAILURES", "-1", "must be at least 0"),
        ("SHOP_PAYMENT_HOLD_SECONDS", "0", "must be at least 1"),
    ],
)
def test_a_number_out_of_its_range_is_refused(name, value, expected):
    assert f"{name} {expected}" in refused({**SERVERS, name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHOP_CATALOGUE_CACHE_JITTER", "0"),
        ("SHOP_CATALOGUE_CACHE_JITTER", "0.99"),
        ("SHOP_CATALOGUE_LOCAL_TTL", "0"),
        ("SHOP_HSTS_SECONDS", "0"),
        ("SHOP_MAX_LINE_QUANTITY", "1"),
        ("SHOP_REDIS_SOCKET_TIMEOUT", "0.05"),
    ],
)
def test_the_edges_of_a_range_are_accepted(name, value):
    Settings.from_env({**SERVERS, name: value})


def test_every_number_setting_has_a_range():
    numbers = {f.name for f in dataclasses.fields(Settings) if str(f.type) in {"int", "float"}}
    assert numbers - RANGES.keys() == set()
    for name in RANGES:
        assert getattr(Settings(), name) in RANGES[name], f"the default of {name} is out of range"


def test_the_log_level_and_the_environment_must_be_known_ones():
    assert "SHOP_LOG_LEVEL must be one of DEBUG, INFO" in refused({"SHOP_LOG_LEVEL": "verbose"})
    assert Settings.from_env({"SHOP_LOG_LEVEL": "debug"}).log_level == "debug"
    assert "SHOP_ENV must be one of production, development" in refused({"SHOP_ENV": "prod"})


def test_every_problem_is_reported_at_once():
    message = refused(
        {
            "SHOP_REDIS_URL": "redis://cache:6379/0",
            "SHOP_DATABSE_URL": "postgresql://shop@db/shop",
            "SHOP_CATALOGUE_CACHE_TTL": "-1",
            "SHOP_MAX_LINE_QUANTITY": "0",
            "SHOP_LOG_LEVEL": "loud",
            "SHOP_SEED_DEMO": "maybe",
        }
    )
    assert message.startswith("7 problems with the shop's settings:\n")
    for expected in [
        "SHOP_DATABSE_URL is not a setting; did you mean SHOP_DATABASE_URL?",
        "SHOP_SECRET_KEY is required",
        "SHOP_CATALOGUE_CACHE_TTL must be at least 1, not -1",
        "SHOP_MAX_LINE_QUANTITY must be at least 1, not 0",
        "SHOP_LOG_LEVEL must be one of",
        "SHOP_SEED_DEMO: not a boolean: 'maybe'",
        "SHOP_REDIS_URL is set",
    ]:
        assert f"\n  - {expected}" in message, expected


def test_settings_built_in_code_report_every_problem_too():
    with pytest.raises(ConfigError) as raised:
        Settings(max_line_quantity=0, catalogue_cache_ttl=-1, log_level="loud").validated()
    assert str(raised.value).startswith("3 problems")


def test_the_webhook_secret_is_derived_unless_given_and_a_short_one_is_refused():
    derived = Settings.from_env(SERVERS)
    assert derived.webhook_secret() == Settings.from_env(SERVERS).webhook_secret()
    assert (
        derived.webhook_secret()
        != Settings.from_env({**SERVERS, "SHOP_SECRET_KEY": "y" * 32}).webhook_secret()
    )
    given = Settings.from_env({**SERVERS, "SHOP_PAYMENT_WEBHOOK_SECRET": "w" * 20})
    assert given.webhook_secret() == "w" * 20 and "w" * 20 not in repr(given)
    short = refused({**SERVERS, "SHOP_PAYMENT_WEBHOOK_SECRET": "short"})
    assert "SHOP_PAYMENT_WEBHOOK_SECRET must be at least 16 characters" in short
