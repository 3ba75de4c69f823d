"""What HAProxy does before an instance sees a request, in both balancers, checked by parsing.

Both balancers' configs are renders of one template, ``deploy/haproxy/haproxy.cfg.j2``: the
stack's (``make stack`` and the stack tests render it at every start) and
``deploy/compose/haproxy.cfg`` (docker-compose.yml; test_compose.py proves the committed
file is the render). They must apply the same edge rules: rate limits per client address (a
general one and a much tighter one on credential POSTs) answered with 429 and Retry-After, whole
bodies buffered and oversized ones answered with 413, and HSTS on every answer over TLS, and
differ only where the topologies do. The stack tests show the rules working through a running
HAProxy (``tests/stack/test_edge.py``); these checks keep both renders honest, and the same,
without one.

Each ``check_*`` returns the problems it finds; the tests at the end break a copy of a config on
purpose and expect a complaint, so every check is shown to bite.
"""

from __future__ import annotations

import difflib
import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.haproxy import COMPOSE, TEMPLATE, Edge, render
from deploy.stack.haproxy import _tls_certificate, stack_edge
from deploy.stack.topology import APP_NAMES, Ports, _build_topology
from shop.config import Settings
from tests.deploy.test_compose import HAPROXY_CFG, haproxy_sections
from tests.support import ROOT


def stack_edge_in(work: Path) -> Edge:
    """The stack's Edge as ``make stack`` builds it, for the default ports and ``work``."""
    return stack_edge(_build_topology(work, Ports.from_env({})))


@functools.cache
def stack_config() -> str:
    """The config ``make stack`` renders (for the default ports, in a throwaway work folder)."""
    with tempfile.TemporaryDirectory() as work:
        return render(stack_edge_in(Path(work)))


# Each balancer's config text, by label.
CONFIGS: dict[str, Callable[[], str]] = {"stack": stack_config, "compose": HAPROXY_CFG.read_text}

# The app's body limit (SHOP_MAX_BODY_BYTES); neither topology overrides it.
BODY_LIMIT = Settings.__dataclass_fields__["max_body_bytes"].default
# A back-office image upload's (SHOP_IMAGE_MAX_BYTES plus an ordinary form), for a POST under
# /admin/ only; shop/web/admin/images.py allows the same.
UPLOAD_LIMIT = Settings.__dataclass_fields__["image_max_bytes"].default + BODY_LIMIT
# What a buffer needs besides the body: room for ordinary headers (cookies, a user agent) and
# HAProxy's rewrite reserve (tune.maxrewrite, 1 KiB by default).
HEADER_ROOM = 8 * 1024 + 1024
# The credential endpoints (a POST to them): exact paths, and prefixes.
CREDENTIAL_PATHS = {"/login", "/register", "/api/v1/session/login", "/api/v1/users"}
CREDENTIAL_PREFIXES = {"/password/", "/api/v1/password/"}
# Each counter's table and the rule that tracks a request in it.
GENERAL, CREDENTIAL = "per_src_requests", "per_src_credential_posts"
TRACKING = {
    GENERAL: ["http-request", "track-sc0", "src", "table", GENERAL, "unless", "rate_exempt"],
    CREDENTIAL: [
        "http-request", "track-sc1", "src", "table", CREDENTIAL,
        "if", "credential_post", "credential_path", "!rate_exempt",
    ],
}  # fmt: skip
COUNTER = {GENERAL: "0", CREDENTIAL: "1"}
HSTS = [
    "http-after-response", "set-header", "Strict-Transport-Security",
    "max-age=63072000; includeSubDomains", "if", "{", "ssl_fc", "}",
]  # fmt: skip

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


def acl(text: str, name: str) -> list[list[str]]:
    """The criteria of an ACL (one word list per ``acl name ...`` line)."""
    return [w[2:] for w in section(text, "frontend") if w[0] == "acl" and w[1:2] == [name]]


def tables(text: str) -> dict[str, list[str]]:
    """Backends that hold only a stick table: {name: the stick-table words}."""
    found = {}
    for header, body in haproxy_sections(text):
        if header[0] == "backend" and [w[0] for w in body] == ["stick-table"]:
            found[header[1]] = body[0]
    return found


