"""The collaborators the views use, built once per app from the settings."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import Engine

from .background import ProcessLoop
from .cart import CartStore
from .catalogue import Catalogue
from .catalogue_cache import CacheAside
from .config import Settings
from .db import Engines, SqliteChanges, pool_sizes
from .image_storage import ImageStore, store_from_settings
from .mail import Mailer, mailer_from_settings, sender_domain
from .order_lifecycle import Listener, expire_overdue, utcnow
from .outbox import Delivery, MailWorker, RetryPolicy
from .page_cache import PageCache, render_version
from .paging import Paging
from .payment_test_provider import TestProvider
from .payments import PaymentProvider
from .redis_client import connect
from .sessions import SessionStore
from .throttle import RULES, HashSlots, Throttle

PACKAGE = Path(__file__).resolve().parent


@dataclass
class Services:
    settings: Settings
    engines: Engines
    redis: redis.Redis
    sessions: SessionStore
    carts: CartStore
    catalogue: Catalogue
    # Rendered catalogue pages, kept in the catalogue's cache and dropped with it.
    pages: PageCache
    # Product images' variants (shop/image_storage.py): the database, or S3.
    images: ImageStore
    throttle: Throttle
    hash_slots: HashSlots
    mailer: Mailer
    mail_worker: MailWorker
    # The payment providers by name (the webhook's path names one) and the one checkout uses.
    payment_providers: dict[str, PaymentProvider]
    payment_provider: PaymentProvider
    # Expires unpaid orders past their hold: any instance may, each order expires once
    # (shop.order_lifecycle.expire_overdue); checkout, the order page and
    # ``flask --app shop order expire`` sweep too.
    hold_sweeper: ProcessLoop
    # Called inside the transaction of every order status change (shop.order_lifecycle): the
    # mail outbox registers here (create_app).
    order_listeners: list[Listener] = field(default_factory=list)
    # Where account links and payment holds read the time; tests move it.
    clock: Callable[[], float] = field(default=time.time)

    def close(self) -> None:
        """Release connections and stop background work (tests build many apps)."""
        if self.catalogue.cache.local is not None:
            self.catalogue.cache.local.stop()
        for loop in (self.mail_worker, self.hold_sweeper):
            loop.stop()
        if isinstance(self.catalogue.changes, SqliteChanges):
            self.catalogue.changes.close()
        self.engines.dispose()

    def start_background(self) -> None:
        """This process's background loops (on its first request, and again after a fork)."""
        if self.settings.mail_worker:
            self.mail_worker.ensure_running()
        self.hold_sweeper.ensure_running()

    def mail_delivery(self, engine: Engine | None = None) -> Delivery:
        """Delivery of the outbox's mail on ``engine`` (default: the primary)."""
        return mail_delivery(self.settings, engine or self.engines.primary, self.mailer)


def database_url(settings: Settings, instance_path: str) -> str:
    if settings.database_url:
        return settings.database_url
    os.makedirs(instance_path, exist_ok=True)
    return f"sqlite:///{os.path.join(instance_path, 'shop.db')}"


def mail_delivery(settings: Settings, engine: Engine, mailer: Mailer) -> Delivery:
    return Delivery(
        engine,
        mailer,
        RetryPolicy(
            attempts=settings.mail_retry_attempts,
            delay=settings.mail_retry_delay,
            max_delay=settings.mail_retry_max_delay,
        ),
        domain=sender_domain(settings.mail_from) or "localhost",
        # A send is a handful of SMTP exchanges, each bounded by the timeout: a claim outlives it.
        lease=max(60.0, 30 * settings.smtp_timeout),
    )


def build_services(
    settings: Settings, instance_path: str, *, redis_client: redis.Redis | None = None
) -> Services:
    engines = Engines.from_urls(
        database_url(settings, instance_path),
        settings.replica_urls,
        retry_after=settings.replica_retry_after,
        connect_timeout=settings.db_connect_timeout,
        pool=pool_sizes(settings.threads, pool_timeout=settings.db_pool_timeout),
    )
    client = redis_client or connect(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        cluster=settings.redis_cluster,
    )
    prefix = settings.redis_prefix
    mailer = mailer_from_settings(settings)

    def worker_delivery() -> Delivery:
        # The primary's pool: its claims borrow a connection for milliseconds (pool_sizes).
        return mail_delivery(settings, engines.primary, mailer)

    assert settings.secret_key is not None  # create_app generates one for the embedded mode
    # The provider reads the services' clock (bound below), which tests may move.
    test_provider = TestProvider(
        settings.webhook_secret(),
        f"test-payment-id:{settings.secret_key}",
        clock=lambda: services.clock(),
    )
    catalogue = Catalogue(
        engines,
        CacheAside(
            client,
            f"{prefix}cat:",
            ttl=settings.catalogue_cache_ttl,
            jitter=settings.catalogue_cache_jitter,
            local_ttl=settings.catalogue_local_ttl,
        ),
        Paging(
            per_page_choices=settings.per_page_choices,
            per_page_default=settings.per_page_default,
            max_result_window=settings.max_result_window,
        ),
        # An in-process Redis hears no other process's invalidations: the CLI writes the
        # same SQLite file from a process of its own.
        changes=SqliteChanges.of(engines.primary) if settings.redis_url is None else None,
    )
    services = Services(
        settings=settings,
        engines=engines,
        redis=client,
        sessions=SessionStore(
            client,
            prefix,
            idle_timeout=settings.session_idle_timeout,
            absolute_lifetime=settings.session_absolute_lifetime,
        ),
        carts=CartStore(
            client,
            prefix,
            visitor_ttl=settings.session_idle_timeout,
            account_ttl=settings.account_cart_ttl,
            max_line_quantity=settings.max_line_quantity,
            max_lines=settings.max_cart_lines,
        ),
        catalogue=catalogue,
        pages=PageCache(
            catalogue.cache,
            render_version(
                (
                    settings.currency,
                    settings.image_public_base_url,
                    settings.max_line_quantity,
                    settings.per_page_default,
                    settings.per_page_choices,
                    settings.max_result_window,
                ),
                PACKAGE,
                PACKAGE.parent / "templates",
            ),
        ),
        images=store_from_settings(settings, engines),
        throttle=Throttle(
            client,
            prefix,
            {name: getattr(settings, f"limit_{name}") for name in RULES},
            free_failures=settings.login_free_failures,
        ),
        hash_slots=HashSlots(settings.password_hash_slots, settings.password_hash_queue),
        mailer=mailer,
        mail_worker=MailWorker(worker_delivery, poll=settings.mail_poll_seconds),
        payment_providers={test_provider.name: test_provider},
        payment_provider=test_provider,
        hold_sweeper=ProcessLoop(
            lambda _stop: sweep_holds(services),
            interval=min(60.0, settings.payment_hold_seconds / 4),
            name="shop-hold-sweeper",
        ),
    )
    return services


def sweep_holds(services: Services) -> None:
    """Expire unpaid orders past their hold; refresh the catalogue for the stock that returned."""
    restocked = expire_overdue(
        services.engines.primary,
        now=utcnow(services.clock),
        listeners=services.order_listeners,
    )
    if restocked:
        services.catalogue.invalidate(restocked)
