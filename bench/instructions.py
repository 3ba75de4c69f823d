"""Instructions per warm page, counted by callgrind: the floor's and the shop's own cost, the
same whatever else the machine is doing.

Requests per second on this shared 2-core machine move by a tenth from run to run; the number
of instructions a process executes to answer one request does not. Each side runs this module
in a child process under ``valgrind --tool=callgrind``, answering the same warm pages straight
through the WSGI app (no gunicorn, no socket towards the client) ``N`` times inside
``itertools.starmap``, and callgrind counts only inside that C function (``--toggle-collect``):
the main thread's requests, not the app's start nor its background threads. What it cannot show
is what wrk sees besides: gunicorn's own per-request work (the same for both sides), and the
kernel's and Redis's side of a round trip (the shop's alone).

``python -m bench.instructions SIDE COUNT`` with ``BENCH_INSTRUCTIONS`` naming a JSON file of
``{"env", "pages", "paths", "cookie"}`` is the child; :func:`measure` is the parent.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

SPEC_ENV = "BENCH_INSTRUCTIONS"
SIDES = ("floor", "shop-anonymous", "shop-session", "session-load")
WARM_UP = 40  # requests before counting starts: every page in every tier
_COLLECTED = re.compile(r"Collected : (\d+)")


def valgrind() -> str | None:
    return shutil.which("valgrind")


def measure(
    env: dict[str, str],
    pages_file: Path,
    paths: list[str],
    cookie: str,
    *,
    count: int = 300,
    python: str = sys.executable,
    cwd: Path | None = None,
) -> dict:
    """Instructions per request for each of :data:`SIDES`; an ``error`` instead when
    valgrind is missing or a child fails (the benchmark goes on without this table)."""
    binary = valgrind()
    if binary is None:
        return {"error": "valgrind is not installed (Debian: apt-get install valgrind)"}
    with tempfile.TemporaryDirectory(prefix="shop-bench-instructions-") as folder:
        spec = Path(folder) / "spec.json"
        spec.write_text(
            json.dumps({"env": env, "pages": str(pages_file), "paths": paths, "cookie": cookie})
        )
        child_env = dict(env, PYTHONHASHSEED="0", **{SPEC_ENV: str(spec)})
        per_request: dict[str, float] = {}
        for side in SIDES:
            out = Path(folder) / f"{side}.out"
            done = subprocess.run(
                [binary, "--tool=callgrind", "--collect-atstart=no"]
                + ["--toggle-collect=starmap_next", f"--callgrind-out-file={out}"]
                + [python, "-m", "bench.instructions", side, str(count)],
                env=child_env,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=600,
            )
            found = _COLLECTED.search(done.stderr)
            if done.returncode != 0 or found is None or int(found.group(1)) == 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
                return {"error": f"{side} failed: {' | '.join(tail)}"}
            per_request[side] = int(found.group(1)) / count
    return {"count": count, "paths": len(paths), "per_request": per_request}


# -- the child ---------------------------------------------------------------------------------


def _environ(path: str, cookie: str | None) -> dict:
    target, _, query = path.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": target,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_ACCEPT_ENCODING": "identity",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    return environ


def _requests(app: Callable, paths: list[str], cookie: str | None) -> Callable[[int], None]:
    statuses: list[str] = []

    def start_response(status: str, _headers: list, _exc_info=None) -> None:
        statuses.append(status)

    turn = itertools.count()

    def run(n: int) -> None:
        for _ in range(n):
            path = paths[next(turn) % len(paths)]
            body: Iterable[bytes] = app(_environ(path, cookie), start_response)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()
            if not statuses[-1].startswith("200"):
                raise RuntimeError(f"{path} answered {statuses[-1]}")

    return run


def _child(side: str, count: int) -> None:
    spec = json.loads(Path(os.environ[SPEC_ENV]).read_text())
    os.environ.update(spec["env"])
    paths, cookie = spec["paths"], spec["cookie"]
    if side == "floor":
        from bench.floor import create_app as floor_app

        run = _requests(floor_app(spec["pages"]).wsgi_app, paths, None)
    else:
        from shop import create_app

        app = create_app()
        if side == "session-load":
            from werkzeug.http import parse_cookie

            interface = app.session_interface
            value = parse_cookie(cookie).get(interface.cookie_name)  # type: ignore[attr-defined]
            issued = interface.ids.read(value)  # type: ignore[attr-defined]
            if issued is None:
                raise RuntimeError("the session cookie was not issued by this shop")
            store = interface.store  # type: ignore[attr-defined]

            def run(n: int) -> None:
                for _ in range(n):
                    store.load(issued[0])
        else:
            run = _requests(app, paths, cookie if side == "shop-session" else None)
    run(WARM_UP)
    # Counted: what runs inside itertools.starmap (callgrind's --toggle-collect=starmap_next).
    list(itertools.starmap(run, [(1,)] * count))


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
