"""The results as people read them: the targets met or missed, a table for the terminal,
BENCHMARKS.md and the throughput plot."""

from __future__ import annotations

from pathlib import Path

from shop.config import Settings

from .servers import CACHE_TTL

CONTENDERS = ("ceiling", "conventional", "shop")
PLOT = "docs/benchmarks/throughput.png"


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def targets(r: dict) -> list[dict]:
    """Each target of the issue: what was measured, the goal, met or not (None: not run)."""
    rows: list[dict] = []

    def add(name: str, measured: str, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": measured, "goal": goal, "met": met})

    for workload, goal, label in (
        ("a", 0.9, "(a) anonymous browsing, warm"),
        ("b", 0.7, "(b) browsing with a session and a 3-line cart"),
    ):
        w = r.get(workload)
        if not w:
            continue
        s = w["summary"]
        ratio = s.get("shop_vs_ceiling")
        peak = s["peak"]
        add(
            f"{label}: throughput vs the ceiling",
            f"{ratio:.3f} × ({peak['shop']['rps']:.0f} vs {peak['ceiling']['rps']:.0f} req/s)",
            f"≥ {goal} ×",
            ratio is not None and ratio >= goal,
        )
        conv = s.get("shop_vs_conventional")
        add(
            f"{label}: throughput vs the conventional build",
            f"{conv:.3f} × ({peak['shop']['rps']:.0f} vs {peak['conventional']['rps']:.0f} req/s)",
            "≥ 2 ×",
            conv is not None and conv >= 2,
        )
        counts = w["counts"]["shop"]
        sql = counts["sql_per_request"]
        add(
            f"{label}: SQL statements per page (shop)",
            f"{_fmt(sql)} (max {_fmt(counts['sql_max'])})",
            "0",
            None if sql is None else counts["sql_max"] == 0,
        )
        writes = (
            max(run["redis_writes_per_request"] for run in _shop_runs(w)) if _shop_runs(w) else None
        )
        if workload == "a":
            add(
                f"{label}: Redis writes per page (shop, Redis's own count)",
                _fmt(writes, 4),
                "0",
                None if writes is None else writes == 0,
            )
        else:
            trips = counts["redis_per_request"]
            add(
                f"{label}: Redis round trips per page (shop)",
                f"{_fmt(trips)} (max {_fmt(counts['redis_max'])})",
                "≤ 1",
                None if trips is None else counts["redis_max"] is not None and trips <= 1,
            )
    scale = r.get("scale")
    if scale:
        small, large = scale["sizes"]
        for label, ratio in scale["ratios"].items():
            t = scale["timings"]
            add(
                f"scale: {label}, {large:,} vs {small:,} products, cache miss",
                f"{ratio:.2f} × ({t[str(large)][label]['median_ms']:.1f} vs "
                f"{t[str(small)][label]['median_ms']:.1f} ms)",
                "≤ 1.25 ×",
                ratio <= 1.25,
            )
    c = r.get("c")
    if c:
        at = c["at_80"]
        ratio = at["p99_ms"] / at["p50_ms"] if at["p50_ms"] else float("inf")
        add(
            "(c) mix at 80 % of peak: p99 / p50",
            f"{ratio:.1f} (p50 {at['p50_ms']:.1f} ms, p99 {at['p99_ms']:.1f} ms at "
            f"{at['rps']:.0f} of {c['peak']['rps']:.0f} req/s peak)",
            "< 4",
            ratio < 4,
        )
        others = sum(x["errors"] for x in [*c["closed_loop"], *c["calibration"]])
        add(
            "(c) mix at 80 % of peak: errors (socket errors, timeouts, 4xx/5xx)",
            f"{at['errors']} of {at['requests']} requests, statuses {at.get('statuses')} "
            f"({others} in the closed-loop and calibration runs)",
            "0",
            at["errors"] == 0,
        )
    memory = r.get("memory")
    if memory:
        add(
            "Redis memory: anonymous session + 3-line cart (MEMORY USAGE)",
            f"{memory['total']} bytes (session {memory['bytes']['session']}, cart "
            f"{memory['bytes']['cart']})",
            "≤ 512 bytes",
            memory["ok"],
        )
    checkout = r.get("checkout")
    if checkout:
        for key, label in (("one_product", "one product"), ("many_products", "fifty products")):
            race = checkout[key]
            add(
                f"checkout: {race['buyers']} concurrent buyers on {label}",
                f"{race['orders_per_second']:.1f} orders/s ({race['orders']} orders, "
                f"{race['oversold_units']} oversold, stock consistent: {race['ok']})",
                "0 oversold",
                race["ok"],
            )
    return rows


# Frames every request thread has (threads, gunicorn's worker loop): no information.
_PLUMBING = ("(threading.py)", "(concurrent/futures/", "(gunicorn/arbiter.py)", "(gunicorn/app/")
_PLUMBING += ("(gunicorn)", "(gunicorn/workers/base.py)")


def _informative(frames: list) -> list:
    return [(f, share) for f, share in frames if not any(p in f for p in _PLUMBING)]


def _shop_runs(w: dict) -> list[dict]:
    return [run for runs in w["runs"].get("shop", {}).values() for run in runs]


def _mark(met: bool | None) -> str:
    return {True: "✅", False: "❌", None: "–"}[met]


def table(r: dict) -> str:
    rows = targets(r)
    width = max((len(row["target"]) for row in rows), default=10)
    lines = ["", f"{'target':<{width}}  {'goal':<12} met  measured", "-" * (width + 60)]
    for row in rows:
        lines.append(
            f"{row['target']:<{width}}  {row['goal']:<12} {_mark(row['met'])}   {row['measured']}"
        )
    for workload in ("a", "b"):
        w = r.get(workload)
        if not w:
            continue
        lines.append("")
        lines.append(f"workload ({workload}): median req/s over the rounds, p50/p99 ms")
        by = w["summary"]["by_connections"]
        conns = sorted({c for rows_ in by.values() for c in rows_})
        lines.append(f"{'':<14}" + "".join(f"{f'c={c}':>26}" for c in conns))
        for name in CONTENDERS:
            cells = []
            for c in conns:
                row = by.get(name, {}).get(c)
                cells.append(
                    f"{row['rps']:>9.0f} {row['p50_ms']:6.1f}/{row['p99_ms']:<6.1f}  "
                    if row
                    else f"{'':>26}"
                )
            lines.append(f"{name:<14}" + "".join(f"{cell:>26}" for cell in cells))
    return "\n".join(lines)


def plot(r: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    workloads = [w for w in ("a", "b") if r.get(w)]
    if not workloads:
        return False
    fig, axes = plt.subplots(1, len(workloads), figsize=(6 * len(workloads), 4.2), squeeze=False)
    titles = {"a": "(a) anonymous browsing", "b": "(b) session + 3-line cart"}
    colours = {"ceiling": "#888888", "conventional": "#d62728", "shop": "#1f77b4"}
    for ax, workload in zip(axes[0], workloads, strict=True):
        by = r[workload]["summary"]["by_connections"]
        for name in CONTENDERS:
            rows = by.get(name, {})
            conns = sorted(rows, key=int)
            if not conns:
                continue
            ys = [rows[c]["rps"] for c in conns]
            low = [rows[c]["rps"] - rows[c]["rps_min"] for c in conns]
            high = [rows[c]["rps_max"] - rows[c]["rps"] for c in conns]
            ax.errorbar(
                [int(c) for c in conns],
                ys,
                yerr=[low, high],
                marker="o",
                capsize=3,
                label=name,
                color=colours[name],
            )
        ax.set_title(titles[workload])
        ax.set_xlabel("concurrent connections (wrk)")
        ax.set_ylabel("requests per second (median of rounds)")
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(c) for c in sorted({c for rows in by.values() for c in rows}, key=int)])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    m = r["meta"]
    fig.suptitle(
        f"shop {m['commit'][:10]}, {m['machine']['cores']} cores, gunicorn "
        f"{m['settings']['workers']}×{m['settings']['threads']}, {m['date']}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(r: dict, repo: Path) -> None:
    plotted = plot(r, repo / PLOT)
    (repo / "BENCHMARKS.md").write_text(markdown(r, plotted))


def markdown(r: dict, plotted: bool = True) -> str:
    m = r["meta"]
    machine = m["machine"]
    cfg = m["settings"]
    out: list[str] = []
    w = out.append
    w("# Benchmarks")
    w("")
    w(
        "Written by `make bench` (`python -m bench`) — do not edit by hand; the analysis of "
        "what is missed lives in [docs/benchmarks/analysis.md](docs/benchmarks/analysis.md)."
    )
    w("")
    dirty = " (with uncommitted changes to the app)" if m.get("dirty") else ""
    w(
        f"Run of {m['date']} against commit `{m['commit'][:12]}`{dirty}, "
        f"{m['elapsed_seconds'] / 60:.1f} minutes."
    )
    w("")
    w("## Targets")
    w("")
    w("| target | goal | measured | met |")
    w("|---|---|---|---|")
    for row in targets(r):
        w(f"| {row['target']} | {row['goal']} | {row['measured']} | {_mark(row['met'])} |")
    w("")
    if plotted:
        w(f"![throughput against concurrency]({PLOT})")
        w("")
    for workload, title in (
        ("a", "(a) An anonymous visitor paging through the grid and opening product pages"),
        ("b", "(b) A shopper with a session and a three-line cart doing the same"),
    ):
        data = r.get(workload)
        if not data:
            continue
        w(f"## {title}")
        w("")
        w(
            "Median of the rounds per concurrency (min–max of the rounds in brackets); latency "
            "in ms; CPU as a share of both cores over the run: wrk / the contender's gunicorn "
            "processes / everything else (PostgreSQL, Redis, the kernel)."
        )
        w("")
        w(
            "| contender | connections | req/s | p50 | p95 | p99 | errors | Redis cmds/req | "
            "Redis writes/req | CPU wrk / app / other (outside the benchmark) |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|")
        by = data["summary"]["by_connections"]
        for name in CONTENDERS:
            for c, row in sorted(by.get(name, {}).items(), key=lambda kv: int(kv[0])):
                w(
                    f"| {name} | {c} | {row['rps']:.0f} "
                    f"({row['rps_min']:.0f}–{row['rps_max']:.0f}) "
                    f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} | "
                    f"{row['errors']} | {row['redis_commands_per_request']:.2f} | "
                    f"{row['redis_writes_per_request']:.2f} | {row['cpu_wrk']:.0%} / "
                    f"{row['cpu_servers']:.0%} / {row['cpu_other']:.0%} "
                    f"({row.get('cpu_foreign', 0):.0%}) |"
                )
        s = data["summary"]
        w("")
        w(
            "Peak (best concurrency) ratios: shop / ceiling "
            f"**{_fmt(s.get('shop_vs_ceiling'))}**, shop / conventional "
            f"**{_fmt(s.get('shop_vs_conventional'))}**."
        )
        w("")
        w(
            "Per request, counted by each app's own instrumentation on an instrumented twin "
            "(same configuration, `SHOP_INSTRUMENT=1` / `BENCH_INSTRUMENT=1`) under wrk, summed "
            "from every response by wrk's `response()`:"
        )
        w("")
        w(
            "| app | responses | SQL statements / request (max) "
            "| Redis round trips / request (max) |"
        )
        w("|---|---|---|---|")
        for name, counts in data["counts"].items():
            w(
                f"| {name} | {counts['responses']} | {_fmt(counts['sql_per_request'])} "
                f"({_fmt(counts['sql_max'])}) | {_fmt(counts['redis_per_request'])} "
                f"({_fmt(counts['redis_max'])}) |"
            )
        w("")
        shop_runs = _shop_runs(data)
        writes: dict[str, int] = {}
        for run in shop_runs:
            for cmd, n in run.get("redis_writes", {}).items():
                writes[cmd] = writes.get(cmd, 0) + n
        w(
            "Redis write commands the Redis server executed during the shop's timed runs "
            f"(`INFO commandstats`, scripts' inner commands included): {writes or 'none'}."
        )
        w("")
    c = r.get("c")
    if c:
        w("## (c) The mix through the balancer and three instances")
        w("")
        w(
            f"{c['shoppers']} registered shoppers, each cycling through 45 page views, 4 cart "
            "changes (add, add, set quantity, remove) and 1 checkout (90 / 8 / 2 %), with "
            "their cookie and CSRF token; HAProxy round robin over three instances "
            f"({cfg['workers']} workers × {cfg['threads']} threads each), PostgreSQL primary + "
            "streaming replica, Redis (`deploy/stack/stack.py`)."
        )
        w("")
        w(
            "| run | connections | pause/conn (ms) | req/s | p50 | p95 | p99 | errors | statuses "
            "| orders/s | CPU wrk / all |"
        )
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for label, run in [
            *[("closed loop", x) for x in c["closed_loop"]],
            *[("calibration", x) for x in c["calibration"]],
            ("**at 80 % of peak**", c["at_80"]),
        ]:
            w(
                f"| {label} | {run['connections']} | {run['pace_ms']:.1f} | {run['rps']:.0f} | "
                f"{run['p50_ms']:.1f} | {run['p95_ms']:.1f} | {run['p99_ms']:.1f} | "
                f"{run['errors']} | {run.get('statuses')} | {run['orders_per_second']:.1f} | "
                f"{run['cpu_wrk']:.0%} / {run['cpu_machine']:.0%} |"
            )
        w("")
        w("Server-side request time by kind (gunicorn's access log of the three instances, ms):")
        w("")
        w("| run | kind | requests | p50 | p95 | p99 |")
        w("|---|---|---|---|---|---|")
        for label, run in (("peak (closed loop)", c["peak"]), ("at 80 % of peak", c["at_80"])):
            for kind, row in (run.get("by_kind") or {}).items():
                w(
                    f"| {label} | {kind} | {row['n']} | {row['p50_ms']:.0f} | "
                    f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} |"
                )
        w("")
        w(
            f"Peak {c['peak']['rps']:.0f} req/s (closed loop, {c['peak']['connections']} "
            f"connections); target for the paced run {c['target_rps']:.0f} req/s. Debian has no "
            "wrk2, so the run at 80 % paces each connection with wrk's `delay()` (a uniformly "
            "random pause with the calibrated mean before each request), calibrated until the "
            "measured rate is within 3 % of the target; wrk measures latency from the moment a "
            "request is sent, so the pause is not counted."
        )
        w("")
    scale = r.get("scale")
    if scale:
        small, large = scale["sizes"]
        w("## Catalogue scale (cache miss)")
        w("")
        w(
            f"The same API request on a schema of {small:,} and of {large:,} demo products (plus "
            "five products named *Zephyr Lantern*, added last: the rare word). One shop instance "
            "per schema with its in-process tier off (`SHOP_CATALOGUE_LOCAL_TTL=0`); every "
            "catalogue key in Redis is deleted before each request, so each one rebuilds from "
            f"PostgreSQL (the category list too). Median of {cfg['scale_repetitions']} "
            "sequential requests, timed by the client."
        )
        w("")
        w(
            f"| request | {small:,}: median ms | {large:,}: median ms | ratio | items "
            "| SQL/request |"
        )
        w("|---|---|---|---|---|---|")
        t = scale["timings"]
        for label, ratio in scale["ratios"].items():
            a, b = t[str(small)][label], t[str(large)][label]
            w(
                f"| {label} `{a['path']}` | {a['median_ms']:.1f} | {b['median_ms']:.1f} | "
                f"{ratio:.2f} | {a['items']:.0f} / {b['items']:.0f} | "
                f"{a['sql_per_request']:.0f} / {b['sql_per_request']:.0f} |"
            )
        w("")
        seeds = {k: v for k, v in scale["seed_seconds"].items() if v}
        w(
            "Seeding (once; the schemas are kept between runs while the migrations and the "
            "seed are unchanged): "
            + (
                ", ".join(f"{int(k):,} products in {v:.0f} s" for k, v in seeds.items())
                or "kept from an earlier run"
            )
            + "."
        )
        w("")
    memory = r.get("memory")
    if memory:
        w("## Redis memory of a session")
        w("")
        w(
            f"An anonymous visitor with a three-line cart, made through the API: `MEMORY USAGE` "
            f"of `{memory['keys']['session'].split(':s:')[0]}:s:<id>` = "
            f"{memory['bytes']['session']} bytes and of `…cart:s:<id>` = "
            f"{memory['bytes']['cart']} bytes; **{memory['total']} bytes** in all "
            f"(fields: {memory['fields']})."
        )
        w("")
    checkout = r.get("checkout")
    if checkout:
        w("## Checkout under contention")
        w("")
        w(
            "Buyers are registered shoppers with one unit in the cart; a barrier releases all "
            "their `POST /api/v1/orders` at once through the balancer. Checked afterwards on the "
            "primary: stock + units sold = initial stock for every product, no stock below 0, "
            "orders in the database = orders answered 201."
        )
        w("")
        w(
            "| race | buyers | products | stock each | orders | seconds | orders/s | statuses "
            "| oversold |"
        )
        w("|---|---|---|---|---|---|---|---|---|")
        for key, race in checkout.items():
            w(
                f"| {key.replace('_', ' ')} | {race['buyers']} | {race['products']} | "
                f"{race['stock_each']} | {race['orders']} | {race['seconds']:.2f} | "
                f"{race['orders_per_second']:.1f} | {race['statuses']} | "
                f"{race['oversold_units']} |"
            )
        w("")
    profiles = r.get("profiles")
    if profiles:
        w("## Profiles (py-spy, where a throughput target was missed)")
        w("")
        w(
            "Share of the samples of the gunicorn workers under the same wrk load "
            f"(32 connections, {m['settings']['profile_seconds']} s at 200 Hz; flame graphs in "
            "`bench/results/profiles/`, not committed). Threading and gunicorn's own loop "
            "frames are left out; see [the analysis](docs/benchmarks/analysis.md)."
        )
        w("")
        for name, prof in profiles.items():
            if "error" in prof:
                w(f"- {name}: py-spy failed: {prof['error']}")
                continue
            w(f"### {name}")
            w("")
            w("| frame (on the stack: inclusive) | share |")
            w("|---|---|")
            for frame, share in _informative(prof["total"])[:20]:
                w(f"| `{frame}` | {share:.0%} |")
            w("")
            w("| frame (on top: self) | share |")
            w("|---|---|")
            for frame, share in _informative(prof["self"])[:10]:
                w(f"| `{frame}` | {share:.0%} |")
            w("")
    w("## Method")
    w("")
    w(
        f"- **Contenders**, each under the shop's `gunicorn.conf.py` with the same "
        f"`SHOP_WORKERS={cfg['workers']}` and `SHOP_THREADS={cfg['threads']}` (gthread), on "
        "its own loopback port, access log to a file: **ceiling** "
        "(`bench/ceiling.py`: a bare Flask app rendering the shop's grid and product "
        "templates from the demo catalogue in memory, stub filters and globals, no session, "
        "no cache, no database); **conventional** (`bench/conventional.py`: Flask-Session in "
        "Redis for every visitor, saved on every request, and the categories, a count and "
        "an OFFSET page, or the product, queried on the primary for every page); **shop** "
        "(`wsgi:app`, the real app, default settings but a plain-HTTP cookie and "
        f"`SHOP_CATALOGUE_CACHE_TTL={CACHE_TTL}`, so that the Redis tier stays warm for the "
        "whole run; the in-process tier keeps its defaults: invalidated by pub/sub, an "
        f"entry living at most {int(Settings().catalogue_local_ttl)} s; the per-address rate "
        "rules are off, since every request comes from one address)."
    )
    w(
        f"- The three render the same pages: sizes checked before the runs "
        f"({r.get('page_sizes', {}).get('sizes')})."
    )
    w(
        f"- **Alternation**: {cfg['rounds']} rounds; in each, every contender runs "
        f"{cfg['duration']:g} s at each of {cfg['connections']} connections, the order rotating "
        "from round to round (A B C, B C A, C A B); every cache is warmed before each round. "
        "The figure per concurrency is the median of the rounds; a contender's headline is its "
        "best concurrency. A run is repeated (at most twice) when it did not measure the "
        "contender: when wrk's keep-alive connections all landed on one gunicorn worker (each "
        "worker's CPU time shows it), or when processes outside the benchmark took more than "
        "15 % of the CPU (another test run on the machine)."
    )
    w(
        "- **Load generator**: wrk with one thread and a Lua script cycling through 100 grid "
        "pages and two products from each (a, b), sending the session cookie in (b) "
        "(32 sessions made through each app's own HTTP API or forms; the ceiling is sent the "
        "shop's cookies and ignores them). wrk's CPU share is in the tables; it stays far "
        "from a core."
    )
    w(
        "- **Counts**: SQL statements and Redis round trips per request come from the apps' "
        "own instrumentation, off in the timed runs; Redis writes per request from the Redis "
        "server's `INFO commandstats` over the timed runs (a private `redis-server` started "
        "by the benchmark, so nothing else is counted)."
    )
    w(
        "- **Data**: PostgreSQL database `bench` (schemas `tput` with 10,000 products, "
        f"`scale_{', scale_'.join(str(s) for s in cfg['scale_sizes'])}`), migrated with the "
        "shop's Alembic and seeded with `flask --app shop seed`."
    )
    w("")
    w("## Machine")
    w("")
    for key in (
        "cpu",
        "cores",
        "memory",
        "kernel",
        "python",
        "postgresql",
        "redis",
        "flask",
        "flask-session",
        "sqlalchemy",
        "gunicorn",
        "wrk",
    ):
        if key in machine:
            w(f"- {key}: {machine[key]}")
    w("")
    w("## Commands")
    w("")
    w("```sh")
    w("apt-get install wrk          # the load generator (the benchmark says so if it is missing)")
    w(
        "make bench                   "
        "# = .venv/bin/pip install -e '.[dev,bench]' && .venv/bin/python -m bench"
    )
    w(
        ".venv/bin/python -m bench --quick          "
        "# a smoke run of about two minutes; BENCHMARKS.md untouched"
    )
    w(".venv/bin/python -m bench --only scale     # one part (throughput, scale, stack)")
    w("BENCH_DURATION=10 BENCH_ROUNDS=5 make bench   # longer runs")
    w("```")
    w("")
    w(f"This run: `{m['command']}`, settings {cfg}.")
    w("")
    return "\n".join(out)
