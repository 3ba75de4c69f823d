"""The stack's PgBouncer: the instances reach both databases through it in transaction
pooling, migrations go direct, its pools fit the servers' budget, and it is started, crashed
and started again by name (the whole stack with it runs in tests/stack)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from deploy.stack import stack as stack_module
from deploy.stack.apps import direct_env
from deploy.stack.cli import run_flask
from deploy.stack.pgbouncer import admin_rows, render
from deploy.stack.postgres import _write_pg_conf
from deploy.stack.processes import _MARKERS, _pid_alive, _port_free
from deploy.stack.topology import (
    APP_NAMES,
    COMPONENTS,
    PGBOUNCER_OFFSET,
    Ports,
    Topology,
    _build_topology,
)
from shop.config import Settings
from tests.support import free_ports, missing


def test_the_instances_go_through_pgbouncer_and_migrations_go_direct(tmp_path):
    ports = Ports.from_env({"STACK_PORT_BASE": "31000"})
    topology = _build_topology(tmp_path, ports)
    bouncer = topology.pgbouncer
    assert bouncer.port == ports.pgbouncer == 31000 + PGBOUNCER_OFFSET
    assert len(set(ports.all().values())) == len(ports.all())
    for name in APP_NAMES:
        env = topology.apps[name].env
        assert (
            env["SHOP_DATABASE_URL"]
            == f"postgresql+psycopg2://postgres@127.0.0.1:{bouncer.port}/shop"
        )
        assert env["SHOP_REPLICA_URLS"] == bouncer.replica_url
        Settings.from_env({k: v for k, v in env.items() if k.startswith("SHOP_")})  # valid
    setup = direct_env(topology)
    assert setup["SHOP_DATABASE_URL"] == topology.primary.url  # port 31000: PostgreSQL itself
    assert "SHOP_REPLICA_URLS" not in setup
    # Started after the servers it fronts, before the instances; stopped the other way round.
    assert COMPONENTS.index("replica") < COMPONENTS.index("pgbouncer") < COMPONENTS.index("app1")
    assert _MARKERS["pgbouncer"] == "pgbouncer"
    assert Topology.from_json(topology.to_json()).pgbouncer == bouncer


def test_stack_flask_db_goes_direct_and_other_commands_through_pgbouncer(tmp_path, monkeypatch):
    topology = _build_topology(tmp_path, Ports.from_env({"STACK_PORT_BASE": "31000"}))
    seen: list[dict] = []
    monkeypatch.setattr("deploy.stack.cli.subprocess.run", lambda argv, env, **kw: seen.append(env))
    run_flask(topology, ["db", "upgrade"])
    run_flask(topology, ["user", "grant", "a@example.com", "admin"])
    assert seen[0]["SHOP_DATABASE_URL"] == topology.primary.url
    assert seen[1]["SHOP_DATABASE_URL"] == topology.pgbouncer.url


def test_a_topology_from_before_pgbouncer_still_loads(tmp_path):
    data = _build_topology(tmp_path, Ports.from_env({})).to_json()
    del data["pgbouncer"]
    old = Topology.from_json(data)
    assert old.pgbouncer.pid is None
    assert old.pgbouncer.port == old.primary.port + PGBOUNCER_OFFSET


def test_transaction_pooling_within_the_servers_budget(tmp_path):
    topology = _build_topology(tmp_path, Ports.from_env({"STACK_PORT_BASE": "31000"}))
    config = render(topology.pgbouncer, topology)
    settings = dict(re.findall(r"^(\w+) = ?(.*)$", config, re.M))
    assert settings["pool_mode"] == "transaction"
    assert settings["shop"] == "host=127.0.0.1 port=31000 dbname=shop"
    assert settings["shop_replica"] == "host=127.0.0.1 port=31001 dbname=shop"
    server_connections = int(settings["max_db_connections"])
    assert server_connections == topology.pgbouncer.server_connections
    assert int(settings["default_pool_size"]) + int(settings["reserve_pool_size"]) <= (
        server_connections
    )
    # An outage is a quick error, not a hang, and a server that is back is used within 1 s.
    assert int(settings["query_wait_timeout"]) < 5  # HAProxy's health-check timeout
    assert int(settings["server_login_retry"]) <= 1
    # `options` (a search_path) must be refused, never silently dropped.
    assert "options" not in settings["ignore_startup_parameters"]

    data = tmp_path / "pg"
    data.mkdir()
    _write_pg_conf(data, 31000)
    max_connections = int(
        re.search(r"max_connections = (\d+)", (data / "stack.conf").read_text())[1]
    )
    assert server_connections <= 0.8 * max_connections


@pytest.fixture
def topology(tmp_path) -> Iterator[Topology]:
    """A stack's topology on free ports, of which only PgBouncer is ever started here."""
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        missing("pgbouncer (Debian package pgbouncer)")
    p = free_ports(13)
    work = tmp_path / "stack"
    work.mkdir()
    work.chmod(0o755)
    tmp_path.chmod(0o755)
    built = _build_topology(work, Ports(p[0], p[1], p[2], p[3], (p[4], p[5], p[6]), *p[7:13]))
    (work / "logs").mkdir()
    (work / "run").mkdir()
    yield built
    if stack_module.is_alive(built, "pgbouncer"):
        stack_module.stop_component(built, "pgbouncer")


def test_pgbouncer_starts_crashes_and_starts_again_by_name(topology):
    stack_module.start_component(topology, "pgbouncer")
    bouncer = topology.pgbouncer
    databases = {row["name"]: row for row in admin_rows(bouncer, "SHOW DATABASES")}
    assert databases["shop"]["port"] == topology.primary.port
    assert databases["shop_replica"]["port"] == topology.replica.port
    config = {row["key"]: row["value"] for row in admin_rows(bouncer, "SHOW CONFIG")}
    assert config["pool_mode"] == "transaction"

    # A startup parameter PgBouncer does not track is refused by name, not dropped.
    with pytest.raises(psycopg2.OperationalError, match="unsupported startup parameter: options"):
        psycopg2.connect(
            host="127.0.0.1",
            port=bouncer.port,
            user="postgres",
            dbname="shop",
            options="-csearch_path=elsewhere",
            connect_timeout=3,
        )

    pid = stack_module.crash_component(topology, "pgbouncer")
    assert not _pid_alive(pid, "pgbouncer") and not stack_module.is_alive(topology, "pgbouncer")
    stack_module.start_component(topology, "pgbouncer")
    assert topology.pgbouncer.pid != pid and stack_module.is_alive(topology, "pgbouncer")
    assert admin_rows(bouncer, "SHOW VERSION")

    stack_module.stop_component(topology, "pgbouncer")
    assert _port_free(bouncer.port) and not Path(bouncer.pidfile).exists()
