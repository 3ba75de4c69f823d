"""The stack's constants, its ports, and the typed records of ``<work>/topology.json``."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shop.config import Settings
from shop.throttle import RULES

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"

APP_NAMES = ("app1", "app2", "app3")
# Start order; stop order is the reverse.
# The monitoring last (deploy/stack/monitoring.py): it watches the rest.
MONITORS = ("redis_exporter", "postgres_exporter", "prometheus")
COMPONENTS = (
    *("primary", "replica", "pgbouncer", "redis", "smtp", *APP_NAMES),
    *("cache", "purger", "balancer"),
    *MONITORS,
)

DEFAULT_PORT = 8000
DEFAULT_PORT_BASE = 25400
PGBOUNCER_OFFSET = 20  # its port is STACK_PORT_BASE + this
HIGHEST_OFFSET = 76  # the last Redis Cluster node's (STACK_REDIS=cluster)
SEED_PRODUCTS = 2000
STOP_TIMEOUT = 10.0

Echo = Callable[[str], None]

_SAVE_LOCK = threading.Lock()
_DEFAULT_REDIS_PREFIX = Settings().redis_prefix


class StackError(RuntimeError):
    """A part of the stack cannot be started or stopped; the message says where to look."""


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one stack."""

    balancer: int
    primary: int
    replica: int
    redis: int
    apps: tuple[int, ...]
    balancer_tls: int
    smtp: int
    cache: int  # Varnish, where the balancer sends GET and HEAD
    cache_purge: int  # Varnish's purge socket (the edge purger's)
    from_cache: int  # the balancer's frontend Varnish fetches from
    pgbouncer: int  # PgBouncer, which the instances reach both databases through
    # STACK_REDIS=cluster: a 6-node Redis Cluster (the first node on ``redis``) and its nodes'
    # cluster-bus ports; empty for the default standalone Redis.
    redis_nodes: tuple[int, ...] = ()
    redis_buses: tuple[int, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        """STACK_PORT for the balancer, the others from STACK_PORT_BASE."""
        environ = os.environ if environ is None else environ
        balancer = _port_env(environ, "STACK_PORT", DEFAULT_PORT)
        base = _port_env(environ, "STACK_PORT_BASE", DEFAULT_PORT_BASE)
        if base + HIGHEST_OFFSET > 65535:
            raise StackError(f"STACK_PORT_BASE={base} leaves no room for base+{HIGHEST_OFFSET}")
        apps = (base + 11, base + 12, base + 13)
        ports = cls(
            balancer,
            base,
            base + 1,
            base + 2,
            apps,
            base + 14,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + PGBOUNCER_OFFSET,
            *_redis_cluster_ports(environ, base),
        )
        if len(set(ports.all().values())) != len(ports.all()):
            raise StackError(f"STACK_PORT={balancer} collides with a port derived from {base}")
        return ports

    def all(self) -> dict[str, int]:
        named = {"primary": self.primary, "replica": self.replica, "redis": self.redis}
        named["smtp"] = self.smtp
        named.update(zip(APP_NAMES, self.apps, strict=True))
        named["balancer"] = self.balancer
        named["balancer_tls"] = self.balancer_tls
        named["cache"] = self.cache
        named["cache_purge"] = self.cache_purge
        named["balancer_from_cache"] = self.from_cache
        named["pgbouncer"] = self.pgbouncer
        named.update({f"redis_node{i}": port for i, port in enumerate(self.redis_nodes[1:], 2)})
        named.update({f"redis_bus{i}": port for i, port in enumerate(self.redis_buses, 1)})
        named.update(monitoring_ports(self.primary))  # the primary's port is the base
        return named


def _redis_cluster_ports(
    environ: Mapping[str, str], base: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """STACK_REDIS: ``standalone`` (the default) or ``cluster`` (3 primaries + 3 replicas: the
    first node on base+2, the others on base+72..76, their cluster buses on base+66..71; the
    monitoring has base+60..65)."""
    kind = environ.get("STACK_REDIS", "").strip() or "standalone"
    if kind == "standalone":
        return (), ()
    if kind != "cluster":
        raise StackError(f"STACK_REDIS must be standalone or cluster, got {kind!r}")
    return (base + 2, *range(base + 72, base + 77)), tuple(range(base + 66, base + 72))


def _port_env(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        port = int(raw)
    except ValueError:
        raise StackError(f"{name} must be a port number, got {raw!r}") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name} must be between 1 and 65535, got {port}")
    return port


# ------------------------------------------------------------------------------ the records


@dataclass
class PgServer:
    """The primary or the replica: its data directory is the truth (postmaster.pid)."""

    port: int
    data_dir: str
    pid: int | None
    log: str
    url: str
    dsn: str


@dataclass
class RedisServer:
    """The stack's Redis; with ``nodes`` (STACK_REDIS=cluster), a Redis Cluster whose first
    node is ``port`` / ``pid`` / ``pidfile`` / ``log`` and whose nodes live under
    ``<work>/redis-cluster``."""

    port: int
    pid: int | None
    pidfile: str
    log: str
    url: str
    nodes: list[int] = field(default_factory=list)
    buses: list[int] = field(default_factory=list)


@dataclass
class SmtpSink:
    """The mail server the instances send to: it keeps each message as a file in ``maildir``
    (deploy/stack/smtp_sink.py; read them with its ``read_mail``)."""

    port: int
    pid: int | None
    pidfile: str
    log: str
    url: str
    maildir: str

    @classmethod
    def under(cls, work: Path, port: int) -> SmtpSink:
        return cls(
            port=port,
            pid=None,
            pidfile=str(work / "run" / "smtp.pid"),
            log=str(work / "logs" / "smtp.log"),
            url=f"smtp://{LOOPBACK}:{port}",
            maildir=str(work / "mail"),
        )


@dataclass
class App:
    """One gunicorn instance, with the exact command and environment it is started with."""

    name: str
    port: int
    pid: int | None
    log: str
    pidfile: str
    url: str
    cwd: str
    command: list[str]
    env: dict[str, str]


@dataclass
class EdgeCache:
    """Varnish between the balancer's edge rules and the instances (deploy/varnish): its
    public port (the balancer's ``edge_cache`` backend), its purge port, its work folder
    (``varnishd -n``: ``varnishlog -n`` and ``varnishstat -n`` read it)."""

    port: int
    purge_port: int
    pid: int | None
    pidfile: str
    log: str
    url: str
    vcl: str
    work_dir: str

    @classmethod
    def under(cls, work: Path, port: int, purge_port: int) -> EdgeCache:
        return cls(
            port=port,
            purge_port=purge_port,
            pid=None,
            pidfile=str(work / "run" / "varnish.pid"),
            log=str(work / "logs" / "varnish.log"),
            url=f"http://{LOOPBACK}:{port}",
            vcl=str(work / "varnish.vcl"),
            work_dir=str(work / "varnish"),
        )


@dataclass
class EdgePurger:
    """The process that turns the shop's catalogue invalidations (a Redis channel) into purges
    of the edge cache (deploy/stack/edge_purger.py). It listens on no port."""

    pid: int | None
    pidfile: str
    log: str
    redis_url: str
    channel: str
    port: None = None

    @classmethod
    def under(cls, work: Path, redis_url: str, channel: str) -> EdgePurger:
        return cls(
            pid=None,
            pidfile=str(work / "run" / "edge_purger.pid"),
            log=str(work / "logs" / "edge_purger.log"),
            redis_url=redis_url,
            channel=channel,
        )


@dataclass
class Balancer:
    port: int
    pid: int | None
    url: str
    tls_port: int | None  # None in a topology.json written before the HTTPS port existed
    tls_url: str | None
    tls_pem: str | None
    config: str
    stats_socket: str
    pidfile: str
    log: str
    # The frontend Varnish fetches from (None: a topology.json from before the edge cache).
    from_cache_port: int | None = None


@dataclass
class PgBouncer:
    """PgBouncer in transaction pooling, the instances' way to both databases
    (deploy/stack/pgbouncer.py): ``url`` reaches the primary, ``replica_url`` the replica, each
    through a pool of at most ``server_connections`` connections to its server; ``admin_dsn``
    is its console (SHOW POOLS, SHOW CLIENTS)."""

    port: int
    pid: int | None
    pidfile: str
    log: str
    config: str
    auth_file: str
    url: str
    replica_url: str
    admin_dsn: str
    server_connections: int

    @classmethod
    def under(cls, work: Path, port: int, server_connections: int = 12) -> PgBouncer:
        """``server_connections`` per database: within 0.8 of the servers' max_connections
        (postgres.py), the rest for migrations, tools and the tests."""
        through = f"postgresql+psycopg2://postgres@{LOOPBACK}:{port}"
        return cls(
            port=port,
            pid=None,
            pidfile=str(work / "run" / "pgbouncer.pid"),
            log=str(work / "logs" / "pgbouncer.log"),
            config=str(work / "pgbouncer.ini"),
            auth_file=str(work / "pgbouncer-users.txt"),
            url=f"{through}/shop",
            replica_url=f"{through}/shop_replica",
            admin_dsn=f"host={LOOPBACK} port={port} user=postgres dbname=pgbouncer",
            server_connections=server_connections,
        )


# The monitoring (deploy/stack/monitoring.py): offsets from STACK_PORT_BASE, clear of the
# other components' ports.
APP_METRICS_OFFSET = 60  # app1..app3: base+60..base+62
_MONITOR_OFFSETS = {"prometheus": 63, "redis_exporter": 64, "postgres_exporter": 65}
# Short, for a developer's machine and the stack tests: a change shows within seconds.
SCRAPE_INTERVAL = "2s"


@dataclass
class Monitor:
    """One of the monitoring processes; ``data_dir`` and ``config`` are Prometheus' own."""

    name: str
    port: int
    pid: int | None
    pidfile: str
    log: str
    url: str
    data_dir: str | None = None
    config: str | None = None

    @classmethod
    def under(cls, work: Path, name: str, port: int) -> Monitor:
        prometheus = name == "prometheus"
        return cls(
            name=name,
            port=port,
            pid=None,
            pidfile=str(work / "run" / f"{name}.pid"),
            log=str(work / "logs" / f"{name}.log"),
            url=f"http://{LOOPBACK}:{port}",
            data_dir=str(work / "prometheus") if prometheus else None,
            config=str(work / "prometheus.yml") if prometheus else None,
        )


def monitors_under(work: Path, base: int) -> dict[str, Monitor]:
    """The three monitors of a stack whose ports start at ``base``."""
    return {name: Monitor.under(work, name, base + _MONITOR_OFFSETS[name]) for name in MONITORS}


def app_metrics_port(base: int, index: int) -> int:
    """The metrics port of the ``index``-th instance (0-based)."""
    return base + APP_METRICS_OFFSET + index


def monitoring_ports(base: int) -> dict[str, int]:
    """The ports of the monitors and the instances' metrics ports."""
    ports = {name: base + offset for name, offset in _MONITOR_OFFSETS.items()}
    for i, name in enumerate(APP_NAMES):
        ports[f"{name}_metrics"] = app_metrics_port(base, i)
    return ports


_NO_TLS = {"tls_port": None, "tls_url": None, "tls_pem": None}
Component = (
    PgServer
    | PgBouncer
    | RedisServer
    | SmtpSink
    | App
    | EdgeCache
    | EdgePurger
    | Balancer
    | Monitor
)

# The channel the shop publishes every catalogue invalidation on (shop/catalogue_cache.py:
# the catalogue cache's prefix, ``<SHOP_REDIS_PREFIX>cat:``, then ``invalidations``).
INVALIDATIONS_CHANNEL = "{prefix}cat:invalidations"


@dataclass
class Topology:
    """What ``<work>/topology.json`` records: every part's port, pid, log and URL."""

    version: int
    work_dir: str
    url: str
    secret_key_file: str
    setup_log: str
    balancer: Balancer
    primary: PgServer
    replica: PgServer
    pgbouncer: PgBouncer
    redis: RedisServer
    apps: dict[str, App]
    smtp: SmtpSink
    cache: EdgeCache
    purger: EdgePurger
    redis_exporter: Monitor
    postgres_exporter: Monitor
    prometheus: Monitor

    def component(self, name: str) -> Component:
        """``primary``, ``replica``, ``pgbouncer``, ``redis``, ``smtp``, ``app1``..``app3``,
        ``cache``, ``purger`` or ``balancer``."""
        if name in APP_NAMES:
            return self.apps[name]
        if name in COMPONENTS:
            return getattr(self, name)
        raise StackError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Topology:
        return cls(
            version=data["version"],
            work_dir=data["work_dir"],
            url=data["url"],
            secret_key_file=data["secret_key_file"],
            setup_log=data["setup_log"],
            balancer=Balancer(**{**_NO_TLS, **data["balancer"]}),
            primary=PgServer(**data["primary"]),
            replica=PgServer(**data["replica"]),
            # One from before PgBouncer: one, not running (its instances go direct).
            pgbouncer=PgBouncer(**data["pgbouncer"])
            if "pgbouncer" in data
            else PgBouncer.under(
                Path(data["work_dir"]), data["primary"]["port"] + PGBOUNCER_OFFSET
            ),
            redis=RedisServer(**data["redis"]),
            apps={name: App(**app) for name, app in data["apps"].items()},
            # A topology.json written before the stack had a mail server: one, not running.
            smtp=SmtpSink(**data["smtp"])
            if "smtp" in data
            else SmtpSink.under(Path(data["work_dir"]), data["redis"]["port"] + 1),
            # One from before the edge cache: a cache and a purger, not running (the balancer
            # it recorded sends nothing to them).
            cache=EdgeCache(**data["cache"])
            if "cache" in data
            else EdgeCache.under(
                Path(data["work_dir"]), data["redis"]["port"] + 2, data["redis"]["port"] + 3
            ),
            purger=EdgePurger(**data["purger"])
            if "purger" in data
            else EdgePurger.under(
                Path(data["work_dir"]),
                data["redis"]["url"],
                INVALIDATIONS_CHANNEL.format(prefix=_DEFAULT_REDIS_PREFIX),
            ),
            # One from before the monitoring: monitors, not running (the primary's port is
            # the base).
            **{
                name: Monitor(**data[name])
                if name in data
                else monitors_under(Path(data["work_dir"]), data["primary"]["port"])[name]
                for name in MONITORS
            },
        )


# --------------------------------------------------------------------------- paths, topology


def default_work_dir() -> Path:
    return Path(os.environ.get("STACK_DIR") or REPO / ".stack").resolve()


def _work(work_dir: str | os.PathLike[str] | None) -> Path:
    return Path(work_dir).resolve() if work_dir is not None else default_work_dir()


def _pg_bin_dir() -> Path:
    return Path(os.environ.get("STACK_PG_BIN") or "/usr/lib/postgresql/15/bin")


def _venv_bin() -> Path:
    """The venv running this script: gunicorn and flask come from the same install."""
    candidate = Path(sys.prefix) / "bin"
    return candidate if (candidate / "gunicorn").exists() else REPO / ".venv" / "bin"


def load_topology(work_dir: str | os.PathLike[str] | None = None) -> Topology | None:
    path = _work(work_dir) / "topology.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise StackError(f"{path} is not valid JSON ({exc}); delete it or run stack-down") from None
    try:
        return Topology.from_json(data)
    except (KeyError, TypeError) as exc:
        raise StackError(f"{path} was not written by this stack ({exc!r}); delete it") from None


def save_topology(topology: Topology) -> None:
    """Written atomically and 0600: it holds the stack's secret key in the apps' env."""
    path = Path(topology.work_dir) / "topology.json"
    with _SAVE_LOCK:
        tmp = path.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(topology.to_json(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


def _secret_key(work: Path) -> tuple[str, Path]:
    """Generated once, so restarts keep sessions' CSRF tokens valid."""
    path = work / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), path
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key, path


def _build_topology(work: Path, ports: Ports) -> Topology:
    logs, run = work / "logs", work / "run"
    key, key_path = _secret_key(work)
    pg_dir = work / "pg"

    def pg(name: str, port: int) -> PgServer:
        return PgServer(
            port=port,
            data_dir=str(pg_dir / name),
            pid=None,
            log=str(logs / f"{name}.log"),
            url=f"postgresql+psycopg2://postgres@{LOOPBACK}:{port}/shop",
            dsn=f"host={LOOPBACK} port={port} user=postgres dbname=shop",
        )

    primary, replica = pg("primary", ports.primary), pg("replica", ports.replica)
    # The instances reach both servers through PgBouncer; migrations go direct (apps.py).
    pgbouncer = PgBouncer.under(work, ports.pgbouncer)
    redis_url = f"redis://{LOOPBACK}:{ports.redis}/0"
    cluster = {"SHOP_REDIS_CLUSTER": "1"} if ports.redis_nodes else {}
    redis_files = work / "redis-cluster" / "node0" if ports.redis_nodes else None
    smtp = SmtpSink.under(work, ports.smtp)
    bin_dir = _venv_bin()
    apps: dict[str, App] = {}
    for name, port in zip(APP_NAMES, ports.apps, strict=True):
        env = {
            # A clean environment: nothing from the caller's shell (a stray SHOP_* variable,
            # a proxy setting) changes an instance, and the record below is complete.
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "SHOP_DATABASE_URL": pgbouncer.url,
            "SHOP_REPLICA_URLS": pgbouncer.replica_url,
            "SHOP_REDIS_URL": redis_url,
            **cluster,
            "SHOP_SECRET_KEY": key,
            "SHOP_INSTANCE_NAME": name,
            "SHOP_BIND": f"{LOOPBACK}:{port}",
            "SHOP_WORKERS": "2",
            "SHOP_THREADS": "4",
            "SHOP_TRUSTED_PROXIES": "1",
            "SHOP_ENV": "development",
            "SHOP_REPLICA_RETRY_AFTER": "2",
            "SHOP_DB_CONNECT_TIMEOUT": "2",
            # Every mail goes to the stack's sink, which keeps it as a file (<work>/mail).
            "SHOP_SMTP_URL": smtp.url,
            # Scraped by the stack's Prometheus (deploy/stack/monitoring.py).
            "SHOP_METRICS_PORT": str(app_metrics_port(ports.primary, APP_NAMES.index(name))),
            "SHOP_MAIL_FROM": "shop <shop@stack.invalid>",
            # The shop's own per-address rules: everything here comes from 127.0.0.1 (you, the
            # stack tests' 100 racing buyers, make bench), which HAProxy exempts too. They are
            # tested in tests/app/test_throttle.py; the failed-login back-off per account stays on.
            **{f"SHOP_LIMIT_{rule.upper()}": "" for rule in RULES},
        }
        apps[name] = App(
            name=name,
            port=port,
            pid=None,
            log=str(logs / f"{name}.log"),
            pidfile=str(run / f"{name}.pid"),
            url=f"http://{LOOPBACK}:{port}",
            cwd=str(REPO),
            command=[str(bin_dir / "gunicorn"), "wsgi:app", "-c", "gunicorn.conf.py"],
            env=env,
        )
    return Topology(
        version=1,
        work_dir=str(work),
        url=f"http://{LOOPBACK}:{ports.balancer}",
        secret_key_file=str(key_path),
        setup_log=str(logs / "setup.log"),
        balancer=Balancer(
            port=ports.balancer,
            pid=None,
            url=f"http://{LOOPBACK}:{ports.balancer}",
            tls_port=ports.balancer_tls,
            tls_url=f"https://{LOOPBACK}:{ports.balancer_tls}",
            tls_pem=str(work / "tls.pem"),
            config=str(work / "haproxy.cfg"),
            stats_socket=str(run / "haproxy.sock"),
            pidfile=str(run / "haproxy.pid"),
            log=str(logs / "haproxy.log"),
            from_cache_port=ports.from_cache,
        ),
        primary=primary,
        replica=replica,
        pgbouncer=pgbouncer,
        redis=RedisServer(
            port=ports.redis,
            pid=None,
            pidfile=str(redis_files / "redis.pid" if redis_files else run / "redis.pid"),
            log=str(redis_files / "redis.log" if redis_files else logs / "redis.log"),
            url=redis_url,
            nodes=list(ports.redis_nodes),
            buses=list(ports.redis_buses),
        ),
        apps=apps,
        smtp=smtp,
        cache=EdgeCache.under(work, ports.cache, ports.cache_purge),
        # The instances leave SHOP_REDIS_PREFIX at its default, so the channel is the default's.
        purger=EdgePurger.under(
            work, redis_url, INVALIDATIONS_CHANNEL.format(prefix=_DEFAULT_REDIS_PREFIX)
        ),
        **monitors_under(work, ports.primary),
    )
