"""The database engines: one primary for writes and read-your-writes, replicas for the catalogue.

A replica that fails to answer is skipped (and left alone for ``retry_after`` seconds) and the
read goes to the next one, then to the primary; nothing here needs a restart to recover.
How many connections each engine may hold is decided in one place, :func:`pool_sizes`.
"""

from __future__ import annotations

import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

log = logging.getLogger(__name__)

T = TypeVar("T")

# What "the database cannot be reached" looks like to a caller: the server refused or dropped
# the connection (OperationalError), or every connection of this process's pool stayed busy for
# ``pool_timeout`` seconds. Both are answered 503 with a message (shop/web/errors.py).
DatabaseUnavailable = (OperationalError, PoolTimeout)
# Called with the server a catalogue read ran on (a replica's name, or "primary"), when metrics
# are on (shop/metrics.py).
read_hook: Callable[[str], None] | None = None


@dataclass(frozen=True)
class PoolSizes:
    """How many connections one process's engine may hold to one server."""

    size: int  # kept open between requests
    overflow: int  # opened beyond ``size`` at a peak, closed when returned
    timeout: float  # seconds a request waits for a connection before it is told to retry

    @property
    def most(self) -> int:
        return self.size + self.overflow


def pool_sizes(threads: int, *, pool_timeout: float = 3.0) -> PoolSizes:
    """The connection budget of one gunicorn worker, the same for the primary and each replica.

    A worker serves ``threads`` requests at once, and a request holds at most one connection
    to a server at a time (tests/app/test_connection_budget.py watches for two), so ``threads``
    is all a worker can use: no overflow. The worker's background loops (mail outbox, payment
    holds) borrow from the same pool for a few milliseconds. A server therefore sees at most
    ``instances x workers x threads`` connections from the shop, the figure docs/deploy.md
    ("Connection budget") holds against ``max_connections``; an overflow would only let a burst
    open connections the budget has no room for. A request that finds every connection taken
    waits ``pool_timeout`` seconds at most, then gets a 503 asking to retry, never a hang.
    """
    return PoolSizes(size=threads, overflow=0, timeout=pool_timeout)


def make_engine(
    url: str,
    *,
    name: str,
    connect_timeout: int = 3,
    pool: PoolSizes | None = None,
) -> Engine:
    """An engine that survives a server restart or failover: stale connections are re-made.
    PostgreSQL pools are sized by ``pool`` (default: :func:`pool_sizes` of 4 threads)."""
    kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        pool = pool or pool_sizes(4)
        kwargs["connect_args"] = {
            "connect_timeout": connect_timeout,
            "application_name": f"shop-{name}",
        }
        kwargs.update(
            pool_size=pool.size,
            max_overflow=pool.overflow,
            pool_timeout=pool.timeout,
            pool_recycle=1800,
        )
    elif url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        if ":memory:" in url or url in {"sqlite://", "sqlite:///"}:
            kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


@dataclass
class _Replica:
    name: str
    engine: Engine
    down_until: float = 0.0


@dataclass
class Engines:
    """The primary engine plus the replicas that catalogue reads rotate over."""

    primary: Engine
    replicas: list[_Replica] = field(default_factory=list)
    retry_after: float = 5.0
    clock: Callable[[], float] = time.monotonic
    _turn: itertools.count = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_urls(
        cls,
        primary_url: str,
        replica_urls: tuple[str, ...] | list[str] = (),
        *,
        retry_after: float = 5.0,
        connect_timeout: int = 3,
        pool: PoolSizes | None = None,
    ) -> Engines:
        primary = make_engine(
            primary_url, name="primary", connect_timeout=connect_timeout, pool=pool
        )
        replicas = [
            _Replica(
                f"replica{i}",
                make_engine(url, name=f"replica{i}", connect_timeout=connect_timeout, pool=pool),
            )
            for i, url in enumerate(replica_urls, start=1)
        ]
        return cls(primary=primary, replicas=replicas, retry_after=retry_after)

    def read(self, query: Callable[[Connection], T], *, min_position: int = 0) -> T:
        """Run a read-only ``query`` on a replica in turn, falling back to the primary.

        ``min_position`` (from :meth:`write_position`) skips a replica that has not yet
        replayed that far, so a read that must see a recent write does."""
        if self.replicas:
            start = next(self._turn)
            count = len(self.replicas)
            now = self.clock()
            for offset in range(count):
                replica = self.replicas[(start + offset) % count]
                if replica.down_until > now:
                    continue
                try:
                    with replica.engine.connect() as conn:
                        if min_position and _replayed_position(conn) < min_position:
                            log.info("replica %s behind the last write; next", replica.name)
                            continue
                        if read_hook is not None:
                            read_hook(replica.name)
                        return query(conn)
                except (OperationalError, DBAPIError) as exc:
                    if not _is_connection_problem(exc):
                        raise
                    replica.down_until = self.clock() + self.retry_after
                    log.warning(
                        "replica %s unavailable, skipping it for %.0fs: %s",
                        replica.name,
                        self.retry_after,
                        str(exc.orig if hasattr(exc, "orig") else exc).strip().splitlines()[0],
                    )
        if read_hook is not None:
            read_hook("primary")
        with self.primary.connect() as conn:
            return query(conn)

    def write_position(self) -> int:
        """The primary's current position in its write-ahead log, as a number (0 where there
        is none, as on SQLite): a read that waits for a replica to reach it sees every write
        committed before this call."""
        if self.primary.dialect.name != "postgresql":
            return 0
        with self.primary.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
                ).scalar_one()
            )

    def status(self) -> dict[str, dict[str, object]]:
        """Ping the primary and each replica, for /readyz. A replica inside its skip window is
        reported without a ping, so a dead replica cannot make the health check time out."""
        result = {"primary": _ping(self.primary)}
        now = self.clock()
        for replica in self.replicas:
            if replica.down_until > now:
                retry_in = round(replica.down_until - now, 1)
                result[replica.name] = {"ok": False, "error": "skipped", "retry_in": retry_in}
                continue
            state = _ping(replica.engine)
            if not state["ok"]:
                replica.down_until = self.clock() + self.retry_after
            result[replica.name] = state
        return result

    def dispose(self) -> None:
        self.primary.dispose()
        for replica in self.replicas:
            replica.engine.dispose()


class SqliteChanges:
    """A number that changes whenever another connection, in this process or another one (the
    ``flask`` CLI), commits to this SQLite file: ``PRAGMA data_version`` on a connection of its
    own, which never writes. Costs microseconds (no table is read)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()

    @classmethod
    def of(cls, engine: Engine) -> SqliteChanges | None:
        """For a SQLite file; None for anything else (an in-memory database has no other
        writer)."""
        path = engine.url.database
        if engine.dialect.name != "sqlite" or not path or path == ":memory:":
            return None
        return cls(path)

    def __call__(self) -> int:
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


def _replayed_position(conn: Connection) -> float:
    """How far a standby has replayed the primary's log; infinite for a server that is not a
    standby (it has every write it will ever have)."""
    if conn.dialect.name != "postgresql":
        return float("inf")
    replayed = conn.execute(
        text("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')")
    ).scalar()
    return float("inf") if replayed is None else int(replayed)


def _is_connection_problem(exc: DBAPIError) -> bool:
    # OperationalError covers refused connections, timeouts, a server shutting down and
    # "cannot execute ... in a read-only transaction" is not one of them (that is a bug).
    return isinstance(exc, OperationalError) or bool(exc.connection_invalidated)


def _ping(engine: Engine) -> dict[str, object]:
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}
