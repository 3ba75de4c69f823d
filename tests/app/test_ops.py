"""What operators and browsers rely on: health endpoints, headers, proxies, configuration."""

from __future__ import annotations

import logging

import pytest

from shop.config import ConfigError, Settings


def test_healthz_and_readyz_answer_json(client):
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["status"] == "ok"
    ready = client.get("/readyz")
    body = ready.get_json()
    assert ready.status_code == 200
    assert body["status"] == "ready" and body["primary"]["ok"] and body["redis"]["ok"]
    assert body["replicas"] == {}


def test_every_response_names_the_instance_and_the_request(make_app):
    app = make_app(instance_name="web-7")
    response = app.test_client().get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Served-By"] == "web-7"
    assert response.headers["X-Request-ID"] == "abc-123"
    quiet = make_app(served_by_header=False).test_client().get("/healthz")
    assert "X-Served-By" not in quiet.headers


def test_security_headers_forbid_inline_scripts_and_framing(client):
    response = client.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert b"<script" not in response.data


def test_pages_escape_what_shoppers_type(client):
    page = client.get("/?q=<script>alert(1)</script>").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_forwarded_headers_are_trusted_only_from_configured_proxies(make_app, caplog):
    caplog.set_level(logging.DEBUG, logger="shop.access")
    headers = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    make_app().test_client().get("/healthz", headers=headers)
    assert "203.0.113.9" not in caplog.text
    make_app(trusted_proxies=1).test_client().get("/healthz", headers=headers)
    assert "203.0.113.9 GET /healthz 200" in caplog.text


def test_log_lines_carry_the_request_id(client, caplog):
    caplog.set_level(logging.DEBUG, logger="shop.access")
    client.get("/healthz", headers={"X-Request-ID": "trace-42"})
    assert any(getattr(r, "request_id", None) == "trace-42" for r in caplog.records)


def test_secret_key_is_required_outside_the_embedded_default():
    with pytest.raises(ConfigError, match="SHOP_SECRET_KEY"):
        Settings.from_env({"SHOP_DATABASE_URL": "postgresql://db/shop"})
    with pytest.raises(ConfigError, match="SHOP_SECRET_KEY"):
        Settings.from_env({"SHOP_REDIS_URL": "redis://cache"})
    assert Settings.from_env({}).embedded


def test_settings_come_from_the_environment():
    settings = Settings.from_env(
        {
            "SHOP_DATABASE_URL": "postgresql://db/shop",
            "SHOP_REPLICA_URLS": "postgresql://r1/shop, postgresql://r2/shop",
            "SHOP_SECRET_KEY": "x" * 32,
            "SHOP_SESSION_IDLE_TIMEOUT": "60",
            "SHOP_SESSION_COOKIE_SECURE": "false",
            "SHOP_CURRENCY": "USD",
        }
    )
    assert settings.replica_urls == ("postgresql://r1/shop", "postgresql://r2/shop")
    assert settings.session_idle_timeout == 60
    assert settings.cookie_secure is False
    assert Settings.from_env({"SHOP_DATABASE_URL": "x", "SHOP_SECRET_KEY": "y" * 20}).cookie_secure
    with pytest.raises(ConfigError, match="SHOP_SESSION_IDLE_TIMEOUT"):
        Settings.from_env({"SHOP_SESSION_IDLE_TIMEOUT": "soon"})


def test_page_sizes_and_the_result_window_come_from_the_environment():
    base = {"SHOP_DATABASE_URL": "postgresql://db/shop", "SHOP_SECRET_KEY": "x" * 32}
    defaults = Settings.from_env(base)
    assert defaults.per_page_choices == (12, 24, 48, 96) and defaults.per_page_default == 24
    assert defaults.max_result_window == 10_000
    settings = Settings.from_env(
        {
            **base,
            "SHOP_PER_PAGE_CHOICES": "10, 20,50",
            "SHOP_PER_PAGE_DEFAULT": "20",
            "SHOP_MAX_RESULT_WINDOW": "500",
        }
    )
    assert settings.per_page_choices == (10, 20, 50) and settings.max_result_window == 500
    for wrong, message in [
        ({"SHOP_PER_PAGE_DEFAULT": "30"}, "SHOP_PER_PAGE_DEFAULT must be one of"),
        ({"SHOP_PER_PAGE_CHOICES": "0,24"}, "SHOP_PER_PAGE_CHOICES"),
        ({"SHOP_PER_PAGE_CHOICES": "twelve"}, "SHOP_PER_PAGE_CHOICES"),
        ({"SHOP_MAX_RESULT_WINDOW": "50"}, "SHOP_MAX_RESULT_WINDOW"),
        ({"SHOP_PER_PAGE_MAX": "100"}, "SHOP_PER_PAGE_MAX is no longer read"),
    ]:
        with pytest.raises(ConfigError, match=message):
            Settings.from_env({**base, **wrong})


def test_prices_show_two_decimals_and_the_configured_currency(make_app):
    page = make_app(currency="USD").test_client().get("/products/1").get_data(as_text=True)
    assert "$19.99" in page
    page = make_app(currency="CHF").test_client().get("/products/1").get_data(as_text=True)
    assert "19.99 CHF" in page


def test_the_embedded_default_needs_nothing_and_says_it_is_for_one_process(tmp_path, caplog):
    from shop import create_app

    settings = Settings.from_env({}, instance_path=str(tmp_path))
    assert settings.embedded and settings.secret_key is None
    app = create_app(settings)
    assert "ONE process only" in caplog.text
    assert (tmp_path / "shop.db").exists()
    client = app.test_client()
    assert client.get("/api/v1/products").get_json()["total"] == 96  # the demo catalogue
    assert client.get("/readyz").get_json()["status"] == "ready"
    in_stock = next(p for p in client.get("/api/v1/products").get_json()["items"] if p["stock"])
    token = client.get("/api/v1/session").get_json()["csrf_token"]
    added = client.post(
        "/api/v1/cart/items",
        json={"product_id": in_stock["id"], "quantity": 1},
        headers={"X-CSRF-Token": token},
    )
    assert added.status_code == 200 and added.get_json()["count"] == 1
    cookie = app.test_client().get("/login").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" not in cookie  # plain http://127.0.0.1:5000
    app.extensions["shop"].close()
