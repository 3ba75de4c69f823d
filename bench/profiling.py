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

RATE_HZ = 200  # samples a second
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def available() -> str | None:
    """py-spy from the benchmark's own environment (the ``bench`` extra), else from PATH."""
    beside = Path(sys.prefix) / "bin" / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _record(server: Process, out: Path, fmt: str, seconds: float) -> subprocess.Popen:
    command = [
        available() or "py-spy",
        "record",
        "--pid",
        str(server.pid),
        "--subprocesses",
        "--nonblocking",
    ]
    command += ["--rate", str(RATE_HZ), "--duration", f"{seconds:g}"]
    command += ["--format", fmt, "-o", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def profile(
    server: Process, script: Path, *, connections: int, seconds: float, out_dir: Path, name: str
) -> dict:
    """Two recordings under the same load (py-spy writes one format per run)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw, svg = out_dir / f"{name}.txt", out_dir / f"{name}.svg"
    results = {}
    for fmt, path in (("raw", raw), ("flamegraph", svg)):
        spy = _record(server, path, fmt, seconds)
        time.sleep(0.5)  # attached before the load starts
        results[fmt] = wrk.run(
            server.url, script, connections=connections, duration=seconds, watch=[server]
        )
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode != 0:
            return {"error": (err or "").strip()[-500:]}
    summary = summarise(raw)
    summary["svg"] = str(svg)
    summary["raw"] = str(raw)
    summary["rps_under_profiler"] = results["raw"]["rps"]
    return summary


def _short(frame: str) -> str:
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    file = found["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{found['func']} ({file})"


def summarise(raw: Path, top: int = 15) -> dict:
    """Samples per frame: ``self`` where the frame was on top, ``total`` where it was on the
    stack at all (each frame counted once per stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = stack.split(";")
        if sum(1 for f in parts if f.startswith("process ")) < 2:
            continue  # the gunicorn master, not a worker
        frames = [_short(f) for f in parts if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    return {
        "samples": samples,
        "self": [(f, n / samples) for f, n in own.most_common(top)] if samples else [],
        "total": [(f, n / samples) for f, n in inclusive.most_common(top * 2)] if samples else [],
    }
