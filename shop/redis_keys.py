"""Carrying sessions and carts from the key layout before Redis Cluster support to today's.

Keys once began with their kind (``<prefix>s:<ref>``, ``<prefix>cart:u:<id>``); now an owner's
keys begin with its hash tag (``<prefix>{s:<ref>}``, ``<prefix>{u:<id>}:cart``, see
shop/sessions.py), so that a script's keys share a Redis Cluster slot. Instances only read
today's keys: without this, a deploy signs everyone out and empties every cart. Run once on the
standalone Redis after the last old instance has stopped (``flask --app shop redis
upgrade-keys``); running it again does nothing. A Redis Cluster is a new data store and has
no old keys (and could not rename across slots).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import cast

import redis

from .sessions import account_tag, session_tag

# (old key pattern under the prefix, how today's key is made from its match)
_LAYOUT: list[tuple[str, Callable[[re.Match[str]], str]]] = [
    (r"s:([A-Za-z0-9_-]+):ended", lambda m: session_tag(m[1]) + ":ended"),
    (r"s:([A-Za-z0-9_-]+)", lambda m: session_tag(m[1])),
    (r"cart:s:([A-Za-z0-9_-]+)", lambda m: session_tag(m[1]) + ":cart"),
    (r"cart:u:(\d+)", lambda m: account_tag(m[1]) + ":cart"),
    (r"us:(\d+)", lambda m: account_tag(m[1]) + ":sessions"),
]


def upgrade_keys(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Rename each old-layout key to today's name, keeping its value and TTL (RENAMENX: a key
    a new instance already wrote wins, and the old one is dropped). Returns how many keys
    were moved and dropped."""
    patterns = [(re.compile(re.escape(prefix) + old + "$"), new) for old, new in _LAYOUT]
    counts = {"moved": 0, "dropped": 0}
    for kind in ("s:*", "cart:*", "us:*"):
        for key in client.scan_iter(f"{prefix}{kind}", count=1000):
            for pattern, new in patterns:
                found = pattern.fullmatch(key)
                if found is None:
                    continue
                if client.renamenx(key, prefix + new(found)):
                    counts["moved"] += 1
                else:
                    counts["dropped"] += cast(int, client.delete(key))
                break
    return counts
