"""wrk, driven by generated Lua scripts, and what a run cost the machine.

Each script ends with the same ``done()``, which prints one JSON line: requests, duration,
errors (socket errors, timeouts, and statuses of 400 and above) and latency percentiles. The
CPU time of wrk itself comes from the kernel's accounting of the child (``wait4``); the
servers' from ``/proc/<pid>/stat``; the machine's from ``/proc/stat``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from .servers import TICKS, BenchError, Process, cpu_seconds

DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d, ' ..
    '"p50": %d, "p90": %d, "p95": %d, "p99": %d, "mean": %.1f, "max": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.mean, latency.max))
end
"""

THREAD_IDS = r"""
local started = 0
function setup(thread)
  thread:set("id", started)
  started = started + 1
end
"""

PAGES = r"""
local counter = 0
function init(args)
  counter = (id or 0) * 1009
end

function request()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  if #cookies > 0 then
    return wrk.format("GET", path, { ["Cookie"] = cookies[(counter % #cookies) + 1] })
  end
  return wrk.format("GET", path)
end
"""


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError(
            "wrk is not installed. On Debian/Ubuntu: apt-get install wrk "
            "(the benchmark's load generator; make test does not need it)"
        )
    return found


def lua_table(name: str, values: Iterable[object]) -> str:
    """A Lua table literal of strings or numbers (JSON strings are Lua strings for ASCII)."""
    items = ",\n  ".join(json.dumps(v) for v in values)
    return f"local {name} = {{\n  {items}\n}}\n"


COUNT_HEADERS = r"""
counted = {}

function response(status, headers, body)
  counted.responses = (counted.responses or 0) + 1
  for i, name in ipairs(count_headers) do
    local value = tonumber(headers[name] or headers[string.lower(name)] or "")
    if value then
      counted[name] = (counted[name] or 0) + value
      local top = "max " .. name
      if counted[top] == nil or value > counted[top] then counted[top] = value end
    end
  end
end
"""

COUNTED_THREADS = r"""
local started = 0
local all_threads = {}
function setup(thread)
  thread:set("id", started)
  started = started + 1
  all_threads[#all_threads + 1] = thread
end

local function print_counted()
  local merged = {}
  for _, t in ipairs(all_threads) do
    for k, v in pairs(t:get("counted") or {}) do
      if string.sub(k, 1, 4) == "max " then
        merged[k] = math.max(merged[k] or 0, v)
      else
        merged[k] = (merged[k] or 0) + v
      end
    end
  end
  local parts = {}
  for k, v in pairs(merged) do parts[#parts + 1] = '"' .. k .. '": ' .. v end
  io.write("BENCH_COUNTED {" .. table.concat(parts, ", ") .. "}\n")
end
"""


def pages_script(
    path: Path,
    paths: Sequence[str],
    cookies: Sequence[str] = (),
    count_headers: Sequence[str] = (),
) -> Path:
    """GETs cycling through ``paths``; each request sends the next of ``cookies`` if any.
    With ``count_headers``, every response's values of those headers are summed (and their
    maximum kept): the app's own per-request counts, under load."""
    if count_headers:
        done = DONE.replace(
            "function done(summary, latency, requests)\n",
            "function done(summary, latency, requests)\n  print_counted()\n",
        )
        body = (
            COUNTED_THREADS
            + lua_table("paths", paths)
            + lua_table("cookies", cookies)
            + lua_table("count_headers", count_headers).replace(
                "local count_headers", "count_headers"
            )
            + PAGES
            + COUNT_HEADERS
            + done
        )
    else:
        body = THREAD_IDS + lua_table("paths", paths) + lua_table("cookies", cookies) + PAGES + DONE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("-- written by bench/wrk.py\n" + body)
    return path


_OURS = frozenset({"postgres", "redis-server", "wrk"})


