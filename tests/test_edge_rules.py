"""What HAProxy does before an instance sees a request, in both balancers, checked by parsing.

``deploy/stack/haproxy.cfg.tmpl`` (``make stack`` and the stack tests) and
``deploy/compose/haproxy.cfg`` (docker-compose.yml) must apply the same edge rules: whole bodies
buffered and oversized ones answered with 413. The stack tests show them working through a
running HAProxy (``tests/stack/test_edge.py``); these checks keep both files honest without one.

Each ``check_*`` returns the problems it finds; the tests at the end break a copy of a file on
purpose and expect a complaint, so every check is shown to bite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from shop.config import Settings
from tests.test_compose import HAPROXY_CFG, haproxy_sections

ROOT = Path(__file__).resolve().parent.parent
STACK_TEMPLATE = ROOT / "deploy" / "stack" / "haproxy.cfg.tmpl"
CONFIGS = {"stack": STACK_TEMPLATE, "compose": HAPROXY_CFG}

# The app's body limit (SHOP_MAX_BODY_BYTES); neither topology overrides it.
BODY_LIMIT = Settings.__dataclass_fields__["max_body_bytes"].default
# What a buffer needs besides the body: room for ordinary headers (cookies, a user agent) and
# HAProxy's rewrite reserve (tune.maxrewrite, 1 KiB by default).
HEADER_ROOM = 8 * 1024 + 1024

Directives = list[list[str]]


def section(text: str, kind: str) -> Directives:
    """Every directive of the sections of one kind (``global``, ``defaults``, ``frontend``)."""
    return [words for header, body in haproxy_sections(text) if header[0] == kind for words in body]


def condition(words: list[str]) -> list[str]:
    """The words after ``if``/``unless`` (with the keyword), or [] for an unconditional rule."""
    for keyword in ("if", "unless"):
        if keyword in words:
            return words[words.index(keyword) :]
    return []


def returned(words: list[str]) -> dict[str, str]:
    """The parts of an ``http-request return`` rule: status, content-type, string, hdr ..."""
    parts, i = {}, 2
    body = words[: len(words) - len(condition(words))]
    while i < len(body):
        if body[i] == "hdr":
            parts["hdr " + body[i + 1].lower()] = body[i + 2]
            i += 3
        else:
            parts[body[i]] = body[i + 1]
            i += 2
    return parts


def returns(text: str, status: str) -> list[list[str]]:
    return [
        words
        for words in section(text, "frontend")
        if words[:2] == ["http-request", "return"] and returned(words).get("status") == status
    ]


def error_body(words: list[str], code: str, label: str) -> list[str]:
    """A response HAProxy writes itself must be the shop's JSON error shape."""
    parts = returned(words)
    if parts.get("content-type") != "application/json":
        return [f"{label}: the {parts.get('status')} answer must be application/json"]
    try:
        body = json.loads(parts.get("string", ""))
    except ValueError:
        return [f"{label}: the {parts.get('status')} answer's string is not JSON"]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") != code or not error.get("message"):
        return [
            f'{label}: the {parts.get("status")} answer must be {{"error": {{"code": "{code}"'
            ', "message": ...}}'
        ]
    return []


def check_body_limit(text: str, label: str) -> list[str]:
    """Whole bodies buffered (a buffer holds the app's limit plus headers), the request timeout
    covering them, and a body over the app's limit answered here with 413."""
    problems = []
    bufsize = [int(w[1]) for w in section(text, "global") if w[0] == "tune.bufsize"]
    if not bufsize or bufsize[-1] < BODY_LIMIT + HEADER_ROOM:
        problems.append(
            f"{label}: tune.bufsize must hold the app's body limit ({BODY_LIMIT}) plus "
            f"{HEADER_ROOM} bytes of headers, is {bufsize[-1] if bufsize else 'the default'}"
        )
    listening = section(text, "defaults") + section(text, "frontend")
    if ["option", "http-buffer-request"] not in listening:
        problems.append(f"{label}: `option http-buffer-request` is missing")
    if not any(w[:2] == ["timeout", "http-request"] for w in listening):
        problems.append(f"{label}: `timeout http-request` must bound a request and its body")
    over = ["if", "{", "req.body_size", "gt", str(BODY_LIMIT), "}"]
    rules = [w for w in returns(text, "413") if condition(w) == over]
    if len(rules) != 1:
        problems.append(f"{label}: one `http-request return status 413 ... {' '.join(over)}`")
    for words in rules:
        problems += error_body(words, "request_entity_too_large", label)
    return problems


# -- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def config(request) -> tuple[str, str]:
    return request.param, CONFIGS[request.param].read_text()


def test_bodies_are_buffered_and_oversized_ones_answered_413_at_the_edge(config):
    label, text = config
    assert not (problems := check_body_limit(text, label)), problems


def test_compose_config_is_valid_for_haproxy():
    """The stack's config is checked by ``haproxy -c`` at every start; compose's only here."""
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy")
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


RULE_413 = f"if {{ req.body_size gt {BODY_LIMIT} }}"
MUTATIONS = [
    # (id, text to replace, replacement, what the complaint must mention)
    ("no-buffering", "    option http-buffer-request\n", "", "http-buffer-request"),
    ("no-request-timeout", "    timeout http-request 10s\n", "", "timeout http-request"),
    ("small-buffers", "tune.bufsize 81920", "tune.bufsize 65536", "tune.bufsize"),
    ("default-buffers", "    tune.bufsize 81920\n", "", "tune.bufsize"),
    ("other-limit", RULE_413, "if { req.body_size gt 1048576 }", "413"),
    ("plain-413", "content-type application/json", "content-type text/plain", "application/json"),
    ("other-code", '"code":"request_entity_too_large"', '"code":"too_big"', "request_entity"),
]


@pytest.mark.parametrize(
    ("before", "after", "culprit"),
    [mutation[1:] for mutation in MUTATIONS],
    ids=[mutation[0] for mutation in MUTATIONS],
)
def test_edge_checks_flag_a_broken_config(config, before: str, after: str, culprit: str):
    label, text = config
    assert check_body_limit(text, label) == [], "the check fails on the real file already"
    assert before in text, f"the mutation no longer applies to {label}: {before!r} is gone"
    problems = check_body_limit(text.replace(before, after, 1), label)
    assert any(culprit in problem for problem in problems), (after, problems)
