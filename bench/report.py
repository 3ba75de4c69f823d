"""The results as people read them: the targets met or missed, a table for the terminal,
BENCHMARKS.md and the throughput plot.

BENCHMARKS.md is one function per section (:data:`SECTIONS`), each rendering its part of the
results. Every figure and setting the prose states comes from the results: what the run
measured, and the settings and constants it ran with, which the run records beside them
(``meta.settings``, and each part's own). So the text describes the run that was made, and
nothing here restates a number by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import PARTS
from .shop_templates import REPO
from .throughput import CONTENDERS

PLOT = "docs/benchmarks/throughput.png"
ANALYSIS = "docs/benchmarks/analysis.md"
RESULTS = REPO / "bench" / "results"  # not committed: raw results, logs, scripts, profiles
PROFILES = RESULTS / "profiles"

# The targets of the issue, judged by targets() and stated as its goals.
CEILING_SHARE = {"a": 0.9, "b": 0.7}  # the shop's peak throughput / the ceiling's, at least
CONVENTIONAL_FACTOR = 2  # the shop's peak throughput / the conventional build's, at least
SESSION_TRIPS = 1  # Redis round trips per page of a shopper with a session, at most
SCALE_FACTOR = 1.25  # a cache miss on the large catalogue / on the small one, at most
TAIL_RATIO = 4  # p99 / p50 of the paced mix, below
SESSION_BYTES = 512  # Redis memory of a session with its cart, at most
FLOOR_SHARE = {"anonymous": 0.85, "session": 0.6}  # the shop's best / the floor's, at least
EDGE_HITS = 0.95  # anonymous catalogue pages the edge serves from its cache, at least
INVALIDATION_FLAT = 2  # dropping one product from the largest tier / from the smallest, at most


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _percent(share: float) -> str:
    return f"{share * 100:.3g} %"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _cart(r: dict) -> str:
    return f"{r['meta']['settings']['cart_lines']}-line cart"


def targets(r: dict) -> list[dict]:
    """Each target of the issue: what was measured, the goal, met or not (None: not run)."""
    rows: list[dict] = []

    def add(name: str, measured: str, goal: str, met: bool | None) -> None:
        rows.append({"target": name, "measured": measured, "goal": goal, "met": met})

    labels = {
        "a": "(a) anonymous browsing, warm",
        "b": f"(b) browsing with a session and a {_cart(r)}",
    }
    for workload, label in labels.items():
        w = r.get(workload)
        if not w:
            continue
        goal = CEILING_SHARE[workload]
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
            f"≥ {CONVENTIONAL_FACTOR} ×",
            conv is not None and conv >= CONVENTIONAL_FACTOR,
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
                f"≤ {SESSION_TRIPS}",
                None
                if trips is None
                else counts["redis_max"] is not None and trips <= SESSION_TRIPS,
            )
    rows += floor_targets(r)  # with why each missed one is missed
    scale = r.get("scale")
    if scale:
        small, large = scale["sizes"]
        for label, ratio in scale["ratios"].items():
            t = scale["timings"]
            add(
                f"scale: {label}, {large:,} vs {small:,} products, cache miss",
                f"{ratio:.2f} × ({t[str(large)][label]['median_ms']:.1f} vs "
                f"{t[str(small)][label]['median_ms']:.1f} ms)",
                f"≤ {SCALE_FACTOR} ×",
                ratio <= SCALE_FACTOR,
            )
    c = r.get("c")
    if c:
        at = c["paced"]
        paced = f"(c) mix at {_percent(c['paced_share'])} of peak"
        ratio = at["p99_ms"] / at["p50_ms"] if at["p50_ms"] else float("inf")
        add(
            f"{paced}: p99 / p50",
            f"{ratio:.1f} (p50 {at['p50_ms']:.1f} ms, p99 {at['p99_ms']:.1f} ms at "
            f"{at['rps']:.0f} of {c['peak']['rps']:.0f} req/s peak)",
            f"< {TAIL_RATIO}",
            ratio < TAIL_RATIO,
        )
        others = sum(x["errors"] for x in [*c["closed_loop"], *c["calibration"]])
        add(
            f"{paced}: errors (socket errors, timeouts, 4xx/5xx)",
            f"{at['errors']} of {at['requests']} requests, statuses {at.get('statuses')} "
            f"({others} in the closed-loop and calibration runs)",
            "0",
            at["errors"] == 0,
        )
    memory = r.get("memory")
    if memory:
        add(
            f"Redis memory: anonymous session + {_cart(r)} (MEMORY USAGE)",
            f"{memory['total']} bytes (session {memory['bytes']['session']}, cart "
            f"{memory['bytes']['cart']})",
            f"≤ {SESSION_BYTES} bytes",
            None not in memory["bytes"].values() and memory["total"] <= SESSION_BYTES,
        )
    checkout = r.get("checkout")
    if checkout:
        for race in checkout.values():
            add(
                f"checkout: {race['buyers']} concurrent buyers on "
                f"{_count(race['products'], 'product')}",
                f"{race['orders_per_second']:.1f} orders/s ({race['orders']} orders, "
                f"{race['oversold_units']} oversold, stock consistent: {race['ok']})",
                "0 oversold",
                race["ok"],
            )
    invalidation = r.get("invalidation")
    if invalidation:
        small, large = min(invalidation["sizes"]), max(invalidation["sizes"])
        by = invalidation["by_size"]
        ratio = invalidation["ratio"]
        add(
            f"invalidation: dropping one product, in-process tier of {large:,} vs {small:,} "
            "entries",
            f"{ratio:.2f} × ({by[str(large)]['drop']['median_us']:.1f} vs "
            f"{by[str(small)]['drop']['median_us']:.1f} µs)",
            f"≤ {INVALIDATION_FLAT} ×",
            ratio <= INVALIDATION_FLAT,
        )
    return rows


def _floor_label(r: dict, workload: str) -> str:
    if workload == "anonymous":
        return "floor: anonymous warm catalogue pages (grid, category, product)"
    return f"floor: a visitor with a session and a {_cart(r)}"


def floor_targets(r: dict) -> list[dict]:
    """The floor comparison's targets and the edge's, each with why it is missed (from the
    measured figures) where it is."""
    rows: list[dict] = []
    fl = r.get("floor")
    for workload, w in (fl or {}).get("workloads", {}).items():
        label = _floor_label(r, workload)
        goal = FLOOR_SHARE[workload]
        s = w["summary"]
        ratio = s.get("ratio")
        best = s["best"]
        rows.append(
            {
                "target": f"{label}: shop / floor, best of each side",
                "measured": "n/a"
                if ratio is None
                else f"{ratio:.3f} × ({best['shop']['rps']:.0f} vs {best['floor']['rps']:.0f} "
                "req/s)",
                "goal": f"≥ {goal} ×",
                "met": None if ratio is None else ratio >= goal,
                "why": _why_slower(w, ratio, goal),
            }
        )
        counts = w["counts"]
        sql = counts["sql_per_request"]
        rows.append(
            {
                "target": f"{label}: SQL statements per warm page (shop)",
                "measured": f"{_fmt(sql)} (max {_fmt(counts['sql_max'])})",
                "goal": "0",
                "met": None if sql is None else counts["sql_max"] == 0,
                "why": f"the instrumented twin counted {_fmt(sql)} statements a page over "
                f"{counts['responses']} warm responses, {_fmt(counts['sql_max'])} at most",
            }
        )
        if workload == "anonymous":
            writes = w["redis_writes_per_request"]
            rows.append(
                {
                    "target": f"{label}: Redis writes per page (shop, Redis's own count)",
                    "measured": _fmt(writes, 4),
                    "goal": "0",
                    "met": writes == 0,
                    "why": f"Redis executed {w['redis_writes']} during the shop's timed runs",
                }
            )
    e = r.get("edge")
    if e is not None:
        ratio = e.get("hit_ratio") if e["measured"] else None
        rows.append(
            {
                "target": "edge: anonymous catalogue pages served from the edge's cache, a "
                "product changing every second",
                "measured": f"not measured: {e['reason']}"
                if not e["measured"]
                else f"{_percent(ratio or 0)} ({e['hits']} HIT of {e['responses']})",
                "goal": f"≥ {_percent(EDGE_HITS)}",
                "met": None if ratio is None else ratio >= EDGE_HITS,
                "why": "" if not e["measured"] else _why_missed_edge(e),
            }
        )
    return rows


def _why_slower(w: dict, ratio: float | None, goal: float) -> str:
    """Where one shop worker's time went, from its profile under the same load."""
    if ratio is None:
        return "no timed run"
    profile = w.get("profile")
    head = f"the shop serves {ratio:.2f} × what the floor does (goal {goal} ×)"
    if not profile:
        return f"{head}; no profile was taken (py-spy missing?)"
    if "error" in profile:
        return f"{head}; py-spy failed: {profile['error']}"
    groups = ", ".join(f"{group} {share:.0%}" for group, share in profile.get("groups", [])[:4])
    waiting = ("(selectors.py)", "PollableMethodQueue.defer")  # gthread's loop, idle
    top = [(f, n) for f, n in _informative(profile["self"]) if not any(w in f for w in waiting)]
    on_top = (
        f"; the frame most often on top (working): `{top[0][0]}` {top[0][1]:.0%}" if top else ""
    )
    return f"{head}; of one shop worker's samples: {groups or 'no group matched'}{on_top}"


