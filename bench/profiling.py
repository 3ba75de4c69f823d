"""py-spy on a contender's gunicorn workers while wrk drives them: a flame graph (SVG) to look
at, and the collapsed stacks summarised into the frames that hold the most samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from . import wrk
from .servers import Process
from .shop_templates import REPO

RATE_HZ = 200  # samples a second
# Where a page's time goes, by what it is for: a sample counts for a group when a frame on its
# stack matches one of the group's substrings ("function (file)" as _short writes it).
COST_GROUPS = {
    "Jinja rendering": ("Template.render (jinja2/",),
    "the session load": ("open_session (",),
    "saving the session": ("save_session (",),
    "the catalogue's cache tiers": ("(shop/catalogue", "(shop/local_tier.py)"),
    "Redis round trips": ("Redis.execute_command (redis/",),
    "gunicorn's socket writes": ("write (gunicorn/util.py)",),
    # getrandom(2) for a request id, a new session id, a CSRF token's mask.
    "random bytes (secrets.token_bytes)": ("token_bytes (",),
}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def available() -> str | None:
    """py-spy from the benchmark's own environment (the ``bench`` extra), else from PATH."""
    beside = Path(sys.prefix) / "bin" / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _record(
    server: Process, out: Path, fmt: str, seconds: float, worker: int | None = None
) -> subprocess.Popen:
    command = [available() or "py-spy", "record", "--nonblocking"]
    # The master and its workers, or the one worker given.
    command += ["--pid", str(worker)] if worker else ["--pid", str(server.pid), "--subprocesses"]
    command += ["--rate", str(RATE_HZ), "--duration", f"{seconds:g}"]
    command += ["--format", fmt, "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def profile(
    server: Process,
    script: Path,
    *,
    connections: int,
    seconds: float,
    out_dir: Path,
    name: str,
    one_worker: bool = False,
) -> dict:
    """Two recordings under the same load (py-spy writes one format per run); of every worker,
    or with ``one_worker`` of the first (half the sampling cost on a small machine)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw, svg = out_dir / f"{name}.txt", out_dir / f"{name}.svg"
    results = {}
    worker = server.workers()[0] if one_worker and server.workers() else None
    for fmt, path in (("raw", raw), ("flamegraph", svg)):
        spy = _record(server, path, fmt, seconds, worker)
        time.sleep(0.5)  # attached before the load starts
        results[fmt] = wrk.run(
            server.url, script, connections=connections, duration=seconds, watch=[server]
        )
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0:
            return {"error": (err or "").strip()[-500:]}
    summary = summarise(raw, one_process=worker is not None)
    summary["worker"] = worker
    summary["svg"] = str(svg)
    summary["raw"] = str(raw)
    summary["rps_under_profiler"] = results["raw"]["rps"]
    return summary


def _short(frame: str) -> str:
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    file = found["file"]
    for marker in ("site-packages/", f"{REPO}/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{found['func']} ({file})"


def summarise(raw: Path, top: int = 15, one_process: bool = False) -> dict:
    """Samples per frame: ``self`` where the frame was on top, ``total`` where it was on the
    stack at all (each frame counted once per stack). A recording of one process has no
    ``process`` frames; one of a master and its workers names both, and the master's own
    stacks (one ``process`` frame) are left out."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        if not one_process and sum(1 for f in parts if f.startswith("process ")) < 2:
            continue  # the gunicorn master, not a worker
        frames = [_short(f) for f in parts if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
        for group, markers in COST_GROUPS.items():
            if any(marker in frame for frame in frames for marker in markers):
                groups[group] += n
    return {
        "samples": samples,
        "groups": [(g, n / samples) for g, n in groups.most_common()] if samples else [],
        "self": [(f, n / samples) for f, n in own.most_common(top)] if samples else [],
        "total": [(f, n / samples) for f, n in inclusive.most_common(top * 2)] if samples else [],
    }
