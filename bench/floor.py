"""The floor: a bare Flask app answering each URL with the bytes the shop served for it.

No template, no session, no cache, no shop code on the request path: a dictionary lookup and
a Flask response, under the shop's own ``gunicorn.conf.py`` with the shop's workers and
threads. The pages are captured from the real shop in the same run (:func:`capture`) and stored
in a JSON file the app loads at start; whatever the shop does beyond serving those bytes is what
separates it from the floor.

A request with a ``Cookie`` header gets the pages captured for the session visitor (the bodies
the shop served that visitor, cart count and all), one without gets the anonymous pages.

``gunicorn 'bench.floor:create_app()' -c gunicorn.conf.py`` with ``BENCH_FLOOR_PAGES`` naming
the captured pages.
"""

from __future__ import annotations

import base64
import json
import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

import requests
from flask import Flask, Response, abort, request

PAGES_ENV = "BENCH_FLOOR_PAGES"
# Headers gunicorn writes itself (or that describe the connection, not the page).
_NOT_REPLAYED = frozenset(
    {"date", "server", "connection", "keep-alive", "content-length", "transfer-encoding"}
)
# What wrk sends besides Host (and the Cookie of a session visitor): a capture asks the same.
_AS_WRK: dict[str, str | None] = {"User-Agent": None, "Accept": None, "Accept-Encoding": "identity"}


def capture(base: str, paths: Iterable[str], cookie: str | None = None) -> dict[str, dict]:
    """Each path as the shop at ``base`` answers it: status, the headers it sent (those of
    the page, not of the connection) and the body, base64 so the bytes survive JSON."""
    http = requests.Session()
    http.trust_env = False  # loopback, never through a proxy
    headers = dict(_AS_WRK, **({"Cookie": cookie} if cookie else {}))
    pages = {}
    for path in paths:
        answer = http.get(base + path, headers=headers, timeout=30, allow_redirects=False)
        if answer.status_code != 200:
            raise RuntimeError(f"capturing {path}: the shop answered {answer.status_code}")
        pages[path] = {
            "status": answer.status_code,
            "headers": [
                [name, value]
                for name, value in answer.raw.headers.items()
                if name.lower() not in _NOT_REPLAYED
            ],
            "body": base64.b64encode(answer.content).decode("ascii"),
        }
    return pages


def write_pages(path: Path, visitors: dict[str, dict[str, dict]]) -> Path:
    """``{"anonymous": pages, "session": pages}`` where the app will load them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(visitors))
    return path


def body(page: dict) -> bytes:
    """A captured page's body, as the shop sent it."""
    return base64.b64decode(page["body"])


def page_bytes(visitors: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Mean body size per visitor: the report shows the floor serves pages of the shop's size."""
    return {
        visitor: statistics.mean(len(body(page)) for page in pages.values())
        for visitor, pages in visitors.items()
        if pages
    }


def create_app(pages_file: str | None = None) -> Flask:
    data = json.loads(Path(pages_file or os.environ[PAGES_ENV]).read_text())
    tables = {
        visitor: {
            path: (
                page["status"],
                [(name, value) for name, value in page["headers"]],
                body(page),
            )
            for path, page in pages.items()
        }
        for visitor, pages in data.items()
    }
    anonymous = tables["anonymous"]
    with_session = tables.get("session", anonymous)
    app = Flask(__name__, static_folder=None)

    @app.get("/", defaults={"rest": ""})
    @app.get("/<path:rest>")
    def page(rest: str) -> Response:
        table = with_session if "Cookie" in request.headers else anonymous
        key = request.full_path if request.query_string else request.path
        found = table.get(key)
        if found is None:
            abort(404)
        status, headers, body = found
        return Response(body, status, headers)

    return app


# -- the comparison ---------------------------------------------------------------------------


def best_of(runs: dict[str, dict], sides: Sequence[str] = ("floor", "shop")) -> dict:
    """Each side's best run over the rounds and concurrencies (the issue's "best of three"),
    its median per concurrency beside it, and ``shop / floor`` of the best runs."""
    summary: dict = {"best": {}, "median": {}}
    for side in sides:
        by_connections = runs.get(side, {})
        every = [run for results in by_connections.values() for run in results]
        if not every:
            continue
        best = max(every, key=lambda run: run["rps"])
        summary["best"][side] = {
            key: best[key]
            for key in ("connections", "rps", "p50_ms", "p99_ms", "round", "bytes_per_request")
        }
        summary["median"][side] = {
            str(c): statistics.median(run["rps"] for run in results)
            for c, results in by_connections.items()
            if results
        }
    best = summary["best"]
    if "floor" in best and "shop" in best and best["floor"]["rps"]:
        summary["ratio"] = best["shop"]["rps"] / best["floor"]["rps"]
    return summary