def period_seconds(table: list[str]) -> float | None:
    """The period of ``store http_req_rate(<period>)`` in seconds (None if not stored)."""
    stored = table[table.index("store") + 1].split(",") if "store" in table[:-1] else []
    for item in stored:
        if item.startswith("http_req_rate(") and item.endswith(")"):
            value = item[len("http_req_rate(") : -1]
            units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
            for unit in sorted(units, key=len, reverse=True):
                if value.endswith(unit) and value[: -len(unit)].isdigit():
                    return int(value[: -len(unit)]) * units[unit]
            return int(value) / 1000 if value.isdigit() else None
    return None


def limit_of(text: str, name: str) -> tuple[list[list[str]], int | None]:
    """The 429 rules on one counter, and the request count above which they answer."""
    rules, limits = [], set()
    for words in returns(text, "429"):
        cond = condition(words)
        if cond[:3] == ["if", "{", f"sc_http_req_rate({COUNTER[name]})"] and cond[3:4] == ["gt"]:
            rules.append(words)
            limits.add(int(cond[4]) if cond[4:5] and cond[4].isdigit() else None)
    return rules, (limits.pop() if len(limits) == 1 else None)


def check_rate_rules(text: str, label: str) -> list[str]:
    """Per client address: every request counted in one table, a POST to a credential
    endpoint also in a second, each answered 429 with Retry-After in the shop's error shape
    over its limit, the credential limit much tighter; nobody exempt but the stack's tools."""
    problems = []
    found = tables(text)
    per_second = {}
    for name, tracking in TRACKING.items():
        table = found.get(name)
        if table is None:
            problems.append(f"{label}: no table-only `backend {name}`")
            continue
        if table[1:3] not in (["type", "ip"], ["type", "ipv6"]):
            problems.append(f"{label}: table {name} must be keyed by address (type ip/ipv6)")
        period = period_seconds(table)
        if period is None:
            problems.append(f"{label}: table {name} must `store http_req_rate(<period>)`")
        if tracking not in section(text, "frontend"):
            problems.append(f"{label}: missing `{' '.join(tracking)}`")
        rules, limit = limit_of(text, name)
        if len(rules) != 1 or limit is None:
            problems.append(
                f"{label}: one `http-request return status 429 ... "
                f"if {{ sc_http_req_rate({COUNTER[name]}) gt <n> }}` for {name}"
            )
            continue
        for words in rules:
            problems += error_body(words, "rate_limited", label)
            retry = returned(words).get("hdr retry-after", "")
            if not retry.isdigit() or int(retry) < 1:
                problems.append(f"{label}: the 429 for {name} needs a `hdr Retry-After <seconds>`")
        if period:
            per_second[name] = limit / period
    if len(per_second) == 2 and per_second[CREDENTIAL] * 100 > per_second[GENERAL]:
        problems.append(
            f"{label}: the credential limit ({per_second[CREDENTIAL]:.2f}/s) must be far tighter "
            f"than the general one ({per_second[GENERAL]:.2f}/s)"
        )
    if acl(text, "credential_post") != [["method", "POST"]]:
        problems.append(f"{label}: `acl credential_post method POST` is missing or changed")
    paths = {"exact": set(), "prefix": set()}
    for words in acl(text, "credential_path"):
        # Decoded, as the app routes it: /%6Cogin must count as /login.
        if words[0] != "path,url_dec":
            problems.append(f"{label}: credential_path must match `path,url_dec`, not {words[0]}")
        kind = "prefix" if words[1:3] == ["-m", "beg"] else "exact"
        paths[kind] |= set(words[3:] if kind == "prefix" else words[1:])
    if paths != {"exact": CREDENTIAL_PATHS, "prefix": CREDENTIAL_PREFIXES}:
        problems.append(
            f"{label}: credential_path must be exactly {sorted(CREDENTIAL_PATHS)} and the "
            f"prefixes {sorted(CREDENTIAL_PREFIXES)}, is {paths}"
        )
    allowed = [["src", "127.0.0.1"]] if label == "stack" else [["always_false"]]
    if acl(text, "rate_exempt") != allowed:
        problems.append(f"{label}: rate_exempt must be `{' '.join(allowed[0])}`")
    return problems


def check_hsts(text: str, label: str) -> list[str]:
    """HSTS (two years, subdomains) on every answer that went out over TLS, HAProxy's own
    included (http-after-response, not http-response), and never over plain HTTP."""
    frontend = section(text, "frontend")
    hsts = [w for w in frontend if "Strict-Transport-Security" in w]
    if hsts != [HSTS]:
        return [f"{label}: HSTS must be exactly `{' '.join(HSTS)}`, found {hsts}"]
    return []


