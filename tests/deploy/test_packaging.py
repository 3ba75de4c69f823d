"""The shipping artefacts: Dockerfile, gunicorn.conf.py and wsgi.py, checked without Docker.

These guard what only shows up in production otherwise: an image that runs as root or has no
health check, a gunicorn setting that silently ignores its variable, an entry point that cannot
start with the environment a deployment gives it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import ROOT, gunicorn_running

SECRET = "packaging-test-secret-0123456789"


# -- Dockerfile ------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def only(stage: list[tuple[str, str]], keyword: str) -> str:
    """The arguments of the last ``keyword`` in the stage (the one Docker applies)."""
    found = [arguments for kw, arguments in stage if kw == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]


def test_dockerfile_is_multi_stage():
    stages = [arguments for keyword, arguments in dockerfile_instructions() if keyword == "FROM"]
    assert len(stages) >= 2
    assert all(stage.startswith("python:3.11-slim") for stage in stages)


def test_image_runs_as_a_fixed_non_root_user():
    user = only(final_stage(), "USER").split(":")[0]
    assert user not in {"root", "0", ""}


def test_image_health_check_requests_healthz():
    healthcheck = only(final_stage(), "HEALTHCHECK")
    assert "CMD" in healthcheck
    assert "http://127.0.0.1:8000/healthz" in healthcheck
    assert "urllib" in healthcheck  # the slim image has no curl


def test_image_exposes_8000_and_starts_gunicorn_with_the_config_file():
    stage = final_stage()
    assert "8000" in only(stage, "EXPOSE").split()
    assert json.loads(only(stage, "CMD")) == ["gunicorn", "wsgi:app", "-c", "gunicorn.conf.py"]
    env = " ".join(arguments for keyword, arguments in stage if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


def test_image_copies_what_the_app_needs_side_by_side():
    copied = [
        shlex.split(arguments)
        for keyword, arguments in final_stage()
        if keyword == "COPY" and not arguments.startswith("--from")
    ]
    sources = {Path(source).name for parts in copied for source in parts[:-1]}
    assert {"shop", "templates", "static", "wsgi.py", "gunicorn.conf.py"} <= sources
    ignored = (ROOT / ".dockerignore").read_text().split()
    for needed in ("shop", "templates", "static", "wsgi.py", "gunicorn.conf.py"):
        assert needed not in ignored
    for local_state in (".venv", ".git", "instance", "tests"):
        assert local_state in ignored


# -- gunicorn.conf.py ------------------------------------------------------------------------


@pytest.fixture
def gunicorn_conf(monkeypatch):
    """Load gunicorn.conf.py as gunicorn does, with only the ``SHOP_*`` variables given."""
    for name in list(os.environ):
        if name.startswith("SHOP_"):
            monkeypatch.delenv(name)

    def load(**environ: str) -> ModuleType:
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def test_gunicorn_defaults(gunicorn_conf):
    conf = gunicorn_conf()
    assert conf.bind == ["0.0.0.0:8000"]
    assert conf.workers == 1  # no SHOP_REDIS_URL: sessions live in the one process
    assert (conf.threads, conf.worker_class) == (4, "gthread")
    assert (conf.timeout, conf.graceful_timeout, conf.keepalive) == (30, 20, 5)
    assert (conf.max_requests, conf.max_requests_jitter) == (0, 0)
    assert (conf.accesslog, conf.errorlog) == ("-", "-")
    assert "%({x-request-id}o)s" in conf.access_log_format
    assert "%(M)s" in conf.access_log_format


def test_gunicorn_opens_no_control_socket_and_states_its_request_limits(gunicorn_conf):
    conf = gunicorn_conf(SHOP_REDIS_URL="redis://redis:6379/0", SHOP_WORKERS="3")
    assert conf.control_socket_disable is True
    # 0 would mean unlimited; the values must be stated, not left to gunicorn's defaults.
    assert (conf.limit_request_line, conf.limit_request_fields) == (4094, 100)
    assert conf.limit_request_field_size == 8190


def test_gunicorn_knows_every_setting_the_config_file_gives():
    """gunicorn silently ignores a name it does not know (a typo, or a setting from a newer
    release): every lower-case name in gunicorn.conf.py must be one of the installed
    gunicorn's settings, and the installed gunicorn must be in the range pyproject pins."""
    from gunicorn import __version__
    from gunicorn.config import KNOWN_SETTINGS

    known = {setting.name for setting in KNOWN_SETTINGS}
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "gunicorn.conf.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    given = {
        name
        for name, value in vars(module).items()
        if name.islower()
        and not name.startswith("_")
        and name != "annotations"  # from __future__
        and not callable(value)
        and not isinstance(value, ModuleType)
    }
    major, minor = (int(part) for part in __version__.split(".")[:2])
    # Before 25.1 there is no control socket, so nothing to turn off: the name is ignored.
    older = {"control_socket_disable"} if (major, minor) < (25, 1) else set()
    assert given - known <= older
    pinned = next(
        line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"gunicorn' in line
    )
    assert pinned.strip() == '"gunicorn>=23,<28",'
    assert 23 <= major < 28, __version__


