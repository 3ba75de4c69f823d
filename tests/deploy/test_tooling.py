"""Habits the tools enforce: ``mypy`` finds nothing in shop/, is strict enough to find real
errors, and ``make test``, ``make lint`` and the git hooks run the same checks."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CHECKS = ["ruff check", "ruff format --check", "mypy"]


def make_target(name: str) -> list[str]:
    """The commands of a Makefile target, with ``$(BIN)/`` dropped."""
    body = re.search(rf"^{name}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert body, name
    return [line.strip().removeprefix("$(BIN)/") for line in body.group(1).splitlines()]


def test_mypy_finds_nothing_in_the_shop():
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found" in result.stdout


def test_mypy_is_strict_enough_to_catch_real_errors():
    config = PYPROJECT["tool"]["mypy"]
    assert "shop" in config["files"]
    for flag in ("check_untyped_defs", "warn_unused_ignores", "no_implicit_optional"):
        assert config[flag] is True, flag
    assert "ignore_missing_imports" not in config  # only per module, in an override
    for override in PYPROJECT["tool"]["mypy"].get("overrides", []):
        assert override["module"], override
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(requirement.startswith("mypy") for requirement in dev)


def test_make_test_and_make_lint_run_ruff_then_mypy():
    for target in ("test", "lint"):
        commands = make_target(target)
        assert [c.removesuffix(" .") for c in commands[:3]] == CHECKS, commands
    assert make_target("test")[3].startswith("python -m pytest")


def test_the_git_hooks_run_the_same_checks_from_the_venv():
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # nothing to download
    entries = [hook["entry"] for hook in repo["hooks"]]
    assert all(entry.startswith(".venv/bin/") for entry in entries), entries
    ran = [entry.removeprefix(".venv/bin/").replace(" --force-exclude", "") for entry in entries]
    assert ran == CHECKS
    (mypy,) = [hook for hook in repo["hooks"] if hook["id"] == "mypy"]
    assert mypy["pass_filenames"] is False  # the whole package, as configured, not one file