def edge_rules(text: str) -> list[str]:
    """The edge rules of a config, one line each, in order: what must be the same in both
    (the frontend's only difference is who ``rate_exempt`` names)."""
    rules = [" ".join(w) for w in section(text, "global") if w[0].startswith("tune.")]
    for words in section(text, "frontend"):
        if (
            words == ["option", "http-buffer-request"]
            # (rate_exempt names each topology's own tools; cacheable_method routes to the
            # stack's edge cache, after the rules)
            or (words[0] == "acl" and words[1] not in ("rate_exempt", "cacheable_method"))
            or words[:2] == ["http-request", "return"]
            or words[1].startswith("track-sc")
            or words[0] == "http-after-response"
        ):
            rules.append(" ".join(words))
    rules += [f"backend {name}: {' '.join(words)}" for name, words in tables(text).items()]
    return rules


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
    over = ["{", "req.body_size", "gt", str(BODY_LIMIT), "}"]
    # Over the limit, unless it is a POST under /admin/ (an image upload).
    general = ["if", *over, "!METH_POST", "or", *over, "!back_office_path"]
    upload = ["if", "METH_POST", "back_office_path"]
    upload += ["{", "req.hdr_val(content-length)", "gt", str(UPLOAD_LIMIT), "}"]
    for expected in (general, upload):
        rules = [w for w in returns(text, "413") if condition(w) == expected]
        if len(rules) != 1:
            problems.append(
                f"{label}: one `http-request return status 413 ... {' '.join(expected)}`"
            )
        for words in rules:
            problems += error_body(words, "request_entity_too_large", label)
    if len(returns(text, "413")) != 2:
        problems.append(f"{label}: exactly two 413 rules (the general and the upload one)")
    if acl(text, "back_office_path") != [["path,url_dec", "-m", "beg", "/admin/"]]:
        problems.append(
            f"{label}: uploads are allowed only under `acl back_office_path path,url_dec -m beg "
            "/admin/`"
        )
    return problems


# -- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def config(request) -> tuple[str, str]:
    return request.param, CONFIGS[request.param]()


def test_bodies_are_buffered_and_oversized_ones_answered_413_at_the_edge(config):
    label, text = config
    assert not (problems := check_body_limit(text, label)), problems


def test_rate_rules_per_client_address_answer_429_with_retry_after(config):
    label, text = config
    assert not (problems := check_rate_rules(text, label)), problems


def test_hsts_goes_on_every_answer_over_tls(config):
    label, text = config
    assert not (problems := check_hsts(text, label)), problems


def test_both_balancers_apply_the_same_edge_rules():
    stack, compose = (edge_rules(CONFIGS[name]()) for name in ("stack", "compose"))
    assert any("track-sc0" in rule for rule in stack), "edge_rules() found no rate rules"
    assert stack == compose


def test_the_readme_states_the_figures_the_configs_apply():
    """The README's description of the edge is read against the stack's config."""
    text = stack_config()
    found = tables(text)
    general, credential = (limit_of(text, name)[1] for name in (GENERAL, CREDENTIAL))
    seconds = {name: period_seconds(found[name]) for name in (GENERAL, CREDENTIAL)}
    retry = {
        name: returned(limit_of(text, name)[0][0])["hdr retry-after"]
        for name in (GENERAL, CREDENTIAL)
    }
    bufsize = next(int(w[1]) for w in section(text, "global") if w[0] == "tune.bufsize")
    timeout = next(w[2] for w in section(text, "defaults") if w[:2] == ["timeout", "http-request"])
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert seconds[CREDENTIAL] == 60, "the README says 'a minute'"
    for phrase in (
        f"{general:,} requests per {seconds[GENERAL]:g} s",
        f"and {credential} a minute for a `POST`",
        f"`Retry-After` ({retry[GENERAL]} or {retry[CREDENTIAL]} s)",
        f"{bufsize // 1024} KiB buffers",
        f"`timeout http-request` ({timeout.removesuffix('s')} s)",
        f"`SHOP_MAX_BODY_BYTES` ({BODY_LIMIT // 1024} KiB)",
        f"HSTS** (`{HSTS[3]}`)",
    ):
        assert phrase in readme, phrase


