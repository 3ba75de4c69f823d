"""Gunicorn settings for the shop: ``gunicorn wsgi:app -c gunicorn.conf.py``.

Everything comes from environment variables, so one image serves every environment:

``SHOP_BIND`` (default ``0.0.0.0:8000``)
    Address to listen on; several may be given, separated by commas.
``SHOP_WORKERS`` (default: see below)
    Worker processes. With ``SHOP_REDIS_URL`` set the default is ``2 * CPUs + 1``, capped at 8
    (the CPU count is the host's, not a container's quota, hence the cap; set it explicitly when
    the instance has a CPU limit). Without ``SHOP_REDIS_URL`` the shop keeps sessions and carts
    in an in-process fakeredis, which workers cannot share, so the default is 1 and asking for
    more is refused.
``SHOP_THREADS`` (default 4)
    Threads per worker; above 1 the ``gthread`` worker is used, otherwise ``sync``. A worker
    serves this many requests at once, and the shop reads the same variable to size its
    database pools (``shop.db.pool_sizes``): each instance holds at most workers x threads
    connections to each database server (docs/deploy.md, "Connection budget").
``SHOP_TIMEOUT`` (default 30)
    Seconds a worker may stay silent (one request taking that long) before it is killed and
    replaced.
``SHOP_GRACEFUL_TIMEOUT`` (default 20)
    Seconds workers get to finish their requests after SIGTERM (a deploy) before being killed.
    Keep it below the orchestrator's own stop grace period (Docker's default is 10 s: raise it
    with ``docker stop -t`` / ``stop_grace_period``).
``SHOP_KEEPALIVE`` (default 5)
    Seconds an idle keep-alive connection stays open (``gthread`` only). Behind a load balancer,
    keep it above the balancer's idle timeout towards the backends, or use 1-2 s without one.
``SHOP_MAX_REQUESTS`` (default 0, off)
    Replace a worker after this many requests, a guard against slow leaks.
``SHOP_MAX_REQUESTS_JITTER`` (default a tenth of ``SHOP_MAX_REQUESTS``)
    A random 0..N added per worker so they do not all restart at once.

Every number must be a whole number of at least 1 (``SHOP_MAX_REQUESTS`` and its jitter: 0);
anything else stops gunicorn at start with a message naming the variable, rather than running
with a setting nobody asked for.

Not from the environment: gunicorn's own request limits, stated here so that an upgrade cannot
loosen them (a request line of at most 4094 bytes, 100 header fields of at most 8190 bytes each;
a request over them gets a 4xx from gunicorn before the app runs). They are defence in depth:
the balancer in front (HAProxy, the ALB) already bounds headers and bodies. And no control
socket: gunicorn 25.1+ opens one by default (``gunicornc``, in ``$XDG_RUNTIME_DIR`` or
``~/.gunicorn/``), at one path per user, which every master on a host would share; nothing here
uses it.

The access log goes to stdout with the ``X-Request-ID`` the shop returns (the same id is in the
shop's own log lines) and the request time in milliseconds; gunicorn's error log goes to stderr.
``SHOP_LOG_FORMAT=json`` makes every line of both, and of the shop, one JSON object
(shop/log_format.py).

``SHOP_METRICS_PORT`` turns metrics on: the workers record into ``PROMETHEUS_MULTIPROC_DIR``
(``prometheus_client``'s multiprocess mode; a fresh folder under /dev/shm unless given, emptied
at start, set here before any worker imports the client), the master answers scrapes on that
port, on the host of the first ``SHOP_BIND`` address, for all its workers
(shop/metrics_server.py), and marks each exiting worker dead so its live gauges drop out.
The app is not preloaded: each worker builds its own database engines and Redis clients, so no
connection is shared across a fork.
"""

from __future__ import annotations

import os
import shutil
import tempfile


