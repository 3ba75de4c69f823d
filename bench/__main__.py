"""``python -m bench [--quick]``: the whole benchmark in one run; prints a table and rewrites
BENCHMARKS.md, docs/benchmarks/throughput.png and bench/results/latest.json.

Environment: ``BENCH_DURATION`` (seconds per wrk run, default 6), ``BENCH_ROUNDS`` (default 3),
``BENCH_CONNECTIONS`` (default ``16,32,64``), ``BENCH_MIX_CONNECTIONS`` (default ``16,32,64``),
``BENCH_SCALE_LARGE`` (default 1000000), ``BENCH_SCALE_REPETITIONS`` (default 50),
``BENCH_WORKERS`` / ``BENCH_THREADS`` (gunicorn, default 2 x 4), ``BENCH_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432``; the database ``bench`` is created there).
The floor comparison: ``BENCH_FLOOR_ROUNDS`` (default 3), ``BENCH_FLOOR_CONNECTIONS`` (default
``16,32``; quick ``32``), ``BENCH_FLOOR_DURATION`` (default 6; quick 5). The stack the
benchmark starts takes ``STACK_PORT_BASE`` / ``STACK_PORT`` when they are set.

``--quick --only floor`` runs just the shop against the floor, in about two minutes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import redis
import requests

from shop.config import Settings
from shop.seed import CATEGORIES
from shop.session_ids import session_ref
from shop.sessions import session_tag

from . import (
    PARTS,
    edge,
    floor,
    instructions,
    invalidation,
    mix,
    profiling,
    report,
    scale,
    servers,
    throughput,
    visitors,
    wrk,
)
from .report import PROFILES, RESULTS
from .servers import BenchError, Process
from .shop_templates import REPO

TPUT_SCHEMA = "tput"
TPUT_PRODUCTS = 10_000
SESSIONS = 32
PROFILE_CONNECTIONS = 32


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def settings(quick: bool) -> dict:
    """The run's settings, recorded in its results: the report states them from there, so it
    describes the run that was made, whatever the code says by the time it is rendered."""
    env = os.environ
    return {
        "quick": quick,
        "duration": float(env.get("BENCH_DURATION", "3" if quick else "6")),
        "rounds": int(env.get("BENCH_ROUNDS", "1" if quick else "3")),
        "connections": _ints(env.get("BENCH_CONNECTIONS", "16,32" if quick else "16,32,64")),
        "mix_connections": _ints(env.get("BENCH_MIX_CONNECTIONS", "32" if quick else "16,32,64")),
        "scale_sizes": [1000, int(env.get("BENCH_SCALE_LARGE", "100000" if quick else "1000000"))],
        "scale_repetitions": int(env.get("BENCH_SCALE_REPETITIONS", "10" if quick else "50")),
        "shoppers": 60 if quick else 150,
        "workers": servers.WORKERS,
        "threads": servers.THREADS,
        "products": TPUT_PRODUCTS,
        "profile_seconds": 4 if quick else 8,
        "database": servers.DATABASE,
        "schema": TPUT_SCHEMA,
        # The shop's catalogue tiers in workloads (a) and (b) (throughput_env): a Redis tier
        # that outlasts the run (servers.CACHE_TTL), and the in-process tier as it comes.
        "catalogue_cache_ttl": servers.CACHE_TTL,
        "catalogue_local_ttl": Settings().catalogue_local_ttl,
        "instrumented": servers.INSTRUMENTED,
        "cart_lines": visitors.CART_LINES,
        "sessions": SESSIONS,
        "grid_pages": visitors.grid_pages(TPUT_PRODUCTS),
        "products_opened": visitors.PRODUCTS_OPENED,
        "max_attempts": throughput.MAX_ATTEMPTS,
        "foreign_cpu_limit": throughput.FOREIGN_LIMIT,
        "profile_connections": PROFILE_CONNECTIONS,
        "profile_rate": profiling.RATE_HZ,
        # The floor comparison (bench/floor.py): the method, best of three per side,
        # in quick runs too.
        "floor_rounds": int(env.get("BENCH_FLOOR_ROUNDS", "3")),
        "floor_connections": _ints(env.get("BENCH_FLOOR_CONNECTIONS", "32" if quick else "16,32")),
        "floor_duration": float(env.get("BENCH_FLOOR_DURATION", "5" if quick else "6")),
        "category_pages": visitors.CATEGORY_PAGES,
        "edge_connections": PROFILE_CONNECTIONS,
        "edge_change_every": edge.CHANGE_EVERY,
        "invalidation_sizes": list(invalidation.SIZES),
        "invalidation_repetitions": 300 if quick else 2000,
    }


def throughput_env(cfg: dict, redis_url: str) -> dict[str, str]:
    """The environment of the contenders in workloads (a) and (b): the shop's catalogue tiers
    as the run's settings record them."""
    return servers.shop_env(
        cfg["schema"],
        redis_url,
        SHOP_CATALOGUE_CACHE_TTL=str(cfg["catalogue_cache_ttl"]),
        SHOP_CATALOGUE_LOCAL_TTL=f"{cfg['catalogue_local_ttl']:g}",
    )


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        print(f"[{time.monotonic() - self.started:6.0f} s] {line}", flush=True)


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip()