def test_compose_config_is_valid_for_haproxy():
    """The stack's config is checked by ``haproxy -c`` at every start; compose's only here."""
    if shutil.which("haproxy") is None:
        pytest.skip("needs haproxy")
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_stack_config_is_valid_for_haproxy(tmp_path):
    """``make stack`` runs ``haproxy -c`` at every start; this catches a broken render sooner."""
    if shutil.which("haproxy") is None or shutil.which("openssl") is None:
        pytest.skip("needs haproxy and openssl")
    edge = stack_edge_in(tmp_path)
    assert edge.tls is not None
    _tls_certificate(Path(edge.tls.pem))
    config = tmp_path / "haproxy.cfg"
    config.write_text(render(edge))
    done = subprocess.run(
        ["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr


def directives(text: str) -> list[str]:
    """Each section header and directive in file order, comments dropped; a directive is
    prefixed with its section (``backend shop: server app1 app1:8000 check``)."""
    lines = []
    for header, body in haproxy_sections(text):
        name = " ".join(header)
        lines += [name, *(f"{name}: {' '.join(words)}" for words in body)]
    return lines


def differences(a: list[str], b: list[str]) -> tuple[list[str], list[str]]:
    """The lines only ``a`` has and the lines only ``b`` has, each in file order."""
    only_a: list[str] = []
    only_b: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            only_a += a[i1:i2]
            only_b += b[j1:j2]
    return only_a, only_b


def test_the_configs_differ_only_where_the_topologies_do(tmp_path):
    """One template, two renders: every directive that differs is one of the topologies' own
    differences. The stack listens on loopback with an HTTPS port, has fixed instance ports, a
    stats socket for its tools, 127.0.0.1 exempt from the rate rules and a share of a
    developer's machine; compose listens on every address of its container over plain HTTP
    and finds the instances through Docker's DNS. Anything else is the same in both, so a
    rule, timeout or check changed in the template changes both, and only there."""
    stack = stack_edge_in(tmp_path)
    assert stack.tls is not None and stack.stats_socket is not None
    cache_ports = Ports.from_env({})
    ports = zip(APP_NAMES, cache_ports.apps, strict=True)
    stack_only, compose_only = differences(directives(render(stack)), directives(render(COMPOSE)))

    def backends(default_server: str, servers: dict[str, str]) -> list[str]:
        return [
            f"backend {backend}: {line}"
            for backend in ("shop", "shop_alive")
            for line in [
                f"default-server {default_server}",
                *(f"server {name} {address} check" for name, address in servers.items()),
            ]
        ]

    assert stack_only == [
        f"global: stats socket {stack.stats_socket} mode 600 level admin",
        "global: stats timeout 10s",
        "global: maxconn 2000",
        "global: nbthread 2",
        f"frontend edge: bind 127.0.0.1:{stack.port}",
        f"frontend edge: bind 127.0.0.1:{stack.tls.port} ssl crt {stack.tls.pem}",
        "frontend edge: acl rate_exempt src 127.0.0.1",
        # The stack's edge cache (Varnish): GET and HEAD through it, after the rules, and the
        # frontend it fetches from, which adds nothing to what the edge said.
        "frontend edge: acl cacheable_method method GET HEAD",
        "frontend edge: use_backend edge_cache if cacheable_method { nbsrv(edge_cache) gt 0 }",
        "frontend from_cache",
        f"frontend from_cache: bind 127.0.0.1:{cache_ports.from_cache}",
        "frontend from_cache: use_backend shop_alive if { nbsrv(shop) eq 0 }",
        "frontend from_cache: default_backend shop",
        "backend edge_cache",
        "backend edge_cache: default-server inter 1s fall 2 rise 2",
        f"backend edge_cache: server varnish 127.0.0.1:{cache_ports.cache} check",
        *backends("inter 1s fall 2 rise 2", {name: f"127.0.0.1:{port}" for name, port in ports}),
    ]
    assert compose_only == [
        "global: maxconn 4096",
        "resolvers docker",
        "resolvers docker: nameserver dns 127.0.0.11:53",
        "resolvers docker: resolve_retries 3",
        "resolvers docker: timeout resolve 1s",
        "resolvers docker: timeout retry 1s",
        "resolvers docker: hold valid 10s",
        "resolvers docker: hold nx 5s",
        "frontend edge: bind :8000",
        "frontend edge: acl rate_exempt always_false",
        *backends(
            "inter 1s fall 2 rise 2 resolvers docker init-addr last,libc,none",
            {f"app{n}": f"app{n}:8000" for n in (1, 2, 3)},
        ),
    ]


def test_the_template_is_the_only_haproxy_config_written_by_hand():
    """deploy/ holds the template and compose's render of it, and no other HAProxy config
    (tests/deploy/test_compose.py proves the committed render is the template's)."""
    configs = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "deploy").rglob("*")
        if path.is_file()
        and path.suffix not in {".py", ".pyc"}
        and any(line.startswith("frontend ") for line in path.read_text().splitlines())
    }
    assert configs == {"deploy/compose/haproxy.cfg", TEMPLATE.relative_to(ROOT).as_posix()}


