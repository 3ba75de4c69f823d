"""The settings a cloud deployment adds: the Redis AUTH token on its own (SHOP_REDIS_PASSWORD,
from a secret store), secrets kept out of logs, and a Redis client that verifies TLS and rides
over a failover. The real servers are in tests/integration/test_cloud_connections.py."""

from __future__ import annotations

import pytest
from redis.connection import parse_url
from redis.exceptions import ReadOnlyError

from shop.config import ConfigError, Settings
from shop.redis_client import FailFastConnection, FailFastSSLConnection, connect

SECRET = "x" * 32
TOKEN = "tok:en/with@odd%chars+and=more"


def settings(**environ: str) -> Settings:
    """Settings from these variables, with a server database (Redis needs one beside it)."""
    base = {"SHOP_SECRET_KEY": SECRET, "SHOP_DATABASE_URL": "postgresql://shop@db/shop"}
    return Settings.from_env({**base, **environ})


def test_the_redis_password_is_merged_into_the_url_and_survives_any_character():
    url = settings(
        SHOP_REDIS_URL="rediss://master.shop.abc123.euw1.cache.amazonaws.com:6379/0",
        SHOP_REDIS_PASSWORD=TOKEN,
    ).redis_url
    assert url.startswith("rediss://:tok%3Aen%2Fwith%40odd%25chars%2Band%3Dmore@master.shop.")
    parsed = parse_url(url)
    assert parsed["password"] == TOKEN
    assert (parsed["host"], parsed["port"], parsed["db"]) == (
        "master.shop.abc123.euw1.cache.amazonaws.com",
        6379,
        0,
    )


def test_the_merge_keeps_a_user_name_and_the_url_s_options():
    url = settings(
        SHOP_REDIS_URL="rediss://shop@cache:6379/1?ssl_ca_certs=/etc/ca.pem",
        SHOP_REDIS_PASSWORD="s3cret",
    ).redis_url
    assert url == "rediss://shop:s3cret@cache:6379/1?ssl_ca_certs=/etc/ca.pem"


def test_the_password_may_be_given_twice_only_if_it_is_the_same():
    same = settings(SHOP_REDIS_URL="redis://:s3cret@cache/0", SHOP_REDIS_PASSWORD="s3cret")
    assert same.redis_url == "redis://:s3cret@cache/0"
    assert same.replace(redis_prefix="other:").redis_url == same.redis_url  # merges once
    with pytest.raises(ConfigError, match="give it once"):
        settings(SHOP_REDIS_URL="redis://:other@cache/0", SHOP_REDIS_PASSWORD="s3cret")


def test_a_redis_password_needs_a_redis_url():
    with pytest.raises(ConfigError, match="SHOP_REDIS_PASSWORD needs SHOP_REDIS_URL"):
        Settings.from_env({"SHOP_REDIS_PASSWORD": "s3cret"})
    with pytest.raises(ConfigError, match="redis:// or rediss://"):
        settings(SHOP_REDIS_URL="unix:///run/redis.sock", SHOP_REDIS_PASSWORD="s3cret")
    assert settings(SHOP_REDIS_URL="redis://cache/0", SHOP_REDIS_PASSWORD="").redis_url == (
        "redis://cache/0"
    )


def test_settings_never_show_a_secret_in_their_repr():
    shown = repr(
        settings(
            SHOP_DATABASE_URL="postgresql://shop:dbpass@db/shop",
            SHOP_REPLICA_URLS="postgresql://shop:dbpass@r1/shop,postgresql://shop@r2/shop",
            SHOP_REDIS_URL="rediss://cache:6379/0",
            SHOP_REDIS_PASSWORD=TOKEN,
        )
    )
    for secret in (SECRET, "dbpass", TOKEN, "tok%3Aen"):
        assert secret not in shown
    assert "secret_key='***'" in shown and "redis_password='***'" in shown
    assert "rediss://:***@cache:6379/0" in shown
    assert "postgresql://shop@r2/shop" in shown  # what is not secret stays readable


def test_a_tls_client_verifies_the_certificate_and_host_name_unless_the_url_says_otherwise():
    client = connect("rediss://cache:6379/0")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is FailFastSSLConnection
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_check_hostname"]) == ("required", True)
    relaxed = connect("rediss://cache:6379/0?ssl_check_hostname=false")
    assert relaxed.connection_pool.connection_kwargs["ssl_check_hostname"] is False
    plain = connect("redis://cache:6379/0")
    assert plain.connection_pool.connection_class is FailFastConnection
    assert "ssl_cert_reqs" not in plain.connection_pool.connection_kwargs


def test_the_client_reconnects_on_a_refused_write_and_keeps_idle_connections_alive():
    kwargs = connect("redis://cache:6379/0").connection_pool.connection_kwargs
    assert ReadOnlyError in kwargs["retry_on_error"]  # the old primary, now a replica
    assert kwargs["socket_keepalive"] is True
    assert kwargs["health_check_interval"] > 0