def page_sizes(contenders: dict[str, Process]) -> dict:
    """The same anonymous pages from each contender: the ceiling must render what the shop
    renders (within 3 %), or it is no ceiling."""
    sizes: dict = {}
    for path in ("/?page=3", "/products/77"):
        sizes[path] = {
            name: len(requests.get(p.url + path, timeout=30).content)
            for name, p in contenders.items()
        }
    ok = all(
        abs(row["ceiling"] / row["shop"] - 1) <= 0.03
        and abs(row["conventional"] / row["shop"] - 1) <= 0.03
        for row in sizes.values()
    )
    return {"sizes": sizes, "ok": ok}


def counted_under_load(
    server: Process, workload: str, paths, cookies, headers, duration: float, lua_dir: Path
) -> dict:
    """The app's own counts, summed by wrk from every response of a run on the twin."""
    script = wrk.pages_script(
        lua_dir / f"{workload}-{server.name}-counted.lua", paths, cookies, headers
    )
    # A first, uncounted run: every worker's in-process tier sees every path before counting.
    wrk.run(server.url, script, connections=PROFILE_CONNECTIONS, duration=min(3.0, duration))
    result = wrk.run(server.url, script, connections=PROFILE_CONNECTIONS, duration=duration)
    counted = result.get("counted") or {}
    n = max(1, counted.get("responses", 0))
    sql_header, redis_header = headers
    return {
        "responses": counted.get("responses", 0),
        "rps": result["rps"],
        "sql_per_request": counted[sql_header] / n if sql_header in counted else None,
        "sql_max": counted.get(f"max {sql_header}"),
        "redis_per_request": counted[redis_header] / n if redis_header in counted else None,
        "redis_max": counted.get(f"max {redis_header}"),
    }


def memory_of_session(shop: Process, redis_url: str) -> dict:
    cookie = visitors.shop_session(shop.url)
    cookie_value = dict(part.split("=", 1) for part in cookie.split("; "))["shop_sid"]
    ref = session_ref(cookie_value.split(".")[0])  # Redis knows a session by its id's hash
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    tag = session_tag(ref)  # the layout of shop/sessions.py and shop/cart.py
    keys = {"session": f"bench:{tag}", "cart": f"bench:{tag}:cart"}
    usage = {name: client.memory_usage(key, samples=0) for name, key in keys.items()}
    total = sum(v or 0 for v in usage.values())
    return {
        "keys": keys,
        "bytes": usage,
        "total": total,
        "fields": {name: client.hgetall(key) for name, key in keys.items()},
    }


