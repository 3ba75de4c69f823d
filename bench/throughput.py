"""Workloads (a) and (b): the three contenders taking turns under wrk, round after round.

In each round every contender runs once at every concurrency, in an order that rotates from
round to round (A B C, B C A, C A B), so a noisy moment of the machine falls on all of them
alike. Each run also records what the Redis server itself executed, per request.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import wrk
from .servers import Process
from .visitors import RedisStats, warm

CONTENDERS = ("ceiling", "conventional", "shop")


@dataclass
class Contender:
    name: str
    server: Process
    cookies: list[str] = field(default_factory=list)


def run_workload(
    workload: str,
    contenders: Sequence[Contender],
    paths: Sequence[str],
    *,
    concurrencies: Sequence[int],
    rounds: int,
    duration: float,
    redis_stats: RedisStats,
    lua_dir: Path,
    progress: Callable[[str], None],
    rotate: bool = True,
) -> dict[str, dict[int, list[dict]]]:
    """Every run's figures: ``{contender: {connections: [run, ...]}}``. Without ``rotate``
    every round keeps the contenders' order, so two of them strictly alternate."""
    scripts = {
        c.name: wrk.pages_script(lua_dir / f"{workload}-{c.name}.lua", paths, c.cookies)
        for c in contenders
    }
    runs: dict[str, dict[int, list[dict]]] = {
        c.name: {n: [] for n in concurrencies} for c in contenders
    }
    total = rounds * len(concurrencies) * len(contenders)
    done = 0
    started = time.monotonic()
    for round_no in range(rounds):
        turn = round_no % len(contenders) if rotate else 0
        order = list(contenders[turn:]) + list(contenders[:turn])
        for contender in order:  # warm every cache (and PostgreSQL's buffers) before a round
            warm(contender.server.url, paths, contender.cookies)
        for connections in concurrencies:
            for contender in order:
                for attempt in range(1, MAX_ATTEMPTS + 1):
                    before = redis_stats.snapshot()
                    result = wrk.run(
                        contender.server.url,
                        scripts[contender.name],
                        connections=connections,
                        duration=duration,
                        watch=[contender.server],
                    )
                    # Requests still in flight when wrk stopped finish now, and count here.
                    time.sleep(0.5)
                    delta = redis_stats.delta(before, redis_stats.snapshot())
                    result["attempt"] = attempt
                    problem = disturbed(result)
                    if problem is None or attempt == MAX_ATTEMPTS:
                        break
                    progress(f"  ({workload}) c={connections} {contender.name}: {problem}; again")
                n = max(1, result["requests"])
                result["redis_commands_per_request"] = sum(delta["commands"].values()) / n
                result["redis_writes_per_request"] = sum(delta["writes"].values()) / n
                result["redis_writes"] = delta["writes"]
                result["round"] = round_no + 1
                runs[contender.name][connections].append(result)
                done += 1
                elapsed = time.monotonic() - started
                eta = elapsed / done * (total - done)
                progress(
                    f"  ({workload}) round {round_no + 1}/{rounds} c={connections:<3} "
                    f"{contender.name:<12} {result['rps']:8.0f} req/s  p50 "
                    f"{result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:6.1f} ms  "
                    f"errors {result['errors']}  wrk cpu {result['cpu_wrk']:.0%}  "
                    f"[{done}/{total}, ETA {eta:.0f} s]"
                )
    return runs


MAX_ATTEMPTS = 3


FOREIGN_LIMIT = 0.15


def disturbed(result: dict) -> str | None:
    """Why a run did not measure the contender, or None. Chance, not the contender; such a
    run is repeated (at most twice), for every contender alike:

    - one worker did (nearly) all the work: gunicorn handed every keep-alive connection of
      wrk to it, so the run measured one core;
    - processes outside the benchmark (another test run) took a share of the two cores."""
    split = result.get("worker_split") or []
    if len(split) > 1 and max(split) > 0.85:
        return f"the connections landed on one worker (CPU split {split})"
    if result.get("cpu_foreign", 0) > FOREIGN_LIMIT:
        return f"other processes took {result['cpu_foreign']:.0%} of the CPU"
    return None


def summarise(runs: dict[str, dict[int, list[dict]]]) -> dict:
    """Medians over the rounds per concurrency; each contender's peak; the shop's ratios."""
    summary: dict = {"by_connections": {}, "peak": {}}
    for name, by_conn in runs.items():
        rows = {}
        for connections, results in by_conn.items():
            if not results:
                continue

            def med(key: str, results=results) -> float:
                return statistics.median(r[key] for r in results)

            rows[connections] = {
                "rps": med("rps"),
                "rps_min": min(r["rps"] for r in results),
                "rps_max": max(r["rps"] for r in results),
                "p50_ms": med("p50_ms"),
                "p95_ms": med("p95_ms"),
                "p99_ms": med("p99_ms"),
                "errors": sum(r["errors"] for r in results),
                "requests": sum(r["requests"] for r in results),
                "cpu_wrk": med("cpu_wrk"),
                "cpu_servers": med("cpu_servers"),
                "cpu_other": med("cpu_other"),
                "cpu_machine": med("cpu_machine"),
                "cpu_foreign": med("cpu_foreign"),
                "bytes_per_request": med("bytes_per_request"),
                "redis_commands_per_request": med("redis_commands_per_request"),
                "redis_writes_per_request": max(r["redis_writes_per_request"] for r in results),
            }
        summary["by_connections"][name] = rows
        if rows:
            best = max(rows, key=lambda c: rows[c]["rps"])
            summary["peak"][name] = {"connections": best, **rows[best]}
    peak = summary["peak"]
    if "shop" in peak:
        for other in ("ceiling", "conventional"):
            if other in peak and peak[other]["rps"]:
                summary[f"shop_vs_{other}"] = peak["shop"]["rps"] / peak[other]["rps"]
    return summary
