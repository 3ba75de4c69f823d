"""shop: a web shop whose instances keep no per-user state."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings
from .services import Services, build_services
from .session_ids import SessionIds
from .web.session_interface import RedisSessionInterface

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("shop")


class ShopFlask(Flask):
    """Flask, remembering which of its views and hooks are coroutines: Flask asks
    ``inspect.iscoroutinefunction`` for every hook and view of every request, a tenth of a
    warm page's own cost, about functions that never change."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync_callables: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        try:
            return self._sync_callables[func]
        except KeyError:
            made = self._sync_callables[func] = super().ensure_sync(func)
            return made
        except TypeError:  # an unhashable callable: ask every time, as Flask does
            return super().ensure_sync(func)


def create_app(config: Settings | Mapping[str, Any] | None = None, **kwargs: Any) -> Flask:
    """Build an app from ``SHOP_*`` variables, a :class:`Settings`, or overrides of either.

    ``redis_client`` (keyword) hands in an existing Redis client, so two apps in one test can
    share a fakeredis server as two instances share a real one.
    """
    settings = config if isinstance(config, Settings) else Settings.from_env(**dict(config or {}))
    app = ShopFlask(
        __name__,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
        instance_path=settings.instance_path or str(ROOT / "instance"),
    )
    _configure_logging(settings)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if settings.embedded and settings.secret_key is None:
        import secrets

        settings = settings.replace(secret_key=secrets.token_urlsafe(32))
    if settings.instance_name is None:
        settings = settings.replace(instance_name=settings.opaque_instance_name())
        log.info("this instance answers as X-Served-By: %s", settings.instance_name)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SESSION_COOKIE_NAME=settings.session_cookie_name,
    )
    json_provider = DefaultJSONProvider(app)
    json_provider.sort_keys = False  # keep documents in the order the code builds them
    app.json = json_provider
    services = build_services(settings, app.instance_path, redis_client=kwargs.get("redis_client"))
    app.extensions["shop"] = services
    from .order_mail import OrderMails
    from .web.ordering import order_links

    # A paid or shipped order's mail goes into the outbox in the status change's transaction.
    services.order_listeners.append(
        OrderMails(links=order_links(settings), currency=settings.currency)
    )
    assert settings.secret_key is not None  # required outside embedded; generated above inside
    app.session_interface = sessions = RedisSessionInterface(
        services.sessions,
        SessionIds(settings.secret_key, max_age=settings.session_absolute_lifetime),
        cookie_name=settings.session_cookie_name,
        secure=settings.cookie_secure,
        max_age=settings.session_absolute_lifetime,
    )
    if services.catalogue.changes is None:
        # Warm pages answered before Flask (inside the metrics, which count them). Not in the
        # embedded mode, whose catalogue checks its SQLite file before each lookup.
        from .web.cached_pages import WarmPages

        # Flask's documented way to add WSGI middleware; mypy sees a method replaced.
        app.wsgi_app = WarmPages(app.wsgi_app, services.pages, sessions, app.extensions)  # type: ignore[method-assign]
    if settings.metrics_port is not None:
        from . import metrics

        metrics.install(app, services)  # inside SHOP_INSTRUMENT's middleware: shares its counts
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            log.warning(
                "SHOP_METRICS_PORT is served by gunicorn's master (gunicorn.conf.py): this "
                "process records metrics but serves none"
            )
    if settings.instrument:
        from . import instrumentation

        engines = [services.engines.primary, *(r.engine for r in services.engines.replicas)]
        instrumentation.install(engines)
        # Flask's documented way to add WSGI middleware; mypy sees a method replaced.
        app.wsgi_app = instrumentation.CountingMiddleware(app.wsgi_app)  # type: ignore[method-assign]

    from .web import register

    register(app)
    # Each process (each gunicorn worker, after its fork) delivers mail and expires holds.
    app.before_request(services.start_background)

    from .cli import register_cli

    register_cli(app)

    if settings.trusted_proxies > 0:
        n = settings.trusted_proxies
        proxied = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n, x_prefix=n)
        app.wsgi_app = proxied  # type: ignore[method-assign]  # as above

    if not settings.embedded and settings.smtp_url is None:
        log.warning(
            "SHOP_SMTP_URL is not set: mails are written to the log instead, with their links "
            "(password resets): fine for development, not for production."
        )
    if not settings.embedded:
        log.warning(
            "payments go to the built-in TEST provider (/test-payments/...): anyone can mark an "
            "order paid there. Fine for staging and CI; a real adapter is needed to take money "
            "(docs/payments.md)."
        )
    if not settings.embedded and settings.public_url is None:
        log.warning(
            "SHOP_PUBLIC_URL is not set: links in mails (password resets) follow each request's "
            "Host header. Set it to the shop's public origin, e.g. https://shop.example.com."
        )
    if settings.embedded:
        _prepare_embedded(services)
    elif settings.seed_demo:
        _prepare_demo(services)
    return app


def _prepare_embedded(services: Services) -> None:
    log.warning(
        "embedded mode: SQLite at %s and an in-process fakeredis. For ONE process only: "
        "sessions and carts live in this process. Set SHOP_DATABASE_URL, SHOP_REDIS_URL and "
        "SHOP_SECRET_KEY to run several instances.",
        services.engines.primary.url.render_as_string(hide_password=True),
    )
    if services.settings.seed_demo is not False:
        _prepare_demo(services)


def _prepare_demo(services: Services) -> None:
    from .migrate import upgrade
    from .seed import seed_demo_if_empty

    upgrade(services.engines.primary)
    seed_demo_if_empty(services.engines.primary, images=services.images)


def _configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if not root.handlers:
        if settings.log_format == "json":
            from .log_format import json_handler

            logging.basicConfig(level=settings.log_level.upper(), handlers=[json_handler()])
        else:
            logging.basicConfig(
                level=settings.log_level.upper(),
                format="%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
            )
    elif settings.log_format == "json":  # gunicorn's logconfig_dict made the handlers
        root.setLevel(settings.log_level.upper())
    from .web.middleware import RequestIdFilter

    for handler in root.handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
