"""The metrics port of one instance: run by gunicorn's master, summing every worker.

Why the master: it outlives its workers and is the one process per instance, so the port is
bound once and a scrape is answered by the process that can read every worker's files
(``prometheus_client``'s multiprocess mode), not by whichever worker a connection happened to
reach. A worker that exits (``max_requests``, a crash) is marked dead (gunicorn.conf.py's
``child_exit``), so its live gauges (pool in use, breaker) drop out while its counters stay in
the sums. Nothing here runs in a worker; a request to the shop's own port never sees it.

Replica lag is measured here too, at scrape time: one short connection to the primary and to
each replica per scrape (never on a request's path), giving ``shop_replica_lag_bytes`` (the
primary's write position minus what the replica has replayed) and ``shop_replica_lag_seconds``
(0 when it has replayed everything it received).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)


class ReplicaLag:
    """``shop_replica_lag_bytes`` and ``shop_replica_lag_seconds`` per replica, read at scrape
    time over connections of its own (no pool: nothing kept open between scrapes)."""

    def __init__(self, primary_url: str, replica_urls: dict[str, str], timeout: int = 2) -> None:
        def engine(url: str, name: str) -> Engine:
            args = {"connect_timeout": timeout, "application_name": f"shop-metrics-{name}"}
            return create_engine(url, poolclass=NullPool, connect_args=args)

        self.primary = engine(primary_url, "primary")
        self.replicas = {name: engine(url, name) for name, url in replica_urls.items()}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag_bytes = GaugeMetricFamily(
            "shop_replica_lag_bytes",
            "Bytes of the primary's write-ahead log the replica has not replayed yet.",
            labels=["replica"],
        )
        lag_seconds = GaugeMetricFamily(
            "shop_replica_lag_seconds",
            "Age of the last transaction the replica replayed while it has more to replay "
            "(0 when it has replayed all it received).",
            labels=["replica"],
        )
        try:
            with self.primary.connect() as conn:
                position = conn.execute(
                    text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
                ).scalar_one()
        except Exception as exc:  # noqa: BLE001 - the scrape goes on without the lag
            log.warning("replica lag: primary unreachable: %s", exc)
            return
        for name, engine in self.replicas.items():
            try:
                with engine.connect() as conn:
                    replayed, seconds = conn.execute(text(_REPLICA_QUERY)).one()
            except Exception as exc:  # noqa: BLE001
                log.warning("replica lag: %s unreachable: %s", name, exc)
                continue
            if replayed is None:  # not a standby (or not replaying): nothing to say
                continue
            lag_bytes.add_metric([name], max(0.0, float(position) - float(replayed)))
            lag_seconds.add_metric([name], float(seconds or 0))
        yield lag_bytes
        yield lag_seconds


_REPLICA_QUERY = """
SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'),
       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END
"""


def serve(
    port: int,
    host: str,
    folder: str,
    *,
    database_url: str | None = None,
    replica_urls: tuple[str, ...] = (),
) -> None:
    """Answer scrapes on ``host:port`` from a daemon thread of this (the master) process."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    if database_url and database_url.startswith("postgresql") and replica_urls:
        named = {f"replica{i}": url for i, url in enumerate(replica_urls, start=1)}
        registry.register(ReplicaLag(database_url, named))
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics (every worker of this instance)", host, port)


def metrics_host(bind: str) -> str:
    """Where the metrics port listens: the host of the shop's first address (a container's
    0.0.0.0, the stack's loopback), loopback for a Unix socket."""
    if bind.startswith("unix:") or ":" not in bind:
        return "127.0.0.1"
    host = bind.rpartition(":")[0].strip("[]")
    return host or "0.0.0.0"
