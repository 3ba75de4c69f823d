"""The programs the stack runs, and the Debian package that brings each one.

Checked before anything starts, so a machine without one gets a sentence naming the package to
install instead of a traceback halfway through a start.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.topology import StackError, _pg_bin_dir


@dataclass(frozen=True)
class Program:
    """One program: where the stack looks for it and which Debian package installs it."""

    name: str
    package: str
    fallback: str | None = None  # used when it is not on PATH (as the start code does)
    in_pg_bin: bool = False  # looked for in STACK_PG_BIN, not on PATH
    vmod: bool = False  # a Varnish module: found at its fallback (Varnish's vmod folder)

    def where(self, pg_bin: Path, which: Callable[[str], str | None]) -> str | None:
        """The path the stack would run, or None when it is not there."""
        if self.in_pg_bin:
            path = pg_bin / self.name
            return str(path) if path.is_file() else None
        found = which(self.name)
        if found:
            return found
        if self.fallback and Path(self.fallback).is_file():
            return self.fallback
        return None


def _vmod_path(name: str) -> str:
    """Where Debian puts a Varnish module (``/usr/lib/<multiarch>/varnish/vmods``)."""
    found = sorted(glob.glob(f"/usr/lib/*/varnish/vmods/{name}"))
    return found[0] if found else f"/usr/lib/x86_64-linux-gnu/varnish/vmods/{name}"


PROGRAMS = (
    Program("initdb", "postgresql-15", in_pg_bin=True),
    Program("pg_ctl", "postgresql-15", in_pg_bin=True),
    Program("pg_controldata", "postgresql-15", in_pg_bin=True),
    Program("pg_basebackup", "postgresql-client-15", in_pg_bin=True),
    # The instances reach both databases through it (deploy/stack/pgbouncer.py).
    Program("pgbouncer", "pgbouncer", fallback="/usr/sbin/pgbouncer"),
    Program("redis-server", "redis-server", fallback="/usr/bin/redis-server"),
    Program("haproxy", "haproxy", fallback="/usr/sbin/haproxy"),
    Program("openssl", "openssl"),
    # The edge cache and its tag purges (deploy/varnish/shop.vcl.j2 imports xkey).
    Program("varnishd", "varnish", fallback="/usr/sbin/varnishd"),
    Program(
        "libvmod_xkey.so", "varnish-modules", fallback=_vmod_path("libvmod_xkey.so"), vmod=True
    ),
    # The monitoring (deploy/stack/monitoring.py).
    Program("prometheus", "prometheus", fallback="/usr/bin/prometheus"),
    Program("prometheus-redis-exporter", "prometheus-redis-exporter"),
    Program("prometheus-postgres-exporter", "prometheus-postgres-exporter"),
)


def missing_programs(
    pg_bin: Path | None = None,
    which: Callable[[str], str | None] = shutil.which,
    programs: tuple[Program, ...] | None = None,
) -> list[Program]:
    """The programs (default: :data:`PROGRAMS`) the stack cannot find, in the order it would
    need them."""
    pg_bin = _pg_bin_dir() if pg_bin is None else pg_bin
    programs = PROGRAMS if programs is None else programs
    return [program for program in programs if program.where(pg_bin, which) is None]


def require_programs(
    pg_bin: Path | None = None,
    which: Callable[[str], str | None] = shutil.which,
    *,
    have_certificate: bool = False,
    only: tuple[str, ...] | None = None,
) -> None:
    """Raise a :class:`StackError` naming each missing program and the package to install.
    ``have_certificate``: the TLS certificate exists already, so openssl is not needed;
    ``only``: check just these programs (a part started on its own)."""
    pg_bin = _pg_bin_dir() if pg_bin is None else pg_bin
    missing = missing_programs(pg_bin, which)
    if only is not None:
        missing = [program for program in missing if program.name in only]
    if have_certificate:
        missing = [program for program in missing if program.name != "openssl"]
    if not missing:
        return
    lines = []
    for program in missing:
        place = f"in {pg_bin} (STACK_PG_BIN)" if program.in_pg_bin else "on PATH"
        if program.vmod:
            place = "in Varnish's vmod folder" + (
                f" ({program.fallback})" if program.fallback else ""
            )
        elif program.fallback:
            place += f" or at {program.fallback}"
        lines.append(f"  {program.name}: not found {place}; Debian package {program.package}")
    packages = " ".join(dict.fromkeys(program.package for program in missing))
    raise StackError(
        "the stack needs programs this machine does not have:\n"
        + "\n".join(lines)
        + f"\ninstall them with: sudo apt-get install {packages}"
    )
