"""The collaborators the views use, built once per app from the settings."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from .cart import CartStore
from .catalogue import Catalogue
from .catalogue_cache import CacheAside
from .config import Settings
from .db import Engines, SqliteChanges
from .mail import Mailer, mailer_from_settings
from .paging import Paging
from .redis_client import connect
from .sessions import SessionStore
from .throttle import RULES, HashSlots, Throttle


@dataclass
class Services:
    settings: Settings
    engines: Engines
    redis: redis.Redis
    sessions: SessionStore
    carts: CartStore
    catalogue: Catalogue
    throttle: Throttle
    hash_slots: HashSlots
    mailer: Mailer
    # Where account links read the time (their expiry); tests move it.
    clock: Callable[[], float] = field(default=time.time)

    def close(self) -> None:
        """Release connections and stop background work (tests build many apps)."""
        if self.catalogue.cache.local is not None:
            self.catalogue.cache.local.stop()
        if isinstance(self.catalogue.changes, SqliteChanges):
            self.catalogue.changes.close()
        self.engines.dispose()


def database_url(settings: Settings, instance_path: str) -> str:
    if settings.database_url:
        return settings.database_url
    os.makedirs(instance_path, exist_ok=True)
    return f"sqlite:///{os.path.join(instance_path, 'shop.db')}"


def build_services(
    settings: Settings, instance_path: str, *, redis_client: redis.Redis | None = None
) -> Services:
    engines = Engines.from_urls(
        database_url(settings, instance_path),
        settings.replica_urls,
        retry_after=settings.replica_retry_after,
        connect_timeout=settings.db_connect_timeout,
    )
    client = redis_client or connect(
        settings.redis_url, socket_timeout=settings.redis_socket_timeout
    )
    prefix = settings.redis_prefix
    return Services(
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
        catalogue=Catalogue(
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
        ),
        throttle=Throttle(
            client,
            prefix,
            {name: getattr(settings, f"limit_{name}") for name in RULES},
            free_failures=settings.login_free_failures,
        ),
        hash_slots=HashSlots(settings.password_hash_slots, settings.password_hash_queue),
        mailer=mailer_from_settings(settings),
    )
