"""The shop's edge cache: one Varnish config (``shop.vcl.j2``) for every topology that puts
Varnish between the balancer and the instances.

A :class:`Cache` holds what differs between topologies (where Varnish fetches from, the
session cookie's name); the rules (what is cached, for how long, what is never cached, who
may purge) are written once in the template. ``make stack`` renders it at every start
(``deploy/stack/varnish.py``); ``tests/deploy/test_varnish.py`` runs it against a stub backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "shop.vcl.j2"

# The name of the listening socket purges must arrive on (varnishd -a purge=HOST:PORT): the
# public one answers PURGE with 405 whoever sends it.
PURGE_SOCKET = "purge"
# The request header a purge names its tags in, space-separated (vmod xkey's purge()).
PURGE_HEADER = "xkey-purge"


@dataclass(frozen=True)
class Cache:
    """What one topology's Varnish needs that another's does not."""

    # Where misses and passes are fetched: host and port (the stack: HAProxy's
    # ``from_cache`` frontend, which balances over the instances).
    backend_host: str
    backend_port: int
    # The session cookie (SHOP_SESSION_COOKIE_NAME); over HTTPS the shop names it
    # ``__Host-<name>``, and either one makes a request personal.
    session_cookie: str = "shop_sid"


_TEMPLATES = Environment(
    loader=FileSystemLoader(HERE),
    undefined=StrictUndefined,
    autoescape=False,  # a config file, not HTML
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render(cache: Cache) -> str:
    """The VCL of the topology ``cache`` describes."""
    return _TEMPLATES.get_template(TEMPLATE.name).render(
        cache=cache, purge_socket=PURGE_SOCKET, purge_header=PURGE_HEADER
    )
