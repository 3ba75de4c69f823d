"""The floor comparison's parts, with no server and no wrk: the floor app answers the bytes it
was given, the runs alternate strictly, the best run of each side is compared, the edge's
script counts X-Cache answers, and the edge is found only where a topology records one.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from bench import edge, floor, profiling, throughput, visitors
from bench.servers import Process
from shop.seed import CATEGORIES

HEADERS = [["Content-Type", "text/html; charset=utf-8"], ["Vary", "Cookie"], ["X-Served-By", "x"]]


def _page(body: bytes, headers=HEADERS) -> dict:
    return {"status": 200, "headers": headers, "body": base64.b64encode(body).decode()}


@pytest.fixture
def floor_client(tmp_path):
    pages = floor.write_pages(
        tmp_path / "pages.json",
        {
            "anonymous": {
                "/?page=2": _page(b"<p>grid 2, cart 0</p>"),
                "/products/7": _page(b"<p>seven \xe2\x82\xac</p>"),
            },
            "session": {
                "/?page=2": _page(b"<p>grid 2, cart 3</p>", [*HEADERS, ["Set-Cookie", "a=b"]]),
                "/products/7": _page(b"<p>seven, cart 3</p>"),
            },
        },
    )
    return floor.create_app(str(pages)).test_client()


def test_the_floor_answers_the_captured_bytes_and_headers(floor_client):
    answer = floor_client.get("/?page=2")
    assert (answer.status_code, answer.data) == (200, b"<p>grid 2, cart 0</p>")
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.headers["X-Served-By"] == "x" and "Set-Cookie" not in answer.headers
    assert floor_client.get("/products/7").data == "<p>seven €</p>".encode()


def test_a_visitor_with_a_cookie_gets_the_session_pages(floor_client):
    floor_client.set_cookie("shop_sid", "x")
    answer = floor_client.get("/?page=2")
    assert answer.data == b"<p>grid 2, cart 3</p>" and answer.headers["Set-Cookie"] == "a=b"


def test_the_floor_knows_only_the_captured_urls(floor_client):
    assert floor_client.get("/?page=3").status_code == 404
    assert floor_client.get("/products/8").status_code == 404
    assert floor_client.get("/static/shop.css").status_code == 404


def test_the_floor_page_sizes_are_the_captured_ones():
    sizes = floor.page_bytes({"anonymous": {"/": _page(b"abcd"), "/x": _page(b"ab")}})
    assert sizes == {"anonymous": 3}


def _run(rps: float, round_no: int) -> dict:
    return {"rps": rps, "connections": 32, "p50_ms": 9.0, "p99_ms": 30.0, "round": round_no}


def test_each_side_is_its_best_run_and_the_ratio_is_of_the_best():
    runs = {
        "floor": {16: [_run(4000, 1)], 32: [_run(4320, 1), _run(3900, 2), _run(4100, 3)]},
        "shop": {16: [_run(1800, 1)], 32: [_run(1700, 1), _run(1786, 2), _run(1200, 3)]},
    }
    for run in [r for side in runs.values() for rs in side.values() for r in rs]:
        run["bytes_per_request"] = 9000.0
    summary = floor.best_of(runs)
    assert summary["best"]["floor"]["rps"] == 4320 and summary["best"]["shop"]["rps"] == 1800
    assert summary["ratio"] == pytest.approx(1800 / 4320)
    assert summary["median"]["shop"] == {"16": 1800, "32": 1700}


def test_the_sides_strictly_alternate_when_the_rounds_do_not_rotate(monkeypatch, tmp_path):
    order: list[str] = []

    def fake_run(url, script, **_kwargs):
        order.append(url)
        return {"rps": 1.0, "requests": 1, "p50_ms": 1.0, "p99_ms": 1.0, "errors": 0, "cpu_wrk": 0}

    class Stats:
        def snapshot(self):
            return {}

        def delta(self, _before, _after):
            return {"commands": {}, "writes": {}}

    monkeypatch.setattr(throughput.wrk, "run", fake_run)
    monkeypatch.setattr(throughput, "warm", lambda *args: None)
    monkeypatch.setattr(throughput.time, "sleep", lambda _s: None)

    def process(name: str) -> Process:
        return Process(name, popen=None, log=tmp_path / name, url=name)  # type: ignore[arg-type]

    contenders = [
        throughput.Contender("floor", process("floor")),
        throughput.Contender("shop", process("shop")),
    ]
    for rotate, expected in ((False, ["floor", "shop"] * 6), (True, ["floor", "shop"] * 2)):
        order.clear()
        throughput.run_workload(
            "w",
            contenders,
            ["/"],
            concurrencies=[16, 32],
            rounds=3,
            duration=1,
            redis_stats=Stats(),  # type: ignore[arg-type]
            lua_dir=tmp_path,
            progress=lambda _line: None,
            rotate=rotate,
        )
        assert order[: len(expected)] == expected
    assert order[4:8] == ["shop", "floor", "shop", "floor"]  # rotated: round 2 starts with shop


def test_the_browsing_has_grid_category_and_product_pages():
    slugs = [slug for slug, _name in CATEGORIES]
    paths = visitors.catalogue_paths(10_000, slugs, pages_each=5)
    categories = [p for p in paths if p.startswith("/?category=")]
    assert len(categories) == 5 * len(slugs) and len(set(paths)) == len(paths)
    assert paths[: len(visitors.page_paths(10_000)) // 2].count(categories[0]) == 1
    assert {p.split("?")[0].split("/")[1] for p in paths} == {"", "products"}
    assert len([p for p in paths if p.startswith("/?page=")]) == 100


def test_the_edge_script_counts_hits_misses_and_answers_without_the_header(tmp_path):
    lupa = pytest.importorskip("lupa.lua51")  # wrk runs LuaJIT: Lua 5.1
    script = edge.cache_script(tmp_path / "edge.lua", ["/?page=1", "/products/2"])
    lua = lupa.LuaRuntime()
    lua.execute("wrk = {format = function(method, path) return method .. ' ' .. path end}")
    lua.execute(script.read_text())
    g = lua.globals()
    g.init(lua.table())
    assert [g.request() for _ in range(2)] == ["GET /products/2", "GET /?page=1"]
    for headers in ({"X-Cache": "HIT"}, {"x-cache": "hit 3"}, {"X-Cache": "MISS"}, {}):
        g.response(200, lua.table_from(headers), "")
    g.response(503, lua.table_from({"X-Cache": "MISS"}), "")
    counted = dict(g.counted.items())
    assert counted == {"HIT": 2, "MISS": 2, "none": 1, "responses": 5, "status 503": 1}


def test_the_edge_is_found_only_where_the_topology_records_one(tmp_path):
    (tmp_path / "topology.json").write_text(json.dumps({"url": "http://b:1"}))
    assert edge.edge_url(tmp_path) is None  # a stack from before the edge cache
    cache = {"port": 28590, "pid": 1}
    (tmp_path / "topology.json").write_text(json.dumps({"url": "http://b:1", "cache": cache}))
    assert edge.edge_url(tmp_path) == "http://b:1"  # its GETs go through the cache
    assert edge.stack_has_edge()  # the stacks this code starts have one


def test_product_changes_go_to_the_products_browsed_and_failures_are_kept():
    assert edge.products_in(["/?page=1", "/products/8", "/products/21", "/?category=x"]) == [8, 21]
    seen: list[tuple[int, int]] = []

    def change(product_id: int, stock: int) -> None:
        seen.append((product_id, stock))
        if product_id == 21:
            raise RuntimeError("refused")

    changes = edge.ProductChanges(change, [8, 21])
    changes.change_every = 0.0
    with changes:
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert seen[:3] == [(8, 50), (21, 51), (8, 52)]
    assert changes.done >= 2 and changes.failed[0] == "21: refused"


def test_a_profile_of_one_worker_is_grouped_by_what_the_time_is_for(tmp_path: Path):
    raw = tmp_path / "one.txt"
    raw.write_text(
        "handle (gunicorn/workers/gthread.py);Template.render (jinja2/environment.py);"
        "root (grid.html) 6\n"
        "handle (gunicorn/workers/gthread.py);open_session (shop/web/session_interface.py);"
        "Redis.execute_command (redis/client.py) 3\n"
        "handle (gunicorn/workers/gthread.py);write (gunicorn/util.py) 1\n"
        "handle (gunicorn/workers/gthread.py);token_hex (secrets.py:59);"
        "token_bytes (secrets.py:46) 10\n"
    )
    summary = profiling.summarise(raw, one_process=True)
    assert summary["samples"] == 20
    assert dict(summary["groups"]) == {
        "random bytes (secrets.token_bytes)": 0.5,
        "Jinja rendering": 0.3,
        "the session load": 0.15,
        "Redis round trips": 0.15,
        "gunicorn's socket writes": 0.05,
    }
    # Without one_process, stacks need a master and a worker frame: these have neither.
    assert profiling.summarise(raw)["samples"] == 0