def _why_missed_edge(e: dict) -> str:
    return (
        f"{e['misses']} MISS and {e['without_header']} without `X-Cache` of {e['responses']} "
        f"responses while {_count(e['changes'], 'product change')} were made "
        f"({_count(len(e.get('change_failures') or []), 'failure')})"
    )


# Frames every request thread has (threads, gunicorn's worker loop): no information.
_PLUMBING = ("(threading.py)", "(concurrent/futures/", "(gunicorn/arbiter.py)", "(gunicorn/app/")
_PLUMBING += ("(gunicorn)", "(gunicorn/workers/base.py)")


def _informative(frames: list) -> list:
    return [(f, share) for f, share in frames if not any(p in f for p in _PLUMBING)]


def _runs(w: dict, *names: str) -> list[dict]:
    """Every run of a workload, or of the contenders ``names``."""
    return [
        run
        for name, by_connections in w["runs"].items()
        if not names or name in names
        for runs in by_connections.values()
        for run in runs
    ]


def _shop_runs(w: dict) -> list[dict]:
    return _runs(w, "shop")


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
    titles = {"a": "(a) anonymous browsing", "b": f"(b) session + {_cart(r)}"}
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


# -- BENCHMARKS.md, one function per section --------------------------------------------------


def _lines(*lines: str) -> str:
    """A section's markdown: every line ends with a newline; markdown() puts a blank line
    between sections."""
    return "".join(f"{line}\n" for line in lines)