RULE_413 = f"if {{ req.body_size gt {BODY_LIMIT} }} !METH_POST"
MUTATIONS = [
    # (id, text to replace, replacement, what the complaint must mention)
    ("no-table", "backend per_src_requests\n", "backend unused\n", GENERAL),
    ("no-rate", "store http_req_rate(1m)", "store conn_cnt", CREDENTIAL),
    ("untracked", "track-sc1 src", "track-sc2 src", "track-sc1"),
    ("no-429", "if { sc_http_req_rate(0) gt 1000 }", "if FALSE", GENERAL),
    ("no-retry-after", "hdr Retry-After 60 ", "", "Retry-After"),
    ("other-code-429", '"code":"rate_limited"', '"code":"slow_down"', "rate_limited"),
    (
        "loose-credential-limit",
        "sc_http_req_rate(1) gt 20 ",
        "sc_http_req_rate(1) gt 2000 ",
        "tighter",
    ),
    ("any-method", "acl credential_post method POST", "acl credential_post always_true", "POST"),
    ("path-missing", " /api/v1/users\n", "\n", "credential_path"),
    ("raw-path", "credential_path path,url_dec -m beg", "credential_path path -m beg", "url_dec"),
    ("hsts-always", 'includeSubDomains" if { ssl_fc }', 'includeSubDomains"', "HSTS"),
    (
        "hsts-by-header",
        'includeSubDomains" if { ssl_fc }',
        'includeSubDomains" if { req.hdr(x-forwarded-proto) -m str https }',
        "HSTS",
    ),
    (
        "hsts-not-on-edge-answers",
        "http-after-response set-header Strict-Transport-Security",
        "http-response set-header Strict-Transport-Security",
        "HSTS",
    ),
    ("hsts-short", "max-age=63072000", "max-age=300", "HSTS"),
    ("no-buffering", "    option http-buffer-request\n", "", "http-buffer-request"),
    ("no-request-timeout", "    timeout http-request 10s\n", "", "timeout http-request"),
    ("small-buffers", "tune.bufsize 81920", "tune.bufsize 65536", "tune.bufsize"),
    ("default-buffers", "    tune.bufsize 81920\n", "", "tune.bufsize"),
    ("other-limit", RULE_413, "if { req.body_size gt 1048576 } !METH_POST", "413"),
    ("uploads-anywhere", "!METH_POST or { req.body_size gt 65536 } !back_office_path", "", "413"),
    ("upload-limit", f"gt {UPLOAD_LIMIT}", "gt 104857600", "413"),
    (
        "any-path",
        "back_office_path path,url_dec -m beg /admin/",
        "back_office_path always_true",
        "/admin/",
    ),
    ("raw-upload-path", "back_office_path path,url_dec", "back_office_path path", "/admin/"),
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

    def check(text: str) -> list[str]:
        return (
            check_rate_rules(text, label) + check_body_limit(text, label) + check_hsts(text, label)
        )

    assert check(text) == [], "the check fails on the real file already"
    assert before in text, f"the mutation no longer applies to {label}: {before!r} is gone"
    problems = check(text.replace(before, after, 1))
    assert any(culprit in problem for problem in problems), (after, problems)


EXEMPTIONS = [
    ("stack", "acl rate_exempt src 127.0.0.1", "acl rate_exempt src 127.0.0.0/8"),
    ("compose", "acl rate_exempt always_false", "acl rate_exempt src 10.0.0.0/8"),
]


@pytest.mark.parametrize(("label", "before", "after"), EXEMPTIONS, ids=[e[0] for e in EXEMPTIONS])
def test_rate_check_flags_a_wider_exemption(label: str, before: str, after: str):
    text = CONFIGS[label]()
    assert before in text
    problems = check_rate_rules(text.replace(before, after, 1), label)
    assert any("rate_exempt" in problem for problem in problems), problems


def test_same_rules_check_flags_a_difference():
    compose = edge_rules(HAPROXY_CFG.read_text())
    changed = stack_config().replace("gt 1000 }", "gt 5000 }", 1)
    assert edge_rules(changed) != compose