def env_int(name: str, default: int, *, minimum: int = 1) -> int:
    """A whole number from the environment; a bad value must stop the start, not be guessed at."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def default_workers() -> int:
    """2 x CPUs + 1, capped; 1 when sessions live in this process (no SHOP_REDIS_URL)."""
    if not os.environ.get("SHOP_REDIS_URL"):
        return 1
    return min(2 * (os.cpu_count() or 1) + 1, 8)


bind = [part.strip() for part in os.environ.get("SHOP_BIND", "0.0.0.0:8000").split(",")]
if not all(bind):
    raise ValueError(f"SHOP_BIND must be host:port (or several, comma-separated), got {bind!r}")

workers = env_int("SHOP_WORKERS", default_workers())
if workers > 1 and not os.environ.get("SHOP_REDIS_URL"):
    raise ValueError(
        f"SHOP_WORKERS={workers} needs SHOP_REDIS_URL: without it every worker keeps its own "
        "in-process sessions and carts, and shoppers would lose them between requests"
    )
# The shop's own default (Settings.threads): its pools are sized from the same number.
threads = env_int("SHOP_THREADS", 4)
worker_class = "gthread" if threads > 1 else "sync"

timeout = env_int("SHOP_TIMEOUT", 30)
graceful_timeout = env_int("SHOP_GRACEFUL_TIMEOUT", 20)
keepalive = env_int("SHOP_KEEPALIVE", 5)

max_requests = env_int("SHOP_MAX_REQUESTS", 0, minimum=0)
max_requests_jitter = env_int("SHOP_MAX_REQUESTS_JITTER", max_requests // 10, minimum=0)

# Explicit, so no gunicorn release changes them under us (these are its current defaults).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn 25.1+ (pyproject pins the tested range); older releases ignore the name.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
access_log_format = (
    '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s "%(f)s" "%(a)s"'
)

proc_name = "shop"


def prepare_multiprocess_dir() -> tuple[str, bool]:
    """The folder the workers write their values to, emptied; made under /dev/shm (tmpfs: the
    values are memory-mapped) unless PROMETHEUS_MULTIPROC_DIR names one. Must run before
    anything imports prometheus_client (it picks its mode at import), hence here and not in
    the shop. Returns it and whether it is ours to remove at exit."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):  # another run's values would be summed with ours
            if name.endswith(".db"):
                os.unlink(os.path.join(given, name))
        return given, False
    parent = "/dev/shm" if os.path.isdir("/dev/shm") else None
    folder = tempfile.mkdtemp(prefix="shop-metrics-", dir=parent)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder, True


_metrics_dir: tuple[str, bool] | None = None
if os.environ.get("SHOP_METRICS_PORT", "").strip():
    _metrics_dir = prepare_multiprocess_dir()

# After the folder above: importing the shop imports prometheus_client.
if os.environ.get("SHOP_LOG_FORMAT", "").strip() == "json":
    from shop.log_format import gunicorn_logconfig

    logconfig_dict = gunicorn_logconfig()


def on_starting(server: object) -> None:
    """Check the shop's settings once, in the master, before any worker starts: a bad one stops
    gunicorn with one message listing every problem (``ConfigError`` is a ``RuntimeError``,
    which gunicorn prints as ``Error: ...``) instead of each worker failing with a traceback."""
    from shop.config import Settings

    _settings.append(Settings.from_env())


_settings: list = []  # the master's, checked in on_starting


def when_ready(server: object) -> None:
    """Open the metrics port (prometheus_client's documented place under gunicorn)."""
    settings = _settings[-1] if _settings else None
    if settings is None or settings.metrics_port is None or _metrics_dir is None:
        return
    from shop.metrics_server import metrics_host, serve

    host = metrics_host(bind[0])
    try:
        serve(
            settings.metrics_port,
            host,
            _metrics_dir[0],
            database_url=settings.database_url,
            replica_urls=settings.replica_urls,
        )
    except OSError as exc:
        raise RuntimeError(
            f"SHOP_METRICS_PORT={settings.metrics_port}: cannot listen on {host}: {exc}"
        ) from None


def child_exit(server: object, worker: object) -> None:
    """A worker is gone: its live gauges (pool in use, breaker) stop counting."""
    if _metrics_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, _metrics_dir[0])  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    if _metrics_dir is not None and _metrics_dir[1]:
        shutil.rmtree(_metrics_dir[0], ignore_errors=True)


# The heartbeat file on tmpfs: on a container's overlay filesystem it can stall workers.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"
