"""The edge's hit ratio: anonymous visitors browsing through the stack's HTTP cache in front of
the balancer while a product changes every second, through the shop's real write path.

A stack has an edge when its topology has the ``cache`` component (Varnish, between HAProxy's
edge rules and the instances: docs/edge-cache.md); visitors reach it through the stack's public
URL, where GET and HEAD pass through it, and each response says ``X-Cache: HIT`` or ``MISS``.
Without one, nothing is measured and the results say why: a ratio nobody measured is not
reported.

The change is ``flask --app shop product set ID --stock N``, invoked in this process on an app
built with an instance's own environment (its settings, its database, its Redis): the same
commit and ``catalogue.invalidate`` as an operator's, without starting a Python process a second
on a two-core machine.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from deploy.stack import topology as stack_topology

from . import wrk

NO_EDGE = "the stack has no edge yet"
CHANGE_EVERY = 1.0  # seconds between two product changes during the run
HEADER = "X-Cache"

RESPONSES = r"""
counted = {}

function response(status, headers, body)
  local value = headers[cache_header] or headers[string.lower(cache_header)]
  local kind = "none"
  if value ~= nil then
    if string.sub(string.upper(value), 1, 3) == "HIT" then kind = "HIT" else kind = "MISS" end
  end
  counted[kind] = (counted[kind] or 0) + 1
  counted.responses = (counted.responses or 0) + 1
  if status ~= 200 then counted["status " .. status] = (counted["status " .. status] or 0) + 1 end
end
"""


EDGE_COMPONENT = "cache"


def stack_has_edge() -> bool:
    """Whether the stacks this code starts have an edge at all (no stack needs to run)."""
    return EDGE_COMPONENT in stack_topology.COMPONENTS


def edge_url(work_dir: Path) -> str | None:
    """Where visitors reach a running stack's edge (its public URL, whose GETs pass through
    the cache), from ``topology.json``; None when that stack has no cache."""
    data = json.loads((Path(work_dir) / "topology.json").read_text())
    if not isinstance(data.get(EDGE_COMPONENT), dict):
        return None
    url = data.get("url")
    return str(url) if url else None


def not_measured(reason: str) -> dict:
    return {"measured": False, "reason": reason}


def cache_script(path: Path, paths: Sequence[str]) -> Path:
    """GETs cycling through ``paths`` with no cookie, counting each response's ``X-Cache``."""
    done = wrk.DONE.replace(
        "function done(summary, latency, requests)\n",
        "function done(summary, latency, requests)\n  print_counted()\n",
    )
    body = (
        wrk.COUNTED_THREADS
        + wrk.lua_table("paths", paths)
        + wrk.lua_table("cookies", [])
        + f"cache_header = {json.dumps(HEADER)}\n"
        + wrk.PAGES
        + RESPONSES
        + done
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("-- written by bench/edge.py\n" + body)
    return path


def products_in(paths: Sequence[str]) -> list[int]:
    """The products the browsing opens, in its order: the ones whose change it can see."""
    return [int(found[1]) for p in paths if (found := re.fullmatch(r"/products/(\d+)", p))]


class ProductChanges:
    """A thread changing the stock of the next product every ``change_every`` seconds
    (:data:`CHANGE_EVERY`) through ``change(product_id, stock)``, for as long as it runs;
    counts what it did."""

    def __init__(self, change: Callable[[int, int], None], product_ids: Sequence[int]) -> None:
        self.change = change
        self.product_ids = list(product_ids)
        self.change_every = CHANGE_EVERY
        self.done = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="product-changes", daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.monotonic()
            product_id = self.product_ids[n % len(self.product_ids)]
            try:
                self.change(product_id, 50 + n % 7)
                self.done += 1
            except Exception as exc:  # reported in the results, never silently dropped
                self.failed.append(f"{product_id}: {exc}")
            n += 1
            self._stop.wait(max(0.0, self.change_every - (time.monotonic() - started)))

    def __enter__(self) -> ProductChanges:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(30)


def shop_cli_change(app_env: dict[str, str]) -> Callable[[int, int], None]:
    """``flask --app shop product set ID --stock N`` on an app of the stack's own settings."""
    from shop import create_app
    from shop.config import Settings

    env = dict(app_env, SHOP_INSTANCE_NAME="bench-edge-writer")
    runner = create_app(Settings.from_env(env)).test_cli_runner()

    def change(product_id: int, stock: int) -> None:
        result = runner.invoke(args=["product", "set", str(product_id), "--stock", str(stock)])
        if result.exit_code != 0:
            raise RuntimeError(result.output.strip() or repr(result.exception))

    return change


def hit_ratio(
    url: str,
    paths: Sequence[str],
    change: Callable[[int, int], None],
    *,
    connections: int,
    duration: float,
    lua_dir: Path,
) -> dict:
    """One warm-up pass, then wrk through the edge while a product changes every second."""
    script = cache_script(lua_dir / "edge-browse.lua", paths)
    wrk.run(url, script, connections=connections, duration=min(3.0, duration))  # fill the cache
    changes = ProductChanges(change, products_in(paths))
    with changes:
        result = wrk.run(url, script, connections=connections, duration=duration)
    counted = result.get("counted") or {}
    responses = counted.get("responses", 0)
    return {
        "measured": True,
        "url": url,
        "paths": len(paths),
        "connections": connections,
        "seconds": result["seconds"],
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["errors"],
        "responses": responses,
        "hits": counted.get("HIT", 0),
        "misses": counted.get("MISS", 0),
        "without_header": counted.get("none", 0),
        "hit_ratio": counted.get("HIT", 0) / responses if responses else None,
        "changes": changes.done,
        "change_every": changes.change_every,
        "change_failures": changes.failed[:5],
    }