def test_gunicorn_default_workers_follow_the_cpus_when_redis_is_shared(gunicorn_conf, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert gunicorn_conf(SHOP_REDIS_URL="redis://redis:6379/0").workers == 5
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert gunicorn_conf(SHOP_REDIS_URL="redis://redis:6379/0").workers == 8


def test_gunicorn_settings_come_from_the_environment(gunicorn_conf):
    conf = gunicorn_conf(
        SHOP_BIND="127.0.0.1:9000, unix:/run/shop.sock",
        SHOP_REDIS_URL="redis://redis:6379/0",
        SHOP_WORKERS="3",
        SHOP_THREADS="8",
        SHOP_TIMEOUT="60",
        SHOP_GRACEFUL_TIMEOUT="25",
        SHOP_KEEPALIVE="75",
        SHOP_MAX_REQUESTS="1000",
    )
    assert conf.bind == ["127.0.0.1:9000", "unix:/run/shop.sock"]
    assert (conf.workers, conf.threads, conf.worker_class) == (3, 8, "gthread")
    assert (conf.timeout, conf.graceful_timeout, conf.keepalive) == (60, 25, 75)
    assert (conf.max_requests, conf.max_requests_jitter) == (1000, 100)


def test_one_thread_uses_the_sync_worker(gunicorn_conf):
    conf = gunicorn_conf(SHOP_THREADS="1")
    assert (conf.threads, conf.worker_class) == (1, "sync")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SHOP_WORKERS", "two", "SHOP_WORKERS must be a whole number"),
        ("SHOP_WORKERS", "0", "SHOP_WORKERS must be at least 1"),
        ("SHOP_THREADS", "-1", "SHOP_THREADS must be at least 1"),
        ("SHOP_TIMEOUT", "30s", "SHOP_TIMEOUT must be a whole number"),
        ("SHOP_GRACEFUL_TIMEOUT", "", "SHOP_GRACEFUL_TIMEOUT must be a whole number"),
        ("SHOP_KEEPALIVE", "0", "SHOP_KEEPALIVE must be at least 1"),
        ("SHOP_MAX_REQUESTS", "-5", "SHOP_MAX_REQUESTS must be at least 0"),
        ("SHOP_MAX_REQUESTS_JITTER", "1.5", "SHOP_MAX_REQUESTS_JITTER must be a whole number"),
        ("SHOP_BIND", "", "SHOP_BIND must be host:port"),
    ],
)
def test_gunicorn_refuses_invalid_values_naming_the_variable(gunicorn_conf, name, value, message):
    with pytest.raises(ValueError, match=message):
        gunicorn_conf(**{name: value})


def test_gunicorn_refuses_several_workers_without_shared_redis(gunicorn_conf):
    with pytest.raises(ValueError, match="SHOP_WORKERS=3 needs SHOP_REDIS_URL"):
        gunicorn_conf(SHOP_WORKERS="3")


def test_gunicorn_itself_stops_on_an_invalid_value(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--check-config", "wsgi:app", "-c", "gunicorn.conf.py"],
        cwd=ROOT,
        env=clean_env(tmp_path, SHOP_WORKERS="many"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SHOP_WORKERS must be a whole number, got 'many'" in result.stderr


# -- wsgi.py and a real gunicorn ------------------------------------------------------------


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a container gives the process: no developer variables, a database outside the repo.

    HOME is the test's own directory, so a gunicorn control socket (~/.gunicorn) would show
    there (gunicorn.conf.py turns it off).
    """
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PYTHONDONTWRITEBYTECODE": "1",
        "SHOP_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
        **extra,
    }


def import_wsgi(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import flask, wsgi; print(isinstance(wsgi.app, flask.Flask))"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wsgi_needs_a_secret_key_once_a_database_is_configured(tmp_path):
    result = import_wsgi(clean_env(tmp_path))
    assert result.returncode != 0
    assert "SHOP_SECRET_KEY" in result.stderr


def test_wsgi_exposes_the_app_built_by_create_app(tmp_path):
    result = import_wsgi(clean_env(tmp_path, SHOP_SECRET_KEY=SECRET))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_healthz(url: str, deadline: float, server: subprocess.Popen) -> tuple[dict, dict]:
    """Poll until gunicorn answers 200; fail early if it exits."""
    while True:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.returncode} before answering")
        request = urllib.request.Request(url, headers={"X-Request-ID": "packaging-probe-1"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return json.load(response), dict(response.headers)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no 200 from {url} within the deadline")
        time.sleep(0.2)


def test_gunicorn_serves_healthz_with_the_config_file(tmp_path):
    port = free_port()
    env = clean_env(
        tmp_path,
        SHOP_BIND=f"127.0.0.1:{port}",
        SHOP_WORKERS="1",
        SHOP_THREADS="2",
        SHOP_GRACEFUL_TIMEOUT="5",
        SHOP_SEED_DEMO="1",
        SHOP_SECRET_KEY=SECRET,
        SHOP_INSTANCE_NAME="packaging-test",
    )
    stdout, stderr = tmp_path / "access.log", tmp_path / "error.log"
    with gunicorn_running(env, stdout, stderr) as server:
        body, headers = get_healthz(
            f"http://127.0.0.1:{port}/healthz", time.monotonic() + 20, server
        )
    assert body == {"status": "ok", "instance": "packaging-test"}
    assert headers.get("X-Served-By") == "packaging-test"
    assert headers.get("X-Request-ID") == "packaging-probe-1"
    # The access log on stdout carries the request id, to find the shop's own log lines.
    assert "rid=packaging-probe-1" in stdout.read_text()
    assert "Using worker: gthread" in stderr.read_text()
    # No control socket: nothing under HOME (~/.gunicorn/gunicorn.ctl by default).
    assert not (tmp_path / ".gunicorn").exists()
    assert "control socket" not in stderr.read_text().lower()
