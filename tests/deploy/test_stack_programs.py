"""Before it starts anything, the stack names each program it lacks and its Debian package
(``make stack`` on a machine without HAProxy says ``apt-get install haproxy``, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.stack import stack as stack_module
from deploy.stack.programs import PROGRAMS, Program, missing_programs, require_programs
from tests.support import ROOT


def pg_bin_with(tmp_path: Path, names: list[str]) -> Path:
    folder = tmp_path / "pg-bin"
    folder.mkdir()
    for name in names:
        (folder / name).write_text("#!/bin/sh\n")
    return folder


VARNISH = ("varnishd", "libvmod_xkey.so")
PGBOUNCER = "pgbouncer"
MONITORING = ("prometheus", "prometheus-redis-exporter", "prometheus-postgres-exporter")


def which_only(*present: str):
    return lambda name: f"/somewhere/{name}" if name in present else None


def without_fallbacks() -> tuple[Program, ...]:
    return tuple(Program(p.name, p.package, None, p.in_pg_bin, p.vmod) for p in PROGRAMS)


def test_nothing_is_missing_when_every_program_is_found(tmp_path):
    pg_bin = pg_bin_with(tmp_path, ["initdb", "pg_ctl", "pg_controldata", "pg_basebackup"])
    which = which_only("redis-server", "haproxy", "openssl", PGBOUNCER, *VARNISH, *MONITORING)
    assert missing_programs(pg_bin, which, without_fallbacks()) == []


def test_a_missing_haproxy_names_its_debian_package(tmp_path, monkeypatch):
    pg_bin = pg_bin_with(tmp_path, ["initdb", "pg_ctl", "pg_controldata", "pg_basebackup"])
    monkeypatch.setattr("deploy.stack.programs.PROGRAMS", without_fallbacks())
    with pytest.raises(stack_module.StackError) as raised:
        require_programs(
            pg_bin, which_only("redis-server", "openssl", PGBOUNCER, *VARNISH, *MONITORING)
        )
    message = str(raised.value)
    assert "haproxy: not found on PATH; Debian package haproxy" in message
    assert message.endswith("install them with: sudo apt-get install haproxy")


def test_missing_postgresql_and_redis_are_named_with_their_packages(tmp_path, monkeypatch):
    empty = pg_bin_with(tmp_path, [])
    monkeypatch.setattr("deploy.stack.programs.PROGRAMS", without_fallbacks())
    with pytest.raises(stack_module.StackError) as raised:
        require_programs(empty, which_only("haproxy", "openssl", PGBOUNCER, *VARNISH, *MONITORING))
    message = str(raised.value)
    assert f"initdb: not found in {empty} (STACK_PG_BIN); Debian package postgresql-15" in message
    assert "pg_basebackup: not found in" in message and "postgresql-client-15" in message
    assert "redis-server: not found on PATH; Debian package redis-server" in message
    assert message.endswith("sudo apt-get install postgresql-15 postgresql-client-15 redis-server")


def test_openssl_is_not_needed_once_the_certificate_exists(tmp_path, monkeypatch):
    pg_bin = pg_bin_with(tmp_path, ["initdb", "pg_ctl", "pg_controldata", "pg_basebackup"])
    monkeypatch.setattr("deploy.stack.programs.PROGRAMS", without_fallbacks())
    which = which_only("redis-server", "haproxy", PGBOUNCER, *VARNISH, *MONITORING)
    require_programs(pg_bin, which, have_certificate=True)
    with pytest.raises(stack_module.StackError, match="apt-get install openssl"):
        require_programs(pg_bin, which)


def test_a_missing_varnish_and_xkey_module_name_their_debian_packages(tmp_path, monkeypatch):
    pg_bin = pg_bin_with(tmp_path, ["initdb", "pg_ctl", "pg_controldata", "pg_basebackup"])
    monkeypatch.setattr("deploy.stack.programs.PROGRAMS", without_fallbacks())
    with pytest.raises(stack_module.StackError) as raised:
        require_programs(
            pg_bin, which_only("redis-server", "haproxy", "openssl", PGBOUNCER, *MONITORING)
        )
    message = str(raised.value)
    assert "varnishd: not found on PATH; Debian package varnish" in message
    assert (
        "libvmod_xkey.so: not found in Varnish's vmod folder; Debian package varnish-modules"
    ) in message
    assert message.endswith("sudo apt-get install varnish varnish-modules")


def test_a_missing_pgbouncer_names_its_debian_package(tmp_path, monkeypatch):
    pg_bin = pg_bin_with(tmp_path, ["initdb", "pg_ctl", "pg_controldata", "pg_basebackup"])
    monkeypatch.setattr("deploy.stack.programs.PROGRAMS", without_fallbacks())
    with pytest.raises(stack_module.StackError) as raised:
        require_programs(
            pg_bin, which_only("redis-server", "haproxy", "openssl", *VARNISH, *MONITORING)
        )
    message = str(raised.value)
    assert "pgbouncer: not found on PATH; Debian package pgbouncer" in message
    assert message.endswith("install them with: sudo apt-get install pgbouncer")


def test_the_fallback_path_counts_as_found(tmp_path):
    fallback = tmp_path / "haproxy"
    fallback.write_text("#!/bin/sh\n")
    program = Program("haproxy", "haproxy", fallback=str(fallback))
    assert missing_programs(tmp_path, which_only(), (program,)) == []
    assert missing_programs(tmp_path, which_only(), (Program("haproxy", "haproxy"),))


def test_make_stack_without_postgresql_says_what_to_install_and_starts_nothing(tmp_path):
    """The command the Makefile runs, with STACK_PG_BIN pointing at a folder without
    PostgreSQL: exit 1, one sentence naming the package, no traceback, nothing written."""
    work = tmp_path / "work"
    env = dict(os.environ, STACK_PG_BIN=str(tmp_path / "no-postgresql"), STACK_DIR=str(work))
    env.update(STACK_PORT="26479", STACK_PORT_BASE="26420")  # never bound: nothing starts
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "stack" / "stack.py"), "up"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "initdb: not found in" in done.stderr
    assert "sudo apt-get install postgresql-15 postgresql-client-15" in done.stderr
    assert not work.exists()
