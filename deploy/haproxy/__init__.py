"""One HAProxy config for every topology that puts HAProxy in front of the shop.

The edge rules, timeouts, retries and health checks are written once, in ``haproxy.cfg.j2``;
an :class:`Edge` holds only what differs between the topologies, so the two balancers cannot
drift apart. ``make stack`` renders its config at every start (``deploy/stack/haproxy.py``);
docker-compose mounts ``deploy/compose/haproxy.cfg``, this module's render of :data:`COMPOSE`,
committed so that ``docker compose up`` needs no step first (``make haproxy-config`` rewrites
it; ``tests/deploy/test_compose.py`` fails while it differs from the render).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "haproxy.cfg.j2"
COMPOSE_CONFIG = HERE.parent / "compose" / "haproxy.cfg"


@dataclass(frozen=True)
class Tls:
    """An HTTPS listener: its port and the PEM file holding the certificate and its key."""

    port: int
    pem: str


@dataclass(frozen=True)
class CacheHop:
    """An edge cache (Varnish, deploy/varnish) behind the edge rules: GET and HEAD go to it at
    ``address`` (host:port), and it fetches its misses from a frontend of ours on
    ``return_port``, which balances over the instances like the edge does."""

    address: str
    return_port: int


@dataclass(frozen=True)
class Edge:
    """What one topology's balancer needs that another's does not; nothing else varies."""

    # Each instance's name and address (host:port), balanced round robin.
    servers: Mapping[str, str]
    # The plain-HTTP port, bound on ``host`` ("" is every address, as inside a container).
    port: int
    # Most connections at once: the local stack shares a developer's machine.
    maxconn: int
    host: str = ""
    # An HTTPS port too (the bind gets ``ssl crt``); None: plain HTTP only.
    tls: Tls | None = None
    # The one client address the rate rules leave alone (the local stack's own tools).
    rate_exempt: str | None = None
    # A DNS server resolving the servers' names, again after they move (Docker's embedded
    # one); None where the addresses are fixed.
    dns: str | None = None
    # HAProxy's admin socket, where the local stack reads its view of the instances.
    stats_socket: str | None = None
    # Threads; None: HAProxy's default, one per CPU it may run on.
    threads: int | None = None
    # An edge cache between the rules and the instances; None: requests go straight there.
    cache: CacheHop | None = None

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("an Edge needs at least one server")


# docker-compose.yml: app1..app3 by service name on port 8000 (SHOP_BIND), the balancer on 8000
# in its own container, which publishes it.
COMPOSE = Edge(
    servers={name: f"{name}:8000" for name in ("app1", "app2", "app3")},
    port=8000,
    maxconn=4096,
    dns="127.0.0.11:53",
)

_TEMPLATES = Environment(
    loader=FileSystemLoader(HERE),
    undefined=StrictUndefined,  # a misspelt field fails the render instead of printing nothing
    autoescape=False,  # a config file, not HTML
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render(edge: Edge) -> str:
    """The HAProxy config of the topology ``edge`` describes."""
    return _TEMPLATES.get_template(TEMPLATE.name).render(edge=edge)
