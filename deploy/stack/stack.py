"""The shop as it runs for real, on loopback: ``make stack`` / ``make stack-down``.

Why: what the shop promises (no stickiness, an instance may die, replica fallback, Redis and
primary outages) only shows with real servers and a real balancer. This starts them with ports
of their own, next to (never touching) any PostgreSQL or Redis already on the machine:

- PostgreSQL 15 primary and one streaming hot-standby replica (``pg_basebackup -R -X stream``),
  trust auth on 127.0.0.1 only, ``pg_stat_statements`` preloaded, database ``shop``;
- PgBouncer in transaction pooling in front of both (databases ``shop`` and ``shop_replica``),
  which the instances connect through; migrations and the seed go straight to the primary
  (``deploy/stack/pgbouncer.py``; docs/deploy.md, "Connection budget");
- Redis without persistence (stop + start gives an empty Redis);
- three gunicorn instances of the shop (app1..app3), migrated and seeded once with 2000 demo
  products;
- HAProxy, round robin without stickiness, health checks on ``/readyz``, with the edge rules
  (rate limits, 413 for oversized bodies, HSTS over TLS); plain HTTP on the balancer port and
  HTTPS with a self-signed certificate (made with ``openssl`` on first start) on base+14. Its
  config is rendered at every start from ``deploy/haproxy/haproxy.cfg.j2``, the template
  docker-compose's config is rendered from too (``haproxy.stack_edge`` says what differs);
- Varnish between HAProxy's edge rules and the instances for GET and HEAD (``deploy/varnish``,
  fetching its misses from a second HAProxy frontend on base+6), and the edge purger that turns
  the shop's catalogue invalidations into purges by tag (docs/edge-cache.md).

Command line (``python deploy/stack/stack.py``)::

    up                   start what is not running (already up: says so; exit 0)
    down [--purge]       stop everything by pid; --purge (or STACK_PURGE=1) also deletes data
    status               each part alive or dead, HAProxy's view of the instances
    restart-app NAME     stop app1/app2/app3 if it lives, start it the same way again

Environment: ``STACK_DIR`` (work folder, default ``.stack`` in the repo), ``STACK_PORT``
(balancer, default 8000), ``STACK_PORT_BASE`` (default 25400: +0 primary, +1 replica, +2 Redis,
+3 the SMTP sink, +4 Varnish, +5 its purge socket, +6 HAProxy's frontend for Varnish's misses,
+11..+13 app1..app3, +14 the balancer's HTTPS, +20 PgBouncer; below Linux's ephemeral range
32768-60999, so no outgoing connection can hold one of them), ``STACK_PG_BIN`` (default
/usr/lib/postgresql/15/bin), ``STACK_PURGE``.

Data directories are kept across ``down``/``up`` (the catalogue is seeded only into an empty
database; Redis always starts empty). ``down --purge`` deletes them, the logs, the secret key,
the TLS certificate and the rendered HAProxy config, so the next ``up`` starts from scratch.

Python API. A :class:`Topology` is what ``<work>/topology.json`` holds, as dataclasses:
``topology.url``, ``topology.primary`` and ``.replica`` (:class:`PgServer`: ``port``, ``dsn``,
``url``, ``log``, ...), ``topology.redis`` (:class:`RedisServer`), ``topology.apps["app1"]``
(:class:`App`: ``command``, ``env``, ``cwd``, ...), ``topology.balancer`` (:class:`Balancer`:
``url``, ``tls_url``, ``tls_pem``, ...); ``topology.component(name)`` takes the component
names ``primary``, ``replica``, ``pgbouncer``, ``redis``, ``smtp``, ``app1``, ``app2``,
``app3``, ``cache`` (Varnish), ``purger`` and ``balancer``.
Functions that start or stop something update the topology in place and save it.

``start_stack(work_dir=None, *, ports=None, seed_products=2000, echo=print) -> Topology``
    Bring the stack up (or only its dead parts) and return the topology.
``stop_stack(work_dir=None, *, purge=False, echo=print) -> None``
    Stop everything the topology names, by pid; remove topology.json.
``load_topology(work_dir=None) -> Topology | None``
``stack_status(topology) -> dict[str, bool]`` and ``is_alive(topology, name) -> bool``
``start_component(topology, name, *, wait=True) -> Topology`` / ``stop_component(topology, name)``
    Any component; ``stop_component(t, "redis")`` + ``start_component(t, "redis")`` gives an
    empty Redis. An app started while the primary or Redis is down waits for ``/healthz``
    only (its ``/readyz`` cannot pass).
``crash_component(topology, name) -> int``
    SIGKILL the component (no shutdown of its own), as a crash; ``start_component`` brings it
    back. Returns the pid.
``restart_app(topology, name, *, wait=True) -> Topology``
    Stop (if alive, leftover workers included) and start again with the recorded env/command.
``kill_app(topology, name, sig=signal.SIGKILL) -> int``
    Signal the gunicorn master only, like a crash; returns its pid. Orphaned workers notice
    within about a second and exit.
``haproxy_backends(topology, backend="shop") -> dict[str, str]``
    ``{"app1": "UP", ...}`` from the stats socket (first word of HAProxy's status: UP, DOWN,
    MAINT, NOLB; "UP 1/2" -- up, one check failed -- is reported as UP).
``wait_for_backends(topology, expected="UP", *, timeout=15.0, backend="shop") -> dict``
    Wait until HAProxy reports ``expected`` (one status for all, or ``{name: status}``).

``Ports.from_env()`` gives the ports the environment asks for; ``StackError`` is raised for
anything that cannot start (busy port, a part that never became ready: the message names its
log).

The code lives in this package, one module per part: ``topology`` (ports, the topology record),
``processes`` (pids, ports, waits), ``postgres``, ``pgbouncer``, ``redis_server`` (every
throwaway redis-server: the stack's daemon, the benchmark's and the tests'), ``apps``, ``haproxy``,
``components`` (one part by name), ``whole_stack`` (up, down) and ``cli``; this module gathers
the public names and is what the Makefile runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a script (the Makefile): import the package from the repository, not this folder.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from deploy.stack.cli import main  # noqa: E402
from deploy.stack.components import (  # noqa: E402
    crash_component,
    kill_app,
    restart_app,
    start_component,
    stop_component,
)
from deploy.stack.haproxy import haproxy_backends, wait_for_backends  # noqa: E402
from deploy.stack.processes import is_alive, stack_status  # noqa: E402
from deploy.stack.topology import (  # noqa: E402
    APP_NAMES,
    COMPONENTS,
    DEFAULT_PORT,
    DEFAULT_PORT_BASE,
    SEED_PRODUCTS,
    App,
    Balancer,
    Component,
    Echo,
    PgBouncer,
    PgServer,
    Ports,
    RedisServer,
    StackError,
    Topology,
    default_work_dir,
    load_topology,
    save_topology,
)
from deploy.stack.whole_stack import start_stack, stop_stack  # noqa: E402

__all__ = [
    "APP_NAMES",
    "COMPONENTS",
    "DEFAULT_PORT",
    "DEFAULT_PORT_BASE",
    "SEED_PRODUCTS",
    "App",
    "Balancer",
    "Component",
    "Echo",
    "PgBouncer",
    "PgServer",
    "Ports",
    "RedisServer",
    "StackError",
    "Topology",
    "crash_component",
    "default_work_dir",
    "haproxy_backends",
    "is_alive",
    "kill_app",
    "load_topology",
    "main",
    "restart_app",
    "save_topology",
    "stack_status",
    "start_component",
    "start_stack",
    "stop_component",
    "stop_stack",
    "wait_for_backends",
]

if __name__ == "__main__":
    sys.exit(main())
