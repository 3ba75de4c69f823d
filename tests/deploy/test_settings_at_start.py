"""Settings that refuse mistakes, as the programs that start the shop show them: the
``flask`` command and gunicorn's master print every problem in one message and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT

BAD = {"SHOP_DATABSE_URL": "postgresql://shop@db/shop", "SHOP_MAX_LINE_QUANTITY": "0"}


def run_with_bad_settings(*command: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHOP_")}
    return subprocess.run(
        command,
        cwd=ROOT,
        env={**environ, **BAD},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_readable_message(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "Error: 2 problems with the shop's settings:" in result.stderr
    assert "did you mean SHOP_DATABASE_URL?" in result.stderr
    assert "SHOP_MAX_LINE_QUANTITY must be at least 1, not 0" in result.stderr


def test_the_flask_command_prints_the_problems_without_a_traceback():
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    assert_one_readable_message(run_with_bad_settings(flask, "--app", "shop", "routes"))


def test_gunicorn_stops_in_its_master_with_the_problems_and_no_traceback():
    result = run_with_bad_settings(
        sys.executable,
        *("-m", "gunicorn", "wsgi:app", "-c", "gunicorn.conf.py", "--bind", "127.0.0.1:0"),
    )
    assert_one_readable_message(result)
    assert "Booting worker" not in result.stdout + result.stderr