def choose_cart_products(cfg: dict) -> None:
    """Products with stock for the carts of a session visitor (seeded stock includes 0, and
    a cart refuses what is sold out)."""
    lines = cfg["cart_lines"]
    in_stock = servers.sql(
        cfg["schema"],
        "SELECT id FROM products WHERE stock >= 10 ORDER BY id LIMIT %s",
        (lines * 7,),
    )
    visitors.CART_PRODUCTS = [row[0] for row in in_stock][::7][:lines]


def run_throughput(cfg: dict, results: dict, redis_url: str, log: Clock) -> None:
    logs, lua = RESULTS / "logs", RESULTS / "lua"
    base = throughput_env(cfg, redis_url)
    conv_env = dict(
        base, BENCH_DATABASE_URL=servers.schema_url(cfg["schema"]), BENCH_REDIS_URL=redis_url
    )
    log("starting the contenders: ceiling, conventional, shop (+ instrumented twins)")
    ceiling = servers.start_gunicorn(
        "ceiling",
        "bench.ceiling:create_app()",
        dict(base, BENCH_CEILING_PRODUCTS=str(cfg["products"])),
        logs,
    )
    conventional = servers.start_gunicorn(
        "conventional", "bench.conventional:create_app()", conv_env, logs
    )
    shop = servers.start_gunicorn("shop", "wsgi:app", base, logs, ready_path="/healthz")
    shop_twin = servers.start_gunicorn(
        "shop-instrumented",
        "wsgi:app",
        dict(base, **cfg["instrumented"]["shop"]),
        logs,
        "/healthz",
    )
    conv_twin = servers.start_gunicorn(
        "conventional-instrumented",
        "bench.conventional:create_app()",
        dict(conv_env, **cfg["instrumented"]["conventional"]),
        logs,
    )
    processes = {"ceiling": ceiling, "conventional": conventional, "shop": shop}
    results["page_sizes"] = page_sizes(processes)
    log(f"  page sizes {results['page_sizes']['sizes']} ok={results['page_sizes']['ok']}")
    if not results["page_sizes"]["ok"]:
        raise BenchError(f"the contenders do not render the same pages: {results['page_sizes']}")
    paths = visitors.page_paths(cfg["products"], cfg["grid_pages"], cfg["products_opened"])
    stats = visitors.RedisStats(redis_url)
    shop_headers = ("X-Shop-SQL", "X-Shop-Redis")
    conv_headers = ("X-Bench-SQL", "X-Bench-Redis")

    lines = cfg["cart_lines"]
    log(f"making the shoppers of workload (b): {lines}-line carts through each app's own HTTP")
    choose_cart_products(cfg)
    shop_cookies = visitors.sessions(visitors.shop_session, shop.url, cfg["sessions"])
    conv_cookies = visitors.sessions(
        visitors.conventional_session, conventional.url, cfg["sessions"]
    )

    # (b): the ceiling has no session; it is sent the shop's cookies all the same.
    b_cookies = {"ceiling": shop_cookies, "conventional": conv_cookies, "shop": shop_cookies}
    for workload, cookies in (("a", {}), ("b", b_cookies)):
        contenders = [
            throughput.Contender(name, processes[name], cookies.get(name, []))
            for name in throughput.CONTENDERS
        ]
        log(f"workload ({workload}): {len(paths)} paths, rounds of A B C at {cfg['connections']}")
        runs = throughput.run_workload(
            workload,
            contenders,
            paths,
            concurrencies=cfg["connections"],
            rounds=cfg["rounds"],
            duration=cfg["duration"],
            redis_stats=stats,
            lua_dir=lua,
            progress=log,
        )
        summary = throughput.summarise(runs)
        log(f"  counting SQL and Redis per request on the instrumented twins ({workload})")
        visitors.warm(shop_twin.url, paths, cookies.get("shop", []))
        visitors.warm(conv_twin.url, paths, cookies.get("conventional", []))
        counts = {
            "shop": counted_under_load(
                shop_twin,
                workload,
                paths,
                cookies.get("shop", []),
                shop_headers,
                cfg["duration"],
                lua,
            ),
            "conventional": counted_under_load(
                conv_twin,
                workload,
                paths,
                cookies.get("conventional", []),
                conv_headers,
                cfg["duration"],
                lua,
            ),
        }
        results[workload] = {"runs": runs, "summary": summary, "counts": counts}
        log(
            f"  ({workload}) shop/ceiling {summary.get('shop_vs_ceiling', 0):.2f}  "
            f"shop/conventional {summary.get('shop_vs_conventional', 0):.2f}  counts {counts}"
        )

    results["memory"] = memory_of_session(shop, redis_url)
    memory = results["memory"]["total"]
    log(f"Redis memory of a session with a {cfg['cart_lines']}-line cart: {memory} bytes")

    results["profiles"] = {}
    for workload, goal in report.CEILING_SHARE.items():
        ratio = results[workload]["summary"].get("shop_vs_ceiling", 0)
        if ratio >= goal and not cfg.get("profile_always"):
            continue
        if not profiling.available():
            log("  py-spy is not installed: no profile (pip install py-spy)")
            break
        log(
            f"  ({workload}) shop at {ratio:.2f} x the ceiling (goal {goal}): profiling with py-spy"
        )
        script = lua / f"{workload}-shop.lua"
        results["profiles"][workload] = profiling.profile(
            shop,
            script,
            connections=cfg["profile_connections"],
            seconds=cfg["profile_seconds"],
            out_dir=PROFILES,
            name=f"shop-{workload}",
        )
        if workload == "a":  # what the ceiling spends, for comparison
            results["profiles"]["ceiling-a"] = profiling.profile(
                ceiling,
                lua / "a-ceiling.lua",
                connections=cfg["profile_connections"],
                seconds=cfg["profile_seconds"],
                out_dir=PROFILES,
                name="ceiling-a",
            )
    for process in (conv_twin, shop_twin, shop, conventional, ceiling):
        process.stop()


