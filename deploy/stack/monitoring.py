"""The stack's monitoring: Prometheus scraping every instance's metrics port, and the Redis and
PostgreSQL exporters (Debian's ``prometheus``, ``prometheus-redis-exporter`` and
``prometheus-postgres-exporter``).

Every port here is on loopback and none is behind the balancer: HAProxy routes only to the
instances' shop ports (deploy/haproxy), so ``/metrics`` on an instance's metrics port, the
exporters and Prometheus itself are reachable from this machine alone, as a VPC-internal
scrape would be in the cloud. Prometheus keeps a day of samples in ``<work>/prometheus``.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from deploy.stack.processes import _pid_alive, _wait_until, exited, spawn_child
from deploy.stack.topology import (
    LOOPBACK,
    SCRAPE_INTERVAL,
    Monitor,
    Topology,
    save_topology,
)

BINARIES = {
    "prometheus": "prometheus",
    "redis_exporter": "prometheus-redis-exporter",
    "postgres_exporter": "prometheus-postgres-exporter",
}


def binary(name: str) -> str:
    program = BINARIES[name]
    return shutil.which(program) or f"/usr/bin/{program}"


def prometheus_config(topology: Topology) -> str:
    """Scrape every instance's metrics port (labelled with its name), and the exporters.
    JSON is YAML, so no YAML writer is needed."""
    shop_targets = [
        {
            "targets": [f"{LOOPBACK}:{app.env['SHOP_METRICS_PORT']}"],
            "labels": {"app": name},
        }
        for name, app in topology.apps.items()
    ]
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {"job_name": "shop", "static_configs": shop_targets},
            {
                "job_name": "redis",
                "static_configs": [{"targets": [f"{LOOPBACK}:{topology.redis_exporter.port}"]}],
            },
            {
                "job_name": "postgres",
                "static_configs": [{"targets": [f"{LOOPBACK}:{topology.postgres_exporter.port}"]}],
            },
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def _command(topology: Topology, entry: Monitor) -> tuple[list[str], dict[str, str] | None]:
    listen = f"--web.listen-address={LOOPBACK}:{entry.port}"
    if entry.name == "redis_exporter":
        return [binary("redis_exporter"), f"--redis.addr={topology.redis.url}", listen], None
    if entry.name == "postgres_exporter":
        # Both servers, each sample labelled with its own: the standby's pg_replication_lag.
        sources = ",".join(
            f"postgresql://postgres@{LOOPBACK}:{server.port}/shop?sslmode=disable"
            for server in (topology.primary, topology.replica)
        )
        # Debian's 0.11 answers 500 with two servers when its newer collectors are on (they
        # report each other's samples twice); the classic per-server queries cover the rest.
        argv = [binary("postgres_exporter"), listen, "--disable-settings-metrics"]
        argv += ["--no-collector.database", "--no-collector.bgwriter"]
        return argv, {"DATA_SOURCE_NAME": sources, "PATH": "/usr/bin:/bin"}
    assert entry.config is not None and entry.data_dir is not None
    Path(entry.config).write_text(prometheus_config(topology))
    Path(entry.data_dir).mkdir(parents=True, exist_ok=True)
    return [
        binary("prometheus"),
        f"--config.file={entry.config}",
        f"--storage.tsdb.path={entry.data_dir}",
        "--storage.tsdb.retention.time=1d",
        listen,
    ], None


def start_monitor(topology: Topology, name: str) -> str:
    """Start one monitor and wait until its own /metrics answers (Prometheus: /-/ready)."""
    entry: Monitor = getattr(topology, name)
    argv, env = _command(topology, entry)
    entry.pid = spawn_child(argv, log=entry.log, pidfile=entry.pidfile, env=env)
    save_topology(topology)
    # An exporter answers / once it listens (its /metrics asks its server: the test checks that).
    path = "/-/ready" if name == "prometheus" else "/"

    def ready() -> bool:
        if not _pid_alive(entry.pid, BINARIES[name]):
            raise exited(name, entry.pid, entry.log)
        try:
            with urllib.request.urlopen(entry.url + path, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    _wait_until(ready, name, entry.log, 30)
    return f"{entry.url}  pid {entry.pid}"
