"""``python deploy/stack/stack.py up|down|status|restart-app NAME|flask ARGS...``."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time

from deploy.stack.apps import direct_env
from deploy.stack.components import restart_app
from deploy.stack.haproxy import haproxy_backends
from deploy.stack.processes import stack_status
from deploy.stack.topology import (
    APP_NAMES,
    COMPONENTS,
    Echo,
    StackError,
    Topology,
    load_topology,
)
from deploy.stack.whole_stack import start_stack, stop_stack

# -------------------------------------------------------------------------------------- CLI


def _status(topology: Topology | None, echo: Echo = print) -> int:
    if topology is None:
        echo("no stack recorded (run make stack)")
        return 1
    status = stack_status(topology)
    for name in COMPONENTS:
        entry = topology.component(name)
        state = "alive" if status[name] else "DEAD"
        port = f"port {entry.port}" if entry.port is not None else "no port"
        echo(f"  {name:<9} {state:<6} {port}  pid {entry.pid}")
    if status["balancer"]:
        with contextlib.suppress(OSError):
            echo(f"  haproxy backends: {haproxy_backends(topology)}")
    echo(f"shop      {topology.url}")
    return 0 if all(status.values()) else 1


def flask_command(topology: Topology, args: list[str]) -> list[str]:
    """The ``flask --app shop ARGS`` command line for the stack's database and Redis, as app1
    runs (its environment is in the topology): ``user grant``, ``order ship`` and the rest,
    through PgBouncer as the instances; ``db ...`` (migrations) straight to the primary."""
    app = topology.apps[APP_NAMES[0]]
    return [app.command[0].replace("gunicorn", "flask"), "--app", "shop", *args]


def run_flask(topology: Topology, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    app = topology.apps[APP_NAMES[0]]
    base = direct_env(topology) if args[:1] == ["db"] else app.env
    env = dict(base, SHOP_INSTANCE_NAME="cli")
    return subprocess.run(flask_command(topology, args), cwd=app.cwd, env=env, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stack.py", description="The shop on loopback: PostgreSQL, Redis, 3 x gunicorn."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start what is not running")
    down = commands.add_parser("down", help="stop everything by pid")
    down.add_argument("--purge", action="store_true", help="also delete data and logs")
    commands.add_parser("status", help="what is alive")
    restart = commands.add_parser("restart-app", help="restart one shop instance")
    restart.add_argument("name", choices=APP_NAMES)
    flask = commands.add_parser(
        "flask", help="run a `flask --app shop` command on the stack (e.g. user grant EMAIL admin)"
    )
    flask.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    def echo(line: str) -> None:
        print(line, flush=True)

    try:
        if args.command == "up":
            start_stack(echo=echo)
        elif args.command == "down":
            purge = args.purge or os.environ.get("STACK_PURGE", "") in ("1", "true", "yes")
            stop_stack(purge=purge, echo=echo)
        elif args.command == "status":
            return _status(load_topology(), echo)
        elif args.command == "flask":
            topology = load_topology()
            if topology is None:
                raise StackError("no stack recorded (run make stack)")
            return run_flask(topology, args.args).returncode
        else:
            topology = load_topology()
            if topology is None:
                raise StackError("no stack recorded (run make stack)")
            started = time.monotonic()
            restart_app(topology, args.name)
            entry = topology.apps[args.name]
            echo(
                f"  {args.name:<9} restarted, pid {entry.pid}  ({time.monotonic() - started:.1f} s)"
            )
    except StackError as exc:
        print(f"stack: {exc}", file=sys.stderr)
        topology = load_topology() if args.command == "up" else None
        if topology is not None and any(stack_status(topology).values()):
            print("what did start is still running: make stack-down stops it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