def run_floor(cfg: dict, results: dict, redis_url: str, log: Clock) -> None:
    """The shop against the floor (bench/floor.py): the same URLs, the same wrk settings,
    strictly alternating runs and the best of each side, for an anonymous visitor and for a
    session visitor with a cart; then the shop's own counts, and a profile of one worker where
    a target is missed."""
    logs = RESULTS / "logs"
    base = throughput_env(cfg, redis_url)
    log("floor: starting the shop (+ an instrumented twin)")
    shop = servers.start_gunicorn("shop", "wsgi:app", base, logs, ready_path="/healthz")
    twin = servers.start_gunicorn(
        "shop-instrumented", "wsgi:app", dict(base, **cfg["instrumented"]["shop"]), logs, "/healthz"
    )
    categories = [slug for slug, _name in CATEGORIES]
    paths = visitors.catalogue_paths(cfg["products"], categories, cfg["category_pages"])
    choose_cart_products(cfg)
    cookies = visitors.sessions(visitors.shop_session, shop.url, cfg["sessions"])
    visitors.warm(shop.url, paths)
    visitors.warm(shop.url, paths, cookies)
    log(f"  capturing what the shop serves for {len(paths)} paths, anonymous and with a session")
    captured = {
        "anonymous": floor.capture(shop.url, paths),
        "session": floor.capture(shop.url, paths, cookies[0]),
    }
    # Kept while the floor runs: each worker reads the pages when it starts (a replaced one too).
    folder = Path(tempfile.mkdtemp(prefix="shop-bench-floor-"))
    try:
        pages = floor.write_pages(folder / "pages.json", captured)
        floor_server = servers.start_gunicorn(
            "floor",
            "bench.floor:create_app()",
            dict(base, **{floor.PAGES_ENV: str(pages)}),
            logs,
            ready_path=paths[0],
        )
        results["floor"] = {
            "paths": len(paths),
            "grid_pages": sum(p.startswith("/?page=") for p in paths),
            "category_pages": sum(p.startswith("/?category=") for p in paths),
            "product_pages": sum(p.startswith("/products/") for p in paths),
            "page_bytes": floor.page_bytes(captured),
            "workloads": {},
        }
        served = requests.get(floor_server.url + paths[-1], timeout=10).content
        if served != floor.body(captured["anonymous"][paths[-1]]):
            raise BenchError(f"the floor does not serve the shop's bytes for {paths[-1]}")
        stats = visitors.RedisStats(redis_url)
        for workload, visitor_cookies in (("anonymous", []), ("session", cookies)):
            results["floor"]["workloads"][workload] = floor_workload(
                cfg, workload, paths, visitor_cookies, (floor_server, shop, twin), stats, log
            )
        floor_server.stop()
        log("  floor: instructions per warm page under callgrind (floor, shop, session load)")
        results["floor"]["instructions"] = instructions.measure(
            base, pages, paths[:: max(1, len(paths) // 12)], cookies[0], cwd=REPO
        )
        if "error" in results["floor"]["instructions"]:
            log(f"  floor: no instruction counts: {results['floor']['instructions']['error']}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for process in (twin, shop):
        process.stop()


def floor_workload(
    cfg: dict,
    workload: str,
    paths: list[str],
    cookies: list[str],
    processes: tuple[Process, Process, Process],
    stats: visitors.RedisStats,
    log: Clock,
) -> dict:
    """One visitor's comparison: the timed runs, the shop's counts, a profile if missed."""
    floor_server, shop, twin = processes
    lua = RESULTS / "lua"
    contenders = [
        throughput.Contender("floor", floor_server, cookies),
        throughput.Contender("shop", shop, cookies),
    ]
    log(
        f"  floor ({workload}): {cfg['floor_rounds']} rounds of floor, shop at "
        f"{cfg['floor_connections']} connections, {cfg['floor_duration']:g} s each"
    )
    runs = throughput.run_workload(
        f"floor-{workload}",
        contenders,
        paths,
        concurrencies=cfg["floor_connections"],
        rounds=cfg["floor_rounds"],
        duration=cfg["floor_duration"],
        redis_stats=stats,
        lua_dir=lua,
        progress=log,
        rotate=False,
    )
    summary = floor.best_of(runs)
    visitors.warm(twin.url, paths, cookies)
    counts = counted_under_load(
        twin,
        f"floor-{workload}",
        paths,
        cookies,
        ("X-Shop-SQL", "X-Shop-Redis"),
        cfg["floor_duration"],
        lua,
    )
    shop_runs = [run for results_ in runs["shop"].values() for run in results_]
    writes: dict[str, int] = {}
    for run in shop_runs:
        for command, n in run["redis_writes"].items():
            writes[command] = writes.get(command, 0) + n
    entry = {
        "runs": runs,
        "summary": summary,
        "counts": counts,
        "redis_writes_per_request": max(run["redis_writes_per_request"] for run in shop_runs),
        "redis_writes": writes,
    }
    goal = report.FLOOR_SHARE[workload]
    ratio = summary.get("ratio", 0.0)
    log(f"  floor ({workload}): shop / floor {ratio:.2f} (goal {goal}), counts {counts}")
    if (ratio < goal or cfg.get("profile_always")) and profiling.available():
        log(f"  floor ({workload}): profiling one shop worker with py-spy")
        entry["profile"] = profiling.profile(
            shop,
            lua / f"floor-{workload}-shop.lua",
            connections=cfg["profile_connections"],
            seconds=cfg["profile_seconds"],
            out_dir=PROFILES,
            name=f"floor-{workload}-shop",
            one_worker=True,
        )
    elif ratio < goal:
        log("  py-spy is not installed: no profile (pip install py-spy)")
    return entry


def run_edge(cfg: dict, results: dict, stack: mix.Stack, log: Clock) -> None:
    """The edge's hit ratio, in a stack that has an edge (run_stack_parts checks first)."""
    url = edge.edge_url(stack.work)
    if url is None:
        results["edge"] = edge.not_measured("the stack's topology.json records no edge URL")
        return
    categories = [slug for slug, _name in CATEGORIES]
    paths = visitors.catalogue_paths(cfg["products"], categories, cfg["category_pages"])
    assert stack.topology is not None
    writer = edge.shop_cli_change(stack.topology.apps["app1"].env)
    log(f"edge: anonymous browsing through {url}, a product changing every second")
    results["edge"] = edge.hit_ratio(
        url,
        paths,
        writer,
        connections=cfg["edge_connections"],
        duration=cfg["duration"] * 2,
        lua_dir=RESULTS / "lua",
    )
    e = results["edge"]
    log(f"  edge: {e['hits']} HIT of {e['responses']} ({e['hit_ratio']}), {e['changes']} changes")


def run_scale(cfg: dict, results: dict, redis_url: str, log: Clock) -> None:
    logs = RESULTS / "logs"
    sizes = cfg["scale_sizes"]
    log(f"catalogue scale: schemas of {', '.join(f'{s:,}' for s in sizes)} products")
    seeded = scale.prepare(sizes, redis_url, logs, log)
    timings = {}
    for size in sizes:
        server = scale.start_instance(size, redis_url, logs)
        try:
            timings[size] = scale.time_misses(
                server, size, redis_url, cfg["scale_repetitions"], log
            )
        finally:
            server.stop()
    small, large = sizes
    ratios = {
        label: timings[large][label]["median_ms"] / timings[small][label]["median_ms"]
        for label in timings[small]
    }
    results["scale"] = {
        "sizes": sizes,
        "schemas": [scale.schema(size) for size in sizes],
        "catalogue_local_ttl": scale.LOCAL_TTL,
        "rare_word": scale.RARE_WORD,
        "rare_products": len(scale.RARE_PRODUCTS),
        "seed_seconds": {str(k): v for k, v in seeded.items()},
        "timings": {str(k): v for k, v in timings.items()},
        "ratios": ratios,
    }


def run_invalidation(cfg: dict, results: dict, log: Clock) -> None:
    """One product's invalidation in in-process tiers of each size (no server)."""
    sizes = cfg["invalidation_sizes"]
    log(f"invalidation: dropping one product from tiers of {', '.join(f'{s:,}' for s in sizes)}")
    results["invalidation"] = invalidation.measure(sizes, cfg["invalidation_repetitions"])
    by = results["invalidation"]["by_size"]
    log("  " + ", ".join(f"{size}: {by[str(size)]['drop']['median_us']:.1f} µs" for size in sizes))


def run_stack_parts(cfg: dict, results: dict, parts: tuple[str, ...], log: Clock) -> None:
    """One stack for workload (c), the checkout race and the edge, started only if needed: a
    stack without an edge gives the edge part nothing to measure."""
    if "edge" in parts and not edge.stack_has_edge():
        results["edge"] = edge.not_measured(edge.NO_EDGE)
        log(f"edge: not measured: {edge.NO_EDGE}")
    if "stack" not in parts and "edge" in results:
        return
    log("the stack: PostgreSQL primary + replica, Redis, the shop's instances, HAProxy")
    with mix.Stack(cfg["products"], log) as stack:
        if "stack" in parts:
            run_stack(cfg, results, stack, log)
        if "edge" in parts and "edge" not in results:
            run_edge(cfg, results, stack, log)


def run_stack(cfg: dict, results: dict, stack: mix.Stack, log: Clock) -> None:
    log(f"  registering {cfg['shoppers']} shoppers through the balancer")
    shoppers = stack.register(cfg["shoppers"])
    half = min(50, len(shoppers) // 2)
    log(f"  checkout: {half} buyers on one product, then {half} on {half} products")
    one = mix.checkout_race(stack, shoppers[:half], [5001], half)
    many_ids = list(range(5101, 5101 + half))
    many = mix.checkout_race(stack, shoppers[half : 2 * half], many_ids, 10)
    results["checkout"] = {"one_product": one, "many_products": many}
    for race in (one, many):
        log(
            f"    {race['buyers']} buyers / {race['products']} product(s): {race['orders']} "
            f"orders in {race['seconds']:.2f} s = {race['orders_per_second']:.1f}/s, "
            f"oversold {race['oversold_units']}, consistent {race['ok']}"
        )
    for buyer in shoppers[: 2 * half]:  # whatever a refused checkout left in a cart
        for pid in [5001, *many_ids]:
            mix.api(stack.url, buyer, "DELETE", f"/cart/items/{pid}")
    log(f"workload (c): the mix through the balancer, closed loop at {cfg['mix_connections']}")
    results["c"] = mix.run_mix(
        stack,
        shoppers,
        visitors.page_paths(cfg["products"], cfg["grid_pages"], cfg["products_opened"]),
        concurrencies=cfg["mix_connections"],
        duration=cfg["duration"] * (1 if cfg["quick"] else 1.5),
        lua_dir=RESULTS / "lua",
        progress=log,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about two minutes")
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only these parts (repeatable); BENCHMARKS.md is then left alone",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile the shop even if it meets its targets"
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite BENCHMARKS.md and the plot from bench/results/latest.json",
    )
    args = parser.parse_args(argv)
    if args.report:
        report.write(json.loads((RESULTS / "latest.json").read_text()), REPO)
        print("rewrote BENCHMARKS.md and docs/benchmarks/throughput.png from latest.json")
        return 0
    cfg = settings(args.quick)
    cfg["profile_always"] = args.profile
    parts = args.only or PARTS
    # Only the in-process parts: no wrk, no servers, no catalogue to seed.
    servers_needed = any(part != "invalidation" for part in parts)
    log = Clock()
    try:
        if servers_needed:
            wrk.require_wrk()
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 2

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git("rev-parse", "HEAD"),
            "dirty": git("status", "--porcelain", "--", "shop", "templates", "wsgi.py"),
            "machine": servers.versions(),
            "settings": cfg,
            "command": " ".join(
                ["python -m bench", *(["--quick"] if args.quick else [])]
                + [f"--only {part}" for part in args.only or ()]
            ),
        }
    }
    log(f"bench: {', '.join(parts)}")
    status = 0
    try:
        if "invalidation" in parts:
            run_invalidation(cfg, results, log)
        if servers_needed:
            redis_server = servers.start_redis(RESULTS / "logs")
            results["meta"]["machine"]["redis"] = servers.redis_version(redis_server.url)
            log(f"throughput schema: {cfg['products']:,} products")
            seeded = servers.ensure_catalogue(
                cfg["schema"], cfg["products"], redis_server.url, RESULTS / "logs", echo=log
            )
            results["meta"]["machine"]["postgresql"] = servers.postgres_version()
            results["meta"]["tput_seed_seconds"] = seeded
        if "throughput" in parts:
            run_throughput(cfg, results, redis_server.url, log)
        if "floor" in parts:
            run_floor(cfg, results, redis_server.url, log)
        if "scale" in parts:
            run_scale(cfg, results, redis_server.url, log)
        if "stack" in parts or "edge" in parts:
            run_stack_parts(cfg, results, tuple(parts), log)
    except KeyboardInterrupt:
        log("interrupted: stopping every server the benchmark started")
        status = 130
    except BenchError as exc:
        log(f"FAILED: {exc}")
        status = 1
    except Exception:
        log("FAILED with an error of the benchmark itself:")
        traceback.print_exc()
        status = 1
    finally:
        servers.stop_all()
    results["meta"]["elapsed_seconds"] = time.monotonic() - log.started
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for name in (f"run-{stamp}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    if status == 0:
        print(report.table(results))
        if args.only is None and not args.quick:
            report.write(results, REPO)
            log("wrote BENCHMARKS.md and docs/benchmarks/throughput.png")
    log(
        f"done in {results['meta']['elapsed_seconds'] / 60:.1f} min; raw results in "
        f"bench/results/run-{stamp}.json"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
