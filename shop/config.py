"""The shop's settings: one typed object, read from ``SHOP_*`` environment variables.

Every default lives here, so the embedded mode (no environment at all) is visible in one
place: SQLite next to the instance folder and an in-process fakeredis.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import click
import limits


class ConfigError(RuntimeError, click.ClickException):
    """The environment asks for something the shop cannot run with.

    Its message names every problem found, one a line. It is a ``ClickException`` so that the
    ``flask`` command prints it as ``Error: ...`` instead of a traceback, and a ``RuntimeError``,
    which gunicorn's master prints the same way (``on_starting`` in gunicorn.conf.py).
    """

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)

    def __str__(self) -> str:
        return self.message

    @classmethod
    def of(cls, problems: list[str]) -> ConfigError:
        if len(problems) == 1:
            return cls(problems[0])
        listed = "".join(f"\n  - {problem}" for problem in problems)
        return cls(f"{len(problems)} problems with the shop's settings:{listed}")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {value!r} (use 1/0, true/false, yes/no or on/off)")


@dataclass(frozen=True)
class Range:
    """The values a number setting may take: ``low`` up (``low`` itself excluded when
    ``positive``), below ``below`` when given."""

    low: float
    below: float | None = None
    positive: bool = False

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value) or value < self.low or (self.positive and value == self.low):
            return False
        return self.below is None or value < self.below

    def __str__(self) -> str:
        if self.below is not None:
            return f"at least {self.low:g} and below {self.below:g}"
        return "positive" if self.positive else f"at least {self.low:g}"


_POSITIVE = Range(0, positive=True)
_AT_LEAST_0 = Range(0)
_AT_LEAST_1 = Range(1)


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Field names map to ``SHOP_<NAME>`` variables."""

    # Storage. None means the embedded default (SQLite file / in-process fakeredis).
    # Where the embedded SQLite file lives (default: instance/ next to the package).
    instance_path: str | None = None
    database_url: str | None = None
    replica_urls: tuple[str, ...] = ()
    redis_url: str | None = None
    # The Redis AUTH token (ElastiCache) or requirepass, given on its own so it can come from a
    # secret store while the URL stays plain configuration; merged into ``redis_url``. The
    # database's password has no setting: libpq reads ``PGPASSWORD`` itself (docs/deploy.md).
    redis_password: str | None = field(default=None, repr=False)
    redis_prefix: str = "shop:"
    # A Redis Cluster (ElastiCache cluster mode): SHOP_REDIS_URL names one of its nodes (its
    # configuration endpoint); a redis+cluster:// or rediss+cluster:// URL says the same.
    redis_cluster: bool = False
    # Seconds a replica that failed is skipped before it is tried again.
    replica_retry_after: float = 5.0
    db_connect_timeout: int = 3
    redis_socket_timeout: float = 1.0
    # Threads per gunicorn worker (gunicorn.conf.py reads SHOP_THREADS too): each database pool
    # holds that many connections and no more (shop.db.pool_sizes); a request that finds them
    # all taken waits db_pool_timeout seconds, then gets a 503.
    threads: int = 4
    db_pool_timeout: float = 3.0

    secret_key: str | None = field(default=None, repr=False)
    # "production" or "development"; development turns off the Secure cookie flag.
    env: str = "production"

    # Session cookie and lifetimes (seconds).
    session_cookie_name: str = "shop_sid"
    session_cookie_secure: bool | None = None  # None: on, except in development/embedded
    session_idle_timeout: int = 2 * 3600
    session_absolute_lifetime: int = 7 * 24 * 3600
    # Seconds after the password was last entered in a session before it is asked for again
    # for a sensitive change (shipping to an address no earlier order went to).
    reauth_seconds: int = 900
    # Seconds after the password was last entered before the back office (/admin) asks for it
    # again, for every page and action there.
    admin_reauth_seconds: int = 3600
    account_cart_ttl: int = 30 * 24 * 3600

    # Catalogue cache.
    catalogue_cache_ttl: int = 300
    catalogue_cache_jitter: float = 0.1
    # Longest life of a catalogue entry in an instance's own memory (0: no in-process tier).
    # Changes reach every instance's memory at once by Redis pub/sub; this only bounds an entry
    # should that fail silently.
    catalogue_local_ttl: float = 30.0
    # Catalogue pages for anonymous visitors (no session) are the same bytes for everyone and
    # say so: `Cache-Control: public, max-age=0, s-maxage=<this>,
    # stale-while-revalidate=<stale>`, for a shared cache in front (shop/web/cached_pages.py).
    page_edge_seconds: int = 10
    page_edge_stale_seconds: int = 30
    # Grid pages: the page sizes a client may ask for (anything else is refused, so each page
    # has one cache entry), the size when none is asked for, and how deep a listing can be
    # paged (page x per_page at most this many results; deeper OFFSETs are refused).
    per_page_choices: tuple[int, ...] = (12, 24, 48, 96)
    per_page_default: int = 24
    max_result_window: int = 10_000

    # Rate rules per client address, shared by all instances through Redis (the `limits`
    # notation: "10/minute;60/hour"; "" turns a rule off). Checked before any password hash.
    limit_login: str = "10/minute;60/hour"
    limit_signup: str = "5/minute;20/hour"
    limit_reset: str = "5/minute;20/hour"
    limit_cart: str = "60/minute"
    limit_new_cart: str = "20/minute;100/hour"
    limit_search: str = "60/minute"  # counted only for searches that miss the cache
    # Failed logins allowed without waiting; then each next try waits 1, 2, 4 ... seconds
    # (at most 300), and an account takes at most 100 failures an hour (ASVS 2.2.1).
    login_free_failures: int = 5
    # Password hashes (scrypt, ~100 ms of CPU each) at once per process, and how many more may
    # wait for one; beyond that a login is told to retry instead of holding a thread.
    password_hash_slots: int = 1
    password_hash_queue: int = 2

    # Input limits.
    max_line_quantity: int = 99
    max_cart_lines: int = 50  # distinct products in one cart
    max_body_bytes: int = 64 * 1024

    # Back office: the largest product image staff may upload, and the stock below which a
    # product is "low" when it has no threshold of its own.
    image_max_bytes: int = 5 * 1000 * 1000
    low_stock_default: int = 5
    # Where product images are kept (shop/image_storage.py): "database" (the shop's own
    # database, every topology) or "s3" (a bucket; region and credentials from boto3's chain).
    # The endpoint is for an S3-compatible server (MinIO, a test stand-in). image_public_base_url
    # makes pages link images at <url>/<sha256>.webp (a CDN, or the bucket behind one) instead of
    # the shop's own /images/.
    image_storage: str = "database"
    image_s3_bucket: str | None = None
    image_s3_prefix: str = ""
    image_s3_endpoint_url: str | None = None
    image_public_base_url: str | None = None

    currency: str = "EUR"

    # Accounts and e-mail. No smtp_url: mails are written to the log (shop/mail.py has the
    # URL's format). public_url makes the links in mails absolute (default: the request's host).
    smtp_url: str | None = None
    mail_from: str = "shop <no-reply@localhost>"
    smtp_timeout: float = 10.0
    public_url: str | None = None
    # Seconds a password-reset link works, and a link that confirms an address.
    password_reset_ttl: int = 3600
    email_link_ttl: int = 3 * 24 * 3600
    # The mail outbox (order mails; shop/outbox.py): a worker thread in each process (off: only
    # `flask --app shop mail deliver` delivers), how often it looks for due mail, and the
    # retries of a mail the server did not take: first after mail_retry_delay seconds, then
    # twice as long each time up to mail_retry_max_delay, at most mail_retry_attempts sends.
    mail_worker: bool = True
    mail_poll_seconds: float = 2.0
    mail_retry_delay: float = 30.0
    mail_retry_max_delay: float = 3600.0
    mail_retry_attempts: int = 12

    # Payments. Seconds an order waiting for payment holds its stock (then it expires and the
    # stock returns); the key the payment provider signs its notifications with (default:
    # derived from secret_key, so every instance agrees).
    payment_hold_seconds: int = 900
    payment_webhook_secret: str | None = field(default=None, repr=False)

    # Operations.
    # X-Served-By; unset, an opaque name derived from the host name (logged at start), so a
    # response does not tell the world the host's name.
    instance_name: str | None = None
    served_by_header: bool = True
    # /readyz details (which dependency failed, and how) for these addresses or this token
    # (header X-Readyz-Token); everyone else gets the status alone.
    readyz_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    readyz_token: str | None = field(default=None, repr=False)
    # Strict-Transport-Security max-age on responses to HTTPS requests (0: none).
    hsts_seconds: int = 2 * 365 * 24 * 3600
    trusted_proxies: int = 0
    seed_demo: bool | None = None  # None: seed only in the embedded default
    log_level: str = "INFO"
    # Count SQL statements and Redis round trips per request (X-Shop-SQL / X-Shop-Redis).
    instrument: bool = False
    # Prometheus metrics on this port, served by gunicorn's master for all its workers
    # (shop/metrics_server.py), never on the shop's own port; None: no metrics.
    metrics_port: int | None = None
    # "text" (one line per record, the default) or "json" (one JSON object per line, with the
    # request id; gunicorn's access log too).
    log_format: str = "text"

    def __post_init__(self) -> None:
        if self.redis_password is not None and self.redis_url is not None:
            try:
                merged = redis_url_with_password(self.redis_url, self.redis_password)
            except ConfigError:
                return  # reported by problems(), with the rest
            object.__setattr__(self, "redis_url", merged)

    def __repr__(self) -> str:
        """Every field, with secrets and URL passwords masked: settings may end up in a log."""
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not f.repr and value is not None:
                value = "***"
            elif f.name.endswith("_url") and isinstance(value, str):
                value = _mask_password(value)
            elif f.name.endswith("_urls"):
                value = tuple(_mask_password(url) for url in value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def embedded(self) -> bool:
        """True when neither a database nor a Redis server is configured."""
        return self.database_url is None and self.redis_url is None

    def webhook_secret(self) -> str:
        """``payment_webhook_secret``, or one derived from ``secret_key``."""
        if self.payment_webhook_secret:
            return self.payment_webhook_secret
        seed = f"payment-webhook:{self.secret_key}".encode()
        return hashlib.sha256(seed).hexdigest()

    def opaque_instance_name(self) -> str:
        """A stable name for this host that does not reveal it (for X-Served-By)."""
        seed = f"{self.secret_key}:{socket.gethostname()}".encode()
        return "i-" + hashlib.sha256(seed).hexdigest()[:12]

    @property
    def cookie_secure(self) -> bool:
        if self.session_cookie_secure is not None:
            return self.session_cookie_secure
        return not (self.embedded or self.env == "development")

    @property
    def local_database(self) -> bool:
        """True when the database lives in this host's files (the embedded SQLite default, or a
        ``sqlite:`` URL), so no other instance sees the same orders and stock."""
        return self.database_url is None or self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``SHOP_*`` variables; ``overrides`` win over the environment.

        Refused, all problems in one :class:`ConfigError`: a ``SHOP_*`` variable nobody reads (a
        misspelt name is named with the closest known one), a value that does not parse or is
        out of its range, and shared sessions (``SHOP_REDIS_URL``) over a database of this host's
        own (every instance would sell from its own stock).
        """
        environ = os.environ if environ is None else environ
        problems = _unknown_variables(environ)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f"SHOP_{f.name.upper()}"
            raw = environ.get(name)
            if raw is None:
                continue
            try:
                values[f.name] = _parse(f.type, raw)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        values.update(overrides)
        settings = cls(**values)
        problems += settings.problems()
        if settings.redis_url is not None and settings.local_database:
            where = "SQLite" if settings.database_url else "the embedded SQLite file"
            problems.append(
                f"SHOP_REDIS_URL is set (sessions and carts shared by several instances) but the "
                f"database is {where}, which each instance would keep on its own: set "
                f"SHOP_DATABASE_URL to the shared PostgreSQL server"
            )
        if problems:
            raise ConfigError.of(problems)
        return settings

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes).validated()

    def validated(self) -> Settings:
        """These settings, or a :class:`ConfigError` naming every problem with them."""
        problems = self.problems()
        if problems:
            raise ConfigError.of(problems)
        return self

    def problems(self) -> list[str]:
        """What is wrong with these settings, one sentence each (empty: nothing)."""
        problems = []
        if not self.embedded and not self.secret_key:
            problems.append(
                "SHOP_SECRET_KEY is required when SHOP_DATABASE_URL or SHOP_REDIS_URL is set "
                "(it signs CSRF tokens; every instance must share it)"
            )
        if self.secret_key is not None and len(self.secret_key) < 16:
            problems.append("SHOP_SECRET_KEY must be at least 16 characters")
        if self.payment_webhook_secret is not None and len(self.payment_webhook_secret) < 16:
            problems.append("SHOP_PAYMENT_WEBHOOK_SECRET must be at least 16 characters")
        for name, allowed in RANGES.items():
            value = getattr(self, name)
            if value not in allowed:
                problems.append(f"SHOP_{name.upper()} must be {allowed}, not {value!r}")
        if self.env not in ENVS:
            problems.append(f"SHOP_ENV must be one of {', '.join(ENVS)}, not {self.env!r}")
        if self.log_level.upper() not in LOG_LEVELS:
            problems.append(
                f"SHOP_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {self.log_level!r}"
            )
        if self.metrics_port is not None and not 1 <= self.metrics_port <= 65535:
            problems.append(f"SHOP_METRICS_PORT must be a port (1-65535), not {self.metrics_port}")
        if self.log_format not in LOG_FORMATS:
            problems.append(
                f"SHOP_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
            )
        for name in ("login", "signup", "reset", "cart", "new_cart", "search"):
            rule = getattr(self, f"limit_{name}")
            try:
                limits.parse_many(rule) if rule else None
            except ValueError as exc:
                problems.append(f"SHOP_LIMIT_{name.upper()}: {exc}")
        for net in self.readyz_allow:
            try:
                ipaddress.ip_network(net)
            except ValueError as exc:
                problems.append(f"SHOP_READYZ_ALLOW: {exc}")
        if not self.per_page_choices or min(self.per_page_choices) < 1:
            problems.append("SHOP_PER_PAGE_CHOICES must list positive page sizes")
        elif self.max_result_window < max(self.per_page_choices):
            problems.append("SHOP_MAX_RESULT_WINDOW must hold at least one page of each size")
        if self.per_page_default not in self.per_page_choices:
            problems.append("SHOP_PER_PAGE_DEFAULT must be one of SHOP_PER_PAGE_CHOICES")
        if self.smtp_url is not None:
            from .mail import SmtpServer

            try:
                SmtpServer.from_url(self.smtp_url)  # refuses a malformed URL at start
            except ConfigError as exc:
                problems.append(str(exc))
        if self.mail_retry_max_delay < self.mail_retry_delay:
            problems.append("SHOP_MAIL_RETRY_MAX_DELAY must be at least SHOP_MAIL_RETRY_DELAY")
        if self.public_url is not None and (
            urlsplit(self.public_url).scheme not in {"http", "https"}
            or not urlsplit(self.public_url).netloc
        ):
            problems.append(
                "SHOP_PUBLIC_URL must be an http(s) URL such as https://shop.example.com"
            )
        problems += self._image_problems()
        if self.redis_cluster and self.redis_url is None:
            problems.append(
                "SHOP_REDIS_CLUSTER needs SHOP_REDIS_URL (a node of the cluster; the in-process "
                "fakeredis is no cluster)"
            )
        if "{" in self.redis_prefix or "}" in self.redis_prefix:
            problems.append(
                "SHOP_REDIS_PREFIX must not contain { or }: the keys' own braces are their "
                "Redis Cluster hash tags"
            )
        if self.redis_password is not None:
            if self.redis_url is None:
                problems.append(
                    "SHOP_REDIS_PASSWORD needs SHOP_REDIS_URL (the in-process fakeredis has none)"
                )
            else:
                try:
                    redis_url_with_password(self.redis_url, self.redis_password)
                except ConfigError as exc:
                    problems.append(str(exc))
        return problems

    def _image_problems(self) -> list[str]:
        problems = []
        if self.image_storage not in IMAGE_STORAGES:
            problems.append(
                f"SHOP_IMAGE_STORAGE must be one of {', '.join(IMAGE_STORAGES)}, "
                f"not {self.image_storage!r}"
            )
        if self.image_storage == "s3" and not self.image_s3_bucket:
            problems.append("SHOP_IMAGE_STORAGE=s3 needs SHOP_IMAGE_S3_BUCKET")
        for name in ("image_s3_endpoint_url", "image_public_base_url"):
            url = getattr(self, name)
            if url is not None and (
                urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).netloc
            ):
                problems.append(f"SHOP_{name.upper()} must be an http(s) URL, not {url!r}")
        return problems


# The range of every number setting (tuples of numbers: SHOP_PER_PAGE_CHOICES, checked above).
RANGES: dict[str, Range] = {
    "replica_retry_after": _POSITIVE,
    "db_connect_timeout": _AT_LEAST_1,
    "threads": _AT_LEAST_1,
    "db_pool_timeout": _POSITIVE,
    "redis_socket_timeout": _POSITIVE,
    "session_idle_timeout": _AT_LEAST_1,
    "session_absolute_lifetime": _AT_LEAST_1,
    "reauth_seconds": _AT_LEAST_1,
    "admin_reauth_seconds": _AT_LEAST_1,
    "image_max_bytes": Range(1024),
    "low_stock_default": _AT_LEAST_0,
    "account_cart_ttl": _AT_LEAST_1,
    "catalogue_cache_ttl": _AT_LEAST_1,
    "catalogue_cache_jitter": Range(0, below=1),
    "catalogue_local_ttl": _AT_LEAST_0,  # 0: no in-process tier
    "page_edge_seconds": _AT_LEAST_0,
    "page_edge_stale_seconds": _AT_LEAST_0,
    "per_page_default": _AT_LEAST_1,
    "max_result_window": _AT_LEAST_1,
    "login_free_failures": _AT_LEAST_0,
    "password_hash_slots": _AT_LEAST_1,
    "password_hash_queue": _AT_LEAST_0,
    "max_line_quantity": _AT_LEAST_1,
    "max_cart_lines": _AT_LEAST_1,
    "max_body_bytes": Range(1024),  # a login form with its CSRF token must fit
    "smtp_timeout": _POSITIVE,
    "password_reset_ttl": _AT_LEAST_1,
    "email_link_ttl": _AT_LEAST_1,
    "mail_poll_seconds": _POSITIVE,
    "mail_retry_delay": _POSITIVE,
    "mail_retry_max_delay": _POSITIVE,
    "mail_retry_attempts": _AT_LEAST_1,
    "payment_hold_seconds": _AT_LEAST_1,
    "hsts_seconds": _AT_LEAST_0,  # 0: no Strict-Transport-Security
    "trusted_proxies": _AT_LEAST_0,
}
ENVS = ("production", "development")
IMAGE_STORAGES = ("database", "s3")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")

# SHOP_* variables read by others than this module, with their reader: known, so not refused.
OTHER_VARIABLES = {
    "SHOP_BIND": "gunicorn.conf.py",
    "SHOP_WORKERS": "gunicorn.conf.py",
    "SHOP_TIMEOUT": "gunicorn.conf.py",
    "SHOP_GRACEFUL_TIMEOUT": "gunicorn.conf.py",
    "SHOP_KEEPALIVE": "gunicorn.conf.py",
    "SHOP_MAX_REQUESTS": "gunicorn.conf.py",
    "SHOP_MAX_REQUESTS_JITTER": "gunicorn.conf.py",
    "SHOP_DEMO_PRODUCTS": "docker-compose.yml (the demo catalogue's size)",
}
# The test suite's own variables (tests/support: SHOP_TEST_POSTGRES_URL, ...).
TEST_PREFIX = "SHOP_TEST_"


def known_variables() -> set[str]:
    """Every ``SHOP_*`` name something in the shop reads (``SHOP_TEST_*`` aside)."""
    fields = {f"SHOP_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    return fields | OTHER_VARIABLES.keys()


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    known = known_variables()
    problems = []
    for name in sorted(environ):
        if not name.startswith("SHOP_") or name in known or name.startswith(TEST_PREFIX):
            continue
        if name in _REMOVED:
            problems.append(f"{name} is no longer read: {_REMOVED[name]}")
            continue
        closest = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean {closest[0]}?" if closest else ""
        problems.append(f"{name} is not a setting{hint}")
    return problems


# Settings that were removed, with what replaces them: refused rather than silently ignored.
_REMOVED = {
    "SHOP_PER_PAGE_MAX": "set the allowed page sizes with SHOP_PER_PAGE_CHOICES (e.g. 12,24,48,96)",
}


def redis_url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its AUTH password, quoted so any character survives; the
    query (TLS options) is kept. A URL that already carries a different password is refused
    rather than silently overridden."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "redis+cluster", "rediss+cluster"}:
        raise ConfigError("SHOP_REDIS_PASSWORD needs a redis:// or rediss:// SHOP_REDIS_URL")
    userinfo, at, hostport = parts.netloc.rpartition("@")
    username, _, current = userinfo.partition(":")
    if at and current and unquote(current) != password:
        raise ConfigError(
            "SHOP_REDIS_URL carries a password and SHOP_REDIS_PASSWORD another: give it once"
        )
    netloc = f"{username}:{quote(password, safe='')}@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))


def _mask_password(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    username, colon, password = userinfo.partition(":")
    if not (at and colon and password):
        return url
    return urlunsplit(parts._replace(netloc=f"{username}:***@{hostport}"))


def _parse(type_name: Any, raw: str) -> Any:
    """``raw`` as the field's type (a ``ValueError`` saying why not)."""
    type_name = str(type_name)
    if type_name.startswith("tuple"):
        parts = tuple(part.strip() for part in raw.split(",") if part.strip())
        return tuple(int(part) for part in parts) if type_name.startswith("tuple[int") else parts
    if type_name.startswith("bool"):
        if type_name.endswith("None") and raw.strip() == "":
            return None
        return _bool(raw)
    if type_name.startswith("int"):
        return int(raw)
    if type_name.startswith("float"):
        return float(raw)
    if type_name.endswith("None") and raw == "":
        return None
    return raw