def preamble(r: dict) -> str:
    m = r["meta"]
    dirty = " (with uncommitted changes to the app)" if m.get("dirty") else ""
    return _lines(
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m bench`) — do not edit by hand; the analysis of "
        f"what is missed lives in [{ANALYSIS}]({ANALYSIS}).",
        "",
        f"Run of {m['date']} against commit `{m['commit'][:12]}`{dirty}, "
        f"{m['elapsed_seconds'] / 60:.1f} minutes.",
    )


def targets_section(r: dict) -> str:
    rows = [
        f"| {row['target']} | {row['goal']} | {row['measured']} | {_mark(row['met'])} |"
        for row in targets(r)
    ]
    return _lines(
        "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|", *rows
    )


def figure(r: dict) -> str:
    """The throughput plot (left out by markdown() when it could not be drawn)."""
    return _lines(f"![throughput against concurrency]({PLOT})")


def workload_a(r: dict) -> str:
    return _workload(
        r, "a", "(a) An anonymous visitor paging through the grid and opening product pages"
    )


def workload_b(r: dict) -> str:
    return _workload(r, "b", f"(b) A shopper with a session and a {_cart(r)} doing the same")


def _workload(r: dict, workload: str, title: str) -> str:
    data = r.get(workload)
    if not data:
        return ""
    cfg = r["meta"]["settings"]
    lines = [
        f"## {title}",
        "",
        "Median of the rounds per concurrency (min–max of the rounds in brackets); latency in "
        f"ms; CPU as a share of the machine's {r['meta']['machine']['cores']} cores over the "
        "run: wrk / the contender's gunicorn processes / everything else (PostgreSQL, Redis, "
        "the kernel).",
        "",
        "| contender | connections | req/s | p50 | p95 | p99 | errors | Redis cmds/req | "
        "Redis writes/req | CPU wrk / app / other (outside the benchmark) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = data["summary"]["by_connections"]
    for name in CONTENDERS:
        for c, row in sorted(by.get(name, {}).items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {name} | {c} | {row['rps']:.0f} ({row['rps_min']:.0f}–{row['rps_max']:.0f}) "
                f"| {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['p99_ms']:.1f} | "
                f"{row['errors']} | {row['redis_commands_per_request']:.2f} | "
                f"{row['redis_writes_per_request']:.2f} | {row['cpu_wrk']:.0%} / "
                f"{row['cpu_servers']:.0%} / {row['cpu_other']:.0%} "
                f"({row.get('cpu_foreign', 0):.0%}) |"
            )
    s = data["summary"]
    switches = " / ".join(
        f"`{name}={value}`" for env in cfg["instrumented"].values() for name, value in env.items()
    )
    lines += [
        "",
        f"Peak (best concurrency) ratios: shop / ceiling **{_fmt(s.get('shop_vs_ceiling'))}**, "
        f"shop / conventional **{_fmt(s.get('shop_vs_conventional'))}**.",
        "",
        "Per request, counted by each app's own instrumentation on an instrumented twin (same "
        f"configuration, {switches}) under wrk, summed from every response by wrk's "
        "`response()`:",
        "",
        "| app | responses | SQL statements / request (max) | Redis round trips / request (max) |",
        "|---|---|---|---|",
    ]
    for name, counts in data["counts"].items():
        lines.append(
            f"| {name} | {counts['responses']} | {_fmt(counts['sql_per_request'])} "
            f"({_fmt(counts['sql_max'])}) | {_fmt(counts['redis_per_request'])} "
            f"({_fmt(counts['redis_max'])}) |"
        )
    writes: dict[str, int] = {}
    for run in _shop_runs(data):
        for cmd, n in run.get("redis_writes", {}).items():
            writes[cmd] = writes.get(cmd, 0) + n
    lines += [
        "",
        "Redis write commands the Redis server executed during the shop's timed runs "
        f"(`INFO commandstats`, scripts' inner commands included): {writes or 'none'}.",
    ]
    return _lines(*lines)


def floor_section(r: dict) -> str:
    fl = r.get("floor")
    if not fl:
        return ""
    cfg = r["meta"]["settings"]
    sizes = ", ".join(f"{visitor} {size:,.0f}" for visitor, size in fl["page_bytes"].items())
    rows = floor_targets(r)
    lines = [
        "## The floor: bare Flask serving the shop's own bytes",
        "",
        "The floor (`bench/floor.py`) is a bare Flask app under the same `gunicorn.conf.py`, "
        f"{cfg['workers']} workers × {cfg['threads']} threads, answering each URL with the "
        "bytes, status and headers the shop served for it, captured from the shop in this run "
        "(mean body in bytes: "
        f"{sizes}): a dictionary lookup, no template, no session, no cache, through Flask. "
        "The shop answers a warm page before Flask (`WarmPages` in "
        "`shop/web/cached_pages.py`, a full-page cache in each process, in front of the app; "
        "a visitor with a session costs it the session's load and the hole's fill), so it can "
        f"pass the floor. {fl['paths']} "
        f"paths ({fl['grid_pages']} grid, {fl['category_pages']} category and "
        f"{fl['product_pages']} product pages), all warm; the session visitor sends one of "
        f"{cfg['sessions']} cookies with a {_cart(r)} and the floor answers the body the shop "
        f"served that visitor. {_count(cfg['floor_rounds'], 'round')} of strictly alternating runs "
        f"(floor, shop, floor, shop, ...), {cfg['floor_duration']:g} s each at "
        f"{cfg['floor_connections']} connections, the same wrk script for both; each side's "
        "figure is its best run.",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
        *(
            f"| {row['target']} | {row['goal']} | {row['measured']} | {_mark(row['met'])} |"
            for row in rows
            if row["target"].startswith("floor")
        ),
    ]
    missed = [row for row in rows if row["met"] is False and row["target"].startswith("floor")]
    if missed:
        lines += ["", "Why not:", ""]
        lines += [f"- {row['target']}: {row['why']}." for row in missed]
    lines += [
        "",
        "| visitor | side | connections | req/s by round | best | p50 / p99 ms of the best |",
        "|---|---|---|---|---|---|",
    ]
    for workload, w in fl["workloads"].items():
        for side, by_connections in w["runs"].items():
            for c, runs in sorted(by_connections.items(), key=lambda kv: int(kv[0])):
                if not runs:
                    continue
                best = max(runs, key=lambda run: run["rps"])
                by_round = " / ".join(f"{run['rps']:.0f}" for run in runs)
                lines.append(
                    f"| {workload} | {side} | {c} | {by_round} | {best['rps']:.0f} | "
                    f"{best['p50_ms']:.1f} / {best['p99_ms']:.1f} |"
                )
    lines += _instructions(fl.get("instructions"), _cart(r))
    for workload, w in fl["workloads"].items():
        profile = w.get("profile")
        if not profile or "error" in profile:
            continue
        lines += [
            "",
            f"### Where one shop worker's time goes ({workload})",
            "",
            f"py-spy on one of the shop's workers under the same load "
            f"({cfg['profile_connections']} connections, {cfg['profile_seconds']} s at "
            f"{cfg['profile_rate']} Hz, {profile['samples']} samples); a sample counts for a "
            "group when a frame of it is on the stack.",
            "",
            "| the time of | share |",
            "|---|---|",
            *(f"| {group} | {share:.0%} |" for group, share in profile.get("groups", [])),
            "",
            "| frame (on the stack: inclusive) | share |",
            "|---|---|",
            *(f"| `{f}` | {share:.0%} |" for f, share in _informative(profile["total"])[:12]),
            "",
            "| frame (on top: self) | share |",
            "|---|---|",
            *(f"| `{f}` | {share:.0%} |" for f, share in _informative(profile["self"])[:6]),
        ]
    return _lines(*lines)


def _instructions(counted: dict | None, cart: str) -> list[str]:
    """The floor's and the shop's instructions per warm page (bench/instructions.py)."""
    if not counted:
        return []
    if "error" in counted:
        return ["", f"Instructions per warm page: not counted ({counted['error']})."]
    per = counted["per_request"]
    floor_cost = per["floor"]
    rows = [
        ("the floor (bare Flask, the captured bytes)", per["floor"]),
        ("the shop, anonymous", per["shop-anonymous"]),
        (f"the shop, a visitor with a session and a {cart}", per["shop-session"]),
        ("of which the session load alone (redis-py, its reply read)", per["session-load"]),
    ]
    session_extra = per["shop-session"] - per["shop-anonymous"]
    return [
        "",
        "### Instructions per warm page (callgrind)",
        "",
        f"Each side answering {counted['paths']} of the same paths {counted['count']} times "
        "straight through its WSGI app in one process, under `valgrind --tool=callgrind` "
        "(`bench/instructions.py`): the count minus that of a run with no request, over the "
        "requests. Unlike req/s it does not move with the machine's other load. It leaves out "
        "what both sides pay in gunicorn and the kernel to take a request and send a page, and "
        "what the shop's Redis round trip costs outside its own process (Redis, the kernel, "
        "the switch between threads while it waits).",
        "",
        "| page | instructions per request | × the floor's |",
        "|---|---|---|",
        *(f"| {name} | {value:,.0f} | {value / floor_cost:.2f} |" for name, value in rows),
        "",
        f"A session costs the shop {session_extra:,.0f} instructions more than an anonymous "
        f"visit; the session load is {per['session-load'] / session_extra:.0%} of that, and "
        "the rest is reading the cookie and filling the page's hole with the visitor's own "
        "links.",
    ]


def edge_section(r: dict) -> str:
    e = r.get("edge")
    if e is None:
        return ""
    title = "## The edge: anonymous pages from its cache"
    if not e["measured"]:
        return _lines(
            title,
            "",
            f"Not measured: {e['reason']}. With an edge in the stack (an `edge` component in "
            "its topology), anonymous visitors browse the floor comparison's pages through it "
            "while a product changes every second (`flask --app shop product set`), and the "
            "share of responses with `X-Cache: HIT` is reported here.",
        )
    row = next(x for x in floor_targets(r) if x["target"].startswith("edge"))
    lines = [
        title,
        "",
        f"wrk at {e['connections']} connections, {e['seconds']:g} s, anonymous, cycling "
        f"through {e['paths']} catalogue paths (grid, category and product pages) at "
        f"{e['url']}, after one pass that fills the cache; meanwhile the stock of one of the "
        f"products browsed changes every {e['change_every']:g} s through the shop's own write "
        "path (`flask --app shop product set ID --stock N`, run in the benchmark's process "
        "with an instance's settings: commit, then `catalogue.invalidate`).",
        "",
        "| goal | hit ratio | HIT | MISS | no X-Cache | responses | req/s | p50 / p99 ms | "
        "changes | errors | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {row['goal']} | {_percent(e['hit_ratio'] or 0)} | {e['hits']} | {e['misses']} | "
        f"{e['without_header']} | {e['responses']} | {e['rps']:.0f} | {e['p50_ms']:.1f} / "
        f"{e['p99_ms']:.1f} | {e['changes']} | {e['errors']} | {_mark(row['met'])} |",
    ]
    if e.get("change_failures"):
        lines += ["", f"Changes that failed: {e['change_failures']}."]
    if row["met"] is False:
        lines += ["", f"Why not: {row['why']}."]
    return _lines(*lines)


def mix_section(r: dict) -> str:
    c = r.get("c")
    if not c:
        return ""
    cycle = c["cycle"]
    steps, changes, checkouts = cycle["requests"], cycle["cart_changes"], cycle["checkouts"]
    pages = steps - len(changes) - checkouts
    shares = " / ".join(f"{100 * n / steps:.3g}" for n in (pages, len(changes), checkouts))
    paced = f"{_percent(c['paced_share'])} of peak"
    instances = c["instances"]
    lines = [
        f"## (c) The mix through the balancer and {instances} instances",
        "",
        f"{c['shoppers']} registered shoppers, each cycling through "
        f"{_count(pages, 'page view')}, {_count(len(changes), 'cart change')} "
        f"({', '.join(changes)}) and "
        f"{_count(checkouts, 'checkout')} ({shares} %), with their cookie and CSRF token; "
        f"HAProxy round robin over {instances} instances ({c['workers']} workers × "
        f"{c['threads']} threads each), PostgreSQL primary + streaming replica, Redis "
        "(`deploy/stack/stack.py`).",
        "",
        "| run | connections | pause/conn (ms) | req/s | p50 | p95 | p99 | errors | statuses "
        "| orders/s | CPU wrk / all |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, run in [
        *[("closed loop", x) for x in c["closed_loop"]],
        *[("calibration", x) for x in c["calibration"]],
        (f"**at {paced}**", c["paced"]),
    ]:
        lines.append(
            f"| {label} | {run['connections']} | {run['pace_ms']:.1f} | {run['rps']:.0f} | "
            f"{run['p50_ms']:.1f} | {run['p95_ms']:.1f} | {run['p99_ms']:.1f} | "
            f"{run['errors']} | {run.get('statuses')} | {run['orders_per_second']:.1f} | "
            f"{run['cpu_wrk']:.0%} / {run['cpu_machine']:.0%} |"
        )
    lines += [
        "",
        f"Server-side request time by kind (gunicorn's access log of the {instances} "
        "instances, ms):",
        "",
        "| run | kind | requests | p50 | p95 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for label, run in (("peak (closed loop)", c["peak"]), (f"at {paced}", c["paced"])):
        for kind, row in (run.get("by_kind") or {}).items():
            lines.append(
                f"| {label} | {kind} | {row['n']} | {row['p50_ms']:.0f} | "
                f"{row['p95_ms']:.0f} | {row['p99_ms']:.0f} |"
            )
    lines += [
        "",
        f"Peak {c['peak']['rps']:.0f} req/s (closed loop, {c['peak']['connections']} "
        f"connections); target for the paced run {c['target_rps']:.0f} req/s. Debian has no "
        f"wrk2, so the run at {paced} paces each connection with wrk's `delay()` (a uniformly "
        "random pause with the calibrated mean before each request), calibrated until the "
        f"measured rate is within {_percent(c['tolerance'])} of the target; wrk measures "
        "latency from the moment a request is sent, so the pause is not counted.",
    ]
    return _lines(*lines)


def _local_tier(ttl: float) -> str:
    """What ``SHOP_CATALOGUE_LOCAL_TTL`` made of an instance's in-process tier."""
    if not ttl:
        return f"off (`SHOP_CATALOGUE_LOCAL_TTL={ttl:g}`)"
    return (
        f"on, invalidated by pub/sub, an entry living at most {ttl:g} s "
        f"(`SHOP_CATALOGUE_LOCAL_TTL={ttl:g}`)"
    )


def scale_section(r: dict) -> str:
    scale = r.get("scale")
    if not scale:
        return ""
    small, large = scale["sizes"]
    repetitions = r["meta"]["settings"]["scale_repetitions"]
    lines = [
        "## Catalogue scale (cache miss)",
        "",
        f"The same API request on a schema of {small:,} and of {large:,} demo products (plus "
        f"{_count(scale['rare_products'], 'product')} named with the rare word "
        f"*{scale['rare_word']}*, added last). One shop instance per schema with its "
        f"in-process tier {_local_tier(scale['catalogue_local_ttl'])}; every catalogue key in "
        "Redis is deleted before each request, so each one rebuilds from PostgreSQL (the "
        f"category list too). Median of {repetitions} sequential requests, timed by the "
        "client.",
        "",
        f"| request | {small:,}: median ms | {large:,}: median ms | ratio | items | SQL/request |",
        "|---|---|---|---|---|---|",
    ]
    t = scale["timings"]
    for label, ratio in scale["ratios"].items():
        a, b = t[str(small)][label], t[str(large)][label]
        lines.append(
            f"| {label} `{a['path']}` | {a['median_ms']:.1f} | {b['median_ms']:.1f} | "
            f"{ratio:.2f} | {a['items']:.0f} / {b['items']:.0f} | "
            f"{a['sql_per_request']:.0f} / {b['sql_per_request']:.0f} |"
        )
    seeds = {k: v for k, v in scale["seed_seconds"].items() if v}
    seeded = ", ".join(f"{int(k):,} products in {v:.0f} s" for k, v in seeds.items())
    lines += [
        "",
        "Seeding (once; the schemas are kept between runs while the migrations and the seed "
        f"are unchanged): {seeded or 'kept from an earlier run'}.",
    ]
    return _lines(*lines)


def invalidation_section(r: dict) -> str:
    inv = r.get("invalidation")
    if not inv:
        return ""
    lines = [
        "## Invalidation at any tier size",
        "",
        "One product's invalidation in an instance's in-process tier (`shop/local_tier.py`), "
        "timed around `LocalTier.drop` in the benchmark's own process (`bench/invalidation.py`)"
        f": the tier filled with entries of other products, then the product's "
        f"{inv['entries_of_the_product']} entries (its data, its page, grid pages showing it) "
        f"put back and dropped, {inv['repetitions']} times per size. Beside it, a scan of the "
        "same tier (every entry's products tested), which is what every invalidation message "
        "cost each process before the tier was indexed by product.",
        "",
        "| entries | drop: median µs | drop: p99 µs | a scan of the tier: median µs (runs) |",
        "|---|---|---|---|",
    ]
    for size in inv["sizes"]:
        row = inv["by_size"][str(size)]
        lines.append(
            f"| {size:,} | {row['drop']['median_us']:.1f} | {row['drop']['p99_us']:.1f} | "
            f"{row['scan']['median_us']:,.0f} ({row['scans']}) |"
        )
    small, large = min(inv["sizes"]), max(inv["sizes"])
    lines += [
        "",
        f"Dropping one product from {large:,} entries takes {inv['ratio']:.2f} × what it "
        f"takes from {small:,}.",
    ]
    return _lines(*lines)


def memory_section(r: dict) -> str:
    memory = r.get("memory")
    if not memory:
        return ""
    session_key, cart_key = memory["keys"]["session"], memory["keys"]["cart"]
    return _lines(
        "## Redis memory of a session",
        "",
        f"An anonymous visitor with a {_cart(r)}, made through the API: `MEMORY USAGE` of "
        f"`{session_key}` = {memory['bytes']['session']} bytes and of `{cart_key}` = "
        f"{memory['bytes']['cart']} bytes; **{memory['total']} bytes** in all "
        f"(fields: {memory['fields']}).",
    )


def checkout_section(r: dict) -> str:
    checkout = r.get("checkout")
    if not checkout:
        return ""
    units = {race["units_per_buyer"] for race in checkout.values()}
    lines = [
        "## Checkout under contention",
        "",
        "Buyers are registered shoppers with "
        f"{' or '.join(_count(n, 'unit') for n in sorted(units))} in the cart; a barrier "
        "releases all their `POST /api/v1/orders` at once through the balancer. Checked "
        "afterwards on the primary: stock + units sold = initial stock for every product, no "
        "stock below 0, orders in the database = orders answered 201.",
        "",
        "| race | buyers | products | stock each | orders | seconds | orders/s | statuses "
        "| oversold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, race in checkout.items():
        lines.append(
            f"| {key.replace('_', ' ')} | {race['buyers']} | {race['products']} | "
            f"{race['stock_each']} | {race['orders']} | {race['seconds']:.2f} | "
            f"{race['orders_per_second']:.1f} | {race['statuses']} | "
            f"{race['oversold_units']} |"
        )
    return _lines(*lines)


def profiles_section(r: dict) -> str:
    profiles = r.get("profiles")
    if not profiles:
        return ""
    cfg = r["meta"]["settings"]
    lines = [
        "## Profiles (py-spy, where a throughput target was missed)",
        "",
        "Share of the samples of the gunicorn workers under the same wrk load "
        f"({cfg['profile_connections']} connections, {cfg['profile_seconds']} s at "
        f"{cfg['profile_rate']} Hz; flame graphs in `{PROFILES.relative_to(REPO)}/`, not "
        "committed). Threading and gunicorn's own loop frames are left out; see "
        f"[the analysis]({ANALYSIS}).",
    ]
    for name, prof in profiles.items():
        lines.append("")
        if "error" in prof:
            lines.append(f"- {name}: py-spy failed: {prof['error']}")
            continue
        lines += [f"### {name}", "", "| frame (on the stack: inclusive) | share |", "|---|---|"]
        lines += [
            f"| `{frame}` | {share:.0%} |" for frame, share in _informative(prof["total"])[:20]
        ]
        lines += ["", "| frame (on top: self) | share |", "|---|---|"]
        lines += [
            f"| `{frame}` | {share:.0%} |" for frame, share in _informative(prof["self"])[:10]
        ]
    return _lines(*lines)


def _rotations(n: int) -> str:
    """The orders of n contenders round after round (throughput.run_workload)."""
    letters = [chr(ord("A") + i) for i in range(n)]
    return ", ".join(" ".join(letters[i:] + letters[:i]) for i in range(n))


def method_section(r: dict) -> str:
    cfg = r["meta"]["settings"]
    retries = cfg["max_attempts"] - 1
    threads = sorted({run["threads"] for w in ("a", "b") if r.get(w) for run in _runs(r[w])})
    wrk = f"wrk with {' or '.join(map(str, threads))} thread" + ("" if threads == [1] else "s")
    schemas = [f"`{cfg['schema']}` with {cfg['products']:,} products"]
    schemas += [f"`{name}`" for name in r.get("scale", {}).get("schemas", [])]
    return _lines(
        "## Method",
        "",
        "- **Contenders**, each under the shop's `gunicorn.conf.py` with the same "
        f"`SHOP_WORKERS={cfg['workers']}` and `SHOP_THREADS={cfg['threads']}` (gthread), on "
        "its own loopback port, access log to a file: **ceiling** (`bench/ceiling.py`: a bare "
        "Flask app rendering the shop's grid and product templates from the demo catalogue in "
        "memory, stub filters and globals, no session, no cache, no database); "
        "**conventional** (`bench/conventional.py`: Flask-Session in Redis for every visitor, "
        "saved on every request, and the categories, a count and an OFFSET page, or the "
        "product, queried on the primary for every page); **shop** (`wsgi:app`, the real app, "
        "default settings but a plain-HTTP cookie and "
        f"`SHOP_CATALOGUE_CACHE_TTL={cfg['catalogue_cache_ttl']}`, so that the Redis tier "
        "stays warm for the whole run; the in-process tier "
        f"{_local_tier(cfg['catalogue_local_ttl'])}; the per-address rate rules are off, "
        "since every request comes from one address).",
        "- The contenders render the same pages: sizes checked before the runs "
        f"({r.get('page_sizes', {}).get('sizes')}).",
        f"- **Alternation**: {cfg['rounds']} rounds; in each, every contender runs "
        f"{cfg['duration']:g} s at each of {cfg['connections']} connections, the order "
        f"rotating from round to round ({_rotations(len(CONTENDERS))}); every cache is warmed "
        "before each round. The figure per concurrency is the median of the rounds; a "
        "contender's headline is its best concurrency. A run is repeated (at most "
        f"{_count(retries, 'more time')}) when it did not measure the contender: when wrk's "
        "keep-alive connections all landed on one gunicorn worker (each worker's CPU time "
        "shows it), or when processes outside the benchmark took more than "
        f"{_percent(cfg['foreign_cpu_limit'])} of the CPU (another test run on the machine).",
        f"- **Load generator**: {wrk} and a Lua script cycling through {cfg['grid_pages']} "
        f"grid pages and {cfg['products_opened']} products from each (a, b), sending the "
        f"session cookie in (b) ({cfg['sessions']} sessions made through each app's own HTTP "
        "API or forms; the ceiling is sent the shop's cookies and ignores them). wrk's CPU "
        "share is in the tables; it stays far from a core.",
        "- **Counts**: SQL statements and Redis round trips per request come from the apps' "
        "own instrumentation, off in the timed runs; Redis writes per request from the Redis "
        "server's `INFO commandstats` over the timed runs (a private `redis-server` started by "
        "the benchmark, so nothing else is counted).",
        f"- **Data**: PostgreSQL database `{cfg['database']}` (schemas {', '.join(schemas)}), "
        "migrated with the shop's Alembic and seeded with `flask --app shop seed`.",
    )


# The machine's facts the results hold, in the order shown.
MACHINE = (
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
)


def machine_section(r: dict) -> str:
    machine = r["meta"]["machine"]
    return _lines(
        "## Machine", "", *(f"- {key}: {machine[key]}" for key in MACHINE if key in machine)
    )


def commands_section(r: dict) -> str:
    m = r["meta"]
    cfg = m["settings"]
    longer = f"BENCH_DURATION={2 * cfg['duration']:g} BENCH_ROUNDS={cfg['rounds'] + 2} make bench"
    commands = {
        "apt-get install wrk": "the load generator (the benchmark says so if it is missing)",
        "make bench": "= .venv/bin/pip install -e '.[dev,bench]' && .venv/bin/python -m bench",
        ".venv/bin/python -m bench --quick": (
            "a smoke run: shorter runs, fewer rounds; BENCHMARKS.md untouched"
        ),
        ".venv/bin/python -m bench --quick --only floor": (
            "the floor comparison alone, about two minutes; BENCHMARKS.md untouched"
        ),
        f".venv/bin/python -m bench --only {PARTS[-1]}": f"one part ({', '.join(PARTS)})",
        longer: "longer runs than this one",
    }
    width = max(map(len, commands)) + 2
    return _lines(
        "## Commands",
        "",
        "```sh",
        *(f"{command:<{width}}# {comment}" for command, comment in commands.items()),
        "```",
        "",
        f"This run: `{m['command']}`, settings {cfg}.",
    )


SECTIONS: tuple[Callable[[dict], str], ...] = (
    preamble,
    targets_section,
    figure,
    workload_a,
    workload_b,
    floor_section,
    mix_section,
    edge_section,
    scale_section,
    invalidation_section,
    memory_section,
    checkout_section,
    profiles_section,
    method_section,
    machine_section,
    commands_section,
)


def markdown(r: dict, plotted: bool = True) -> str:
    """BENCHMARKS.md: the sections in order, those of parts that did not run left out."""
    sections = [section for section in SECTIONS if plotted or section is not figure]
    return "\n".join(text for text in (section(r) for section in sections) if text)