def _process_ticks() -> dict[int, int]:
    """CPU ticks of every process that is neither a kernel thread, nor this harness, nor a
    server of the kind the contenders use (PostgreSQL, Redis), nor wrk."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            text = (proc / "stat").read_text()
        except OSError:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        fields = text.rsplit(")", 1)[1].split()
        if comm in _OURS or fields[1] == "2" or proc.name == "2":
            continue
        found[int(proc.name)] = int(fields[11]) + int(fields[12])
    return found


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run(
    url: str,
    script: Path,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    args: Sequence[str] = (),
    watch: Sequence[Process] = (),
    timeout: str = "10s",
) -> dict:
    """One wrk run; returns its figures plus the CPU shares of wrk, the watched servers and the
    rest of the machine (as fractions of all cores over the run's wall time)."""
    wrk = require_wrk()
    threads = max(1, min(threads, connections))
    seconds_arg = max(1, round(duration))  # wrk takes whole seconds only
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds_arg}s", f"--timeout={timeout}"]
    command += ["-s", str(script), url, "--", *args]
    servers_before = sum(p.cpu_seconds() for p in watch)
    workers_before = {pid: cpu_seconds(pid) for p in watch for pid in p.workers()}
    busy_before, total_before = _machine_ticks()
    foreign_before = _process_ticks()
    reaped_before = _children_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.monotonic() - started
    # communicate() reaped wrk: what the children's CPU time grew by is wrk's own.
    ru = _children_cpu() - reaped_before
    busy_after, total_after = _machine_ticks()
    watched = {pid for p in watch for pid in p.pids()}
    foreign = (
        sum(
            ticks - foreign_before.get(pid, 0)
            for pid, ticks in _process_ticks().items()
            if pid not in watched
        )
        / TICKS
    )
    servers = sum(p.cpu_seconds() for p in watch) - servers_before
    workers = [cpu_seconds(pid) - before for pid, before in workers_before.items()]
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {err.strip() or out.strip()}")
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise BenchError(f"wrk printed no result:\n{out}\n{err}")
    result = json.loads(line.split(" ", 1)[1])
    statuses = next((ln for ln in out.splitlines() if ln.startswith("BENCH_STATUSES ")), None)
    counted = next((ln for ln in out.splitlines() if ln.startswith("BENCH_COUNTED ")), None)
    cores = os.cpu_count() or 1
    seconds = result["duration_us"] / 1e6
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    machine_share = (busy_after - busy_before) / max(1, total_after - total_before)
    wrk_share = ru / (wall * cores)
    server_share = servers / (wall * cores)
    return {
        "connections": connections,
        "threads": threads,
        "requests": result["requests"],
        "seconds": round(seconds, 3),
        "rps": result["requests"] / seconds if seconds else 0.0,
        "p50_ms": result["p50"] / 1000,
        "p90_ms": result["p90"] / 1000,
        "p95_ms": result["p95"] / 1000,
        "p99_ms": result["p99"] / 1000,
        "mean_ms": result["mean"] / 1000,
        "max_ms": result["max"] / 1000,
        "bytes_per_request": result["bytes"] / max(1, result["requests"]),
        "errors": errors,
        "errors_detail": {
            k: result[k] for k in ("connect", "read", "write", "status", "timeout") if result[k]
        },
        "statuses": json.loads(statuses.split(" ", 1)[1]) if statuses else None,
        "counted": json.loads(counted.split(" ", 1)[1]) if counted else None,
        "cpu_wrk": round(wrk_share, 4),
        "cpu_servers": round(server_share, 4),
        "cpu_machine": round(machine_share, 4),
        "cpu_other": round(max(0.0, machine_share - wrk_share - server_share), 4),
        # Processes that are not part of the benchmark (another test run on the machine).
        "cpu_foreign": round(foreign / (wall * cores), 4),
        # Each gunicorn worker's share of the watched servers' CPU: with keep-alive, wrk's
        # connections may all land on one worker, which then has one core and the GIL.
        "worker_split": [round(w / sum(workers), 3) for w in workers] if sum(workers) else [],
    }


def _children_cpu() -> float:
    """CPU seconds of every child this process has reaped so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
