"""docker-compose.yml, the production-like topology, checked without Docker.

Nobody runs `docker compose up` in CI, so what only shows up there is checked here: a database
port published by accident, Redis reachable from the balancer's network, instances configured
differently, a password written into the file, a sticky balancer, a typo compose would reject.

Each ``check_*`` function returns the violations it finds (empty: fine), so the tests at the end
can prove they bite: they break a copy of the file on purpose and expect a complaint.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.haproxy import COMPOSE, render
from tests.support import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
HAPROXY_CFG = ROOT / "deploy" / "compose" / "haproxy.cfg"
REPLICA_ENTRYPOINT = ROOT / "deploy" / "compose" / "replica-entrypoint.sh"

Compose = dict[str, Any]

LB = "lb"
APPS = ("app1", "app2", "app3")
DATA_TIER = ("db-primary", "db-replica", "redis")
LB_PORT = "8000"

TOP_LEVEL_KEYS = {"name", "services", "networks", "volumes", "configs", "secrets"}
# The compose specification's service attributes: a misspelt one is refused by Docker.
SERVICE_KEYS = set(
    """
    annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
    container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime
    cpu_shares cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices
    dns dns_opt dns_search domainname entrypoint env_file environment expose extends
    external_links extra_hosts gpus group_add healthcheck hostname image init ipc isolation
    label_file labels links logging mac_address mem_limit mem_reservation mem_swappiness
    memswap_limit network_mode networks oom_kill_disable oom_score_adj pid pids_limit platform
    ports post_start pre_stop privileged profiles pull_policy read_only restart runtime scale
    secrets security_opt shm_size stdin_open stop_grace_period stop_signal storage_opt sysctls
    tmpfs tty ulimits user userns_mode uts volumes volumes_from working_dir
    """.split()  # noqa: SIM905 - a word list reads better than ninety quoted strings
)

# ${NAME:?message} or ${NAME?message}: compose refuses to start while NAME is unset.
REQUIRED_VALUE = re.compile(r"\$\{[A-Za-z_]\w*:?\?[^}]*\}")
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|(^|_)KEY$", re.IGNORECASE)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:(?P<password>[^@\s/]*)@", re.I)
# "password=...", "--requirepass ...", "secret: ...": a value that is not a $reference.
INLINE_SECRET = re.compile(
    r"(?i)(?:password|passwd|secret|token|requirepass)[\w-]*(?:\s*[=:]\s*|\s+)"
    r"(?P<value>[^\s'\"]+)"
)
INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<bare>\w+))?")
BRACED = re.compile(r"[A-Za-z_]\w*(?::?[-?+].*)?", re.DOTALL)


# -- reading the file -------------------------------------------------------------------------


def load_compose(path: Path = COMPOSE_FILE) -> Compose:
    """The file as compose sees it: anchors and ``<<`` merge keys resolved by the YAML loader."""
    with path.open() as stream:
        document = yaml.safe_load(stream)
    assert isinstance(document, dict), f"{path.name} is not a YAML mapping"
    return document


def services(compose: Compose) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def service(compose: Compose, name: str) -> dict[str, Any]:
    return services(compose).get(name) or {}


def published_ports(svc: dict[str, Any]) -> list[str]:
    """The host side of every ``ports`` entry, "" where Docker picks one: any entry publishes."""
    published: list[str] = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):  # long syntax
            published.append(str(entry.get("published", "")))
            continue
        spec = str(entry).split("/")[0]  # drop /tcp, /udp
        if spec.startswith("["):  # [::1]:8000:8000
            spec = spec.split("]:", 1)[1]
        parts = spec.split(":")
        published.append(parts[-2] if len(parts) > 1 else "")
    return published


def target_ports(svc: dict[str, Any]) -> list[str]:
    """The container side of every ``ports`` entry."""
    targets: list[str] = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            targets.append(str(entry.get("target", "")))
        else:
            targets.append(str(entry).split("/")[0].rsplit(":", 1)[-1])
    return targets


def networks_of(svc: dict[str, Any]) -> set[str]:
    """Compose puts a service without ``networks`` on ``default``, so that counts too."""
    networks = svc.get("networks")
    if networks is None:
        return {"default"}
    return set(networks)


def environment(svc: dict[str, Any]) -> dict[str, str | None]:
    """``environment`` as a mapping, from either the mapping or the ``KEY=VALUE`` list form."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.partition("=") for item in env]
        return {key: (value if sep else None) for key, sep, value in pairs}
    return {key: None if value is None else str(value) for key, value in env.items()}


def depends_on(svc: dict[str, Any]) -> dict[str, str]:
    """Dependency -> condition; the short list form means ``service_started``."""
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def bind_mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of each bind mount (short syntax), relative to the repo."""
    mounts: dict[str, str] = {}
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts[entry["target"]] = entry["source"]
            continue
        source, _, rest = str(entry).partition(":")
        if source.startswith((".", "/")):
            mounts[rest.split(":")[0]] = source
    return mounts


def scalars(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """(path, key, value) of every scalar in the document; key is "" inside lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(value, dict | list):
                yield from scalars(value, child)
            else:
                yield child, str(key), value
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from scalars(value, f"{path}[{index}]")
    else:
        yield path, "", node


def command_text(svc: dict[str, Any], key: str = "command") -> str:
    value = svc.get(key) or ""
    return " ".join(value) if isinstance(value, list) else str(value)


# -- the invariants ---------------------------------------------------------------------------


def check_published_ports(compose: Compose) -> list[str]:
    """Only the balancer is reachable from the host, on 8000; everything else only inside."""
    problems: list[str] = []
    for name, svc in services(compose).items():
        ports = published_ports(svc)
        if name == LB:
            if ports != [LB_PORT]:
                problems.append(f"lb must publish exactly port {LB_PORT}, publishes {ports}")
        elif ports:
            problems.append(f"{name} publishes {ports}: only lb may publish a port")
        if svc.get("network_mode"):
            problems.append(f"{name} sets network_mode {svc['network_mode']!r}: use networks")
    if LB not in services(compose):
        problems.append("there is no lb service")
    return problems


def check_lb_networks(compose: Compose) -> list[str]:
    """public holds the balancer alone; the balancer reaches the apps through frontend."""
    problems: list[str] = []
    lb_networks = networks_of(service(compose, LB))
    if lb_networks != {"public", "frontend"}:
        problems.append(f"lb must be on public and frontend only, is on {sorted(lb_networks)}")
    on_public = sorted(n for n, s in services(compose).items() if "public" in networks_of(s))
    if on_public != [LB]:
        problems.append(f"only lb may be on public, found {on_public}")
    return problems


def check_app_tier(compose: Compose) -> list[str]:
    """The instances: reached by lb on frontend, reach the data tier on data, publish nothing."""
    problems: list[str] = []
    for name in APPS:
        svc = service(compose, name)
        if not svc:
            problems.append(f"{name} is missing")
            continue
        if networks_of(svc) != {"frontend", "data"}:
            problems.append(
                f"{name} must be on frontend and data only, is on {sorted(networks_of(svc))}"
            )
        if published_ports(svc):
            problems.append(f"{name} publishes {published_ports(svc)}: lb is the only way in")
        if "8000" not in [str(port) for port in svc.get("expose") or []]:
            problems.append(f"{name} does not expose 8000, where lb's servers point")
    migrate = service(compose, "migrate")
    if networks_of(migrate) != {"data"} or published_ports(migrate):
        problems.append(f"migrate must be on data only, is on {sorted(networks_of(migrate))}")
    return problems


def check_data_tier(compose: Compose) -> list[str]:
    """Databases and Redis: on the internal data network only, no published port."""
    problems: list[str] = []
    for name in DATA_TIER:
        svc = service(compose, name)
        if not svc:
            problems.append(f"{name} is missing")
            continue
        if networks_of(svc) != {"data"}:
            problems.append(f"{name} must be on data only, is on {sorted(networks_of(svc))}")
        if published_ports(svc):
            problems.append(
                f"{name} publishes {published_ports(svc)}: the data tier publishes none"
            )
    data = (compose.get("networks") or {}).get("data") or {}
    if data.get("internal") is not True:
        problems.append("network data must be `internal: true` (no route to the outside)")
    return problems


def host_of(url: str | None) -> str | None:
    return urlsplit(url).hostname if url else None


def check_app_config(compose: Compose) -> list[str]:
    """Any instance can serve any request only if all of them are configured alike."""
    problems: list[str] = []
    apps = {name: service(compose, name) for name in APPS}
    names = [environment(svc).get("SHOP_INSTANCE_NAME") for svc in apps.values()]
    if not all(names) or len(set(names)) != len(names):
        problems.append(f"SHOP_INSTANCE_NAME must be set and differ per app, got {names}")

    def without_instance_name(svc: dict[str, Any]) -> dict[str, Any]:
        stripped = copy.deepcopy(svc)
        stripped["environment"] = environment(svc)
        stripped["environment"].pop("SHOP_INSTANCE_NAME", None)
        return stripped

    reference = without_instance_name(apps[APPS[0]])
    for name in APPS[1:]:
        other = without_instance_name(apps[name])
        if other != reference:
            keys = sorted(
                k for k in reference.keys() | other.keys() if reference.get(k) != other.get(k)
            )
            env_keys = sorted(
                k
                for k in reference["environment"].keys() | other["environment"].keys()
                if reference["environment"].get(k) != other["environment"].get(k)
            )
            problems.append(f"{name} differs from {APPS[0]} in {keys} (environment: {env_keys})")

    env = environment(apps[APPS[0]])
    database = env.get("SHOP_DATABASE_URL")
    if not (database or "").startswith("postgresql") or host_of(database) != "db-primary":
        problems.append(f"SHOP_DATABASE_URL must point at db-primary, is {database!r}")
    replicas = [url for url in (env.get("SHOP_REPLICA_URLS") or "").split(",") if url.strip()]
    if not replicas or any(host_of(url.strip()) != "db-replica" for url in replicas):
        problems.append(f"SHOP_REPLICA_URLS must point at db-replica, is {replicas}")
    redis_url = env.get("SHOP_REDIS_URL")
    if not (redis_url or "").startswith("redis://") or host_of(redis_url) != "redis":
        problems.append(f"SHOP_REDIS_URL must point at redis, is {redis_url!r}")
    secret = env.get("SHOP_SECRET_KEY") or ""
    if not REQUIRED_VALUE.fullmatch(secret):
        problems.append(
            "SHOP_SECRET_KEY must come from the environment as ${SHOP_SECRET_KEY:?message}, "
            f"is {secret!r}"
        )
    if env.get("SHOP_TRUSTED_PROXIES") != "1":
        problems.append("SHOP_TRUSTED_PROXIES must be 1: lb is the one proxy in front")
    if env.get("SHOP_BIND") != "0.0.0.0:8000":
        problems.append(f"SHOP_BIND must be 0.0.0.0:8000, is {env.get('SHOP_BIND')!r}")
    return problems


def check_no_literal_secrets(compose: Compose) -> list[str]:
    """Every password and key comes from the environment, required: none is in the file."""
    problems: list[str] = []
    for path, key, value in scalars(compose):
        if not isinstance(value, str):
            continue
        # A required reference is the one acceptable form; what remains must hold no secret.
        scrubbed = REQUIRED_VALUE.sub("$REQUIRED", value)
        env_key, sep, env_value = value.partition("=")
        if SECRET_NAME.search(key) and not REQUIRED_VALUE.fullmatch(value):
            problems.append(f"{path} is a literal secret (use ${{{key}:?message}})")
        elif (
            sep
            and re.fullmatch(r"[A-Za-z_]\w*", env_key)
            and SECRET_NAME.search(env_key)
            and not REQUIRED_VALUE.fullmatch(env_value)
        ):
            problems.append(f"{path} sets {env_key} to a literal secret")
        for match in URL_PASSWORD.finditer(scrubbed):
            if match["password"] != "$REQUIRED":
                problems.append(f"{path} has a literal password in a URL")
        for match in INLINE_SECRET.finditer(scrubbed):
            if not match["value"].startswith("$"):
                problems.append(f"{path} looks like it holds a literal secret: {match[0]!r}")
    return problems


def check_dependencies(compose: Compose) -> list[str]:
    """Instances start after the schema is migrated and their primary and Redis are healthy."""
    problems: list[str] = []
    wanted = {
        "db-primary": "service_healthy",
        "redis": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name in APPS:
        deps = depends_on(service(compose, name))
        for dependency, condition in wanted.items():
            if deps.get(dependency) != condition:
                problems.append(
                    f"{name} must depend on {dependency} with {condition}, "
                    f"has {deps.get(dependency)!r}"
                )
    for name, svc in services(compose).items():
        for dependency, condition in depends_on(svc).items():
            check = service(compose, dependency).get("healthcheck") or {}
            if condition == "service_healthy" and (not check or check.get("disable")):
                problems.append(f"{name} waits for {dependency} to be healthy; it has no check")
    migrate = service(compose, "migrate")
    script = command_text(migrate)
    for step in ("flask --app shop db upgrade", "flask --app shop seed"):
        if step not in script:
            problems.append(f"migrate must run `{step}`")
    if migrate.get("restart", "no") not in {"no", "on-failure"}:
        problems.append("migrate is a one-shot job: restart must be `no` (or on-failure)")
    return problems


def logical_lines(script: str) -> Iterator[str]:
    """Shell lines with backslash continuations joined."""
    yield from script.replace("\\\n", " ").splitlines()


POSTGRES_DEFAULTS = {"max_connections": "100", "max_worker_processes": "8", "max_wal_senders": "10"}


def postgres_setting(svc: dict[str, Any], name: str) -> str | None:
    """The value a ``-c name=value`` in the service's command gives (the last one wins)."""
    command = svc.get("command") or []
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    values = [
        word.partition("=")[2]
        for flag, word in zip(words, words[1:], strict=False)
        if flag == "-c" and word.partition("=")[0] == name
    ]
    return values[-1] if values else None


def check_replication(compose: Compose, replica_script: str) -> list[str]:
    """db-replica is cloned from db-primary with pg_basebackup -R, then streams from it."""
    problems: list[str] = []
    replica = service(compose, "db-replica")
    mounts = bind_mounts(replica)
    entrypoint = command_text(replica, "entrypoint")
    script_target = next(
        (target for target, source in mounts.items() if source.endswith("replica-entrypoint.sh")),
        None,
    )
    if script_target is None or script_target not in entrypoint:
        problems.append("db-replica must run deploy/compose/replica-entrypoint.sh as entrypoint")
    if environment(replica).get("PRIMARY_HOST") != "db-primary":
        problems.append("db-replica's PRIMARY_HOST must be db-primary")
    basebackups = []
    for line in logical_lines(replica_script):
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split()
        if "pg_basebackup" in words:
            basebackups.append(words[words.index("pg_basebackup") + 1 :])
    if not basebackups:
        problems.append("replica-entrypoint.sh never runs pg_basebackup")
    for arguments in basebackups:
        if not {"-R", "--write-recovery-conf"} & set(arguments):
            problems.append(f"pg_basebackup must write the standby config (-R): {arguments}")
    if "PG_VERSION" not in replica_script:
        problems.append("replica-entrypoint.sh must clone only into an empty data directory")
    if not re.search(r"^\s*exec postgres\b", replica_script, re.MULTILINE):
        problems.append("replica-entrypoint.sh must end by exec'ing postgres")
    if postgres_setting(replica, "hot_standby") != "on":
        problems.append("db-replica must run with hot_standby=on")

    primary = service(compose, "db-primary")
    if postgres_setting(primary, "wal_level") != "replica":
        problems.append("db-primary must run with wal_level=replica")
    # A standby refuses to start with less of these than its primary has.
    for name in ("max_connections", "max_worker_processes", "max_wal_senders"):
        ours = postgres_setting(replica, name) or POSTGRES_DEFAULTS[name]
        theirs = postgres_setting(primary, name) or POSTGRES_DEFAULTS[name]
        if int(ours) < int(theirs):
            problems.append(f"db-replica's {name} ({ours}) is below db-primary's ({theirs})")
    init_sources = [
        source
        for target, source in bind_mounts(primary).items()
        if target.startswith("/docker-entrypoint-initdb.d/")
    ]
    init_text = "".join(
        (ROOT / source).read_text() for source in init_sources if (ROOT / source).is_file()
    )
    if "REPLICATION LOGIN" not in init_text or "host replication" not in init_text:
        problems.append("db-primary's init script must create a replication role and allow it")
    return problems


def check_replica_setup(compose: Compose) -> list[str]:
    """check_replication with this repository's replica-entrypoint.sh."""
    return check_replication(compose, REPLICA_ENTRYPOINT.read_text())


def check_interpolation(compose: Compose) -> list[str]:
    """Every `$` is compose interpolation or escaped for the shell as `$$`.

    A bare ``$count`` in a command is replaced by compose (with the host's value, usually
    empty) before the shell ever sees it.
    """
    problems: list[str] = []
    for path, _key, value in scalars(compose):
        if not isinstance(value, str):
            continue
        for match in INTERPOLATION.finditer(value):
            if match["escaped"]:
                continue
            if match["braced"] is not None and BRACED.fullmatch(match["braced"]):
                continue
            problems.append(
                f"{path}: {match[0]!r} is not ${{NAME}} for compose nor $${match['bare'] or ''} "
                "for the shell"
            )
    return problems


def check_structure(compose: Compose) -> list[str]:
    """What compose itself would refuse, as far as that shows without Docker."""
    problems: list[str] = []
    for key in compose:
        if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-"):
            problems.append(f"unknown top-level key {key!r}")
    if not services(compose):
        problems.append("no services")
    declared_networks = set(compose.get("networks") or {})
    declared_volumes = set(compose.get("volumes") or {})
    for name, svc in services(compose).items():
        if not isinstance(svc, dict):
            problems.append(f"service {name} is not a mapping")
            continue
        unknown = sorted(k for k in svc if k not in SERVICE_KEYS and not str(k).startswith("x-"))
        if unknown:
            problems.append(f"service {name} has unknown keys {unknown}")
        if "image" not in svc and "build" not in svc:
            problems.append(f"service {name} has neither image nor build")
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            if not (ROOT / context / "Dockerfile").is_file():
                problems.append(f"service {name} builds {context!r}, which has no Dockerfile")
        for network in networks_of(svc) - declared_networks:
            problems.append(f"service {name} uses undeclared network {network!r}")
        for dependency in depends_on(svc):
            if dependency not in services(compose):
                problems.append(f"service {name} depends on unknown service {dependency!r}")
        for target, source in bind_mounts(svc).items():
            if not (ROOT / source).exists():
                problems.append(f"service {name} mounts {source} at {target}: no such file")
        for entry in svc.get("volumes") or []:
            source = entry.get("source", "") if isinstance(entry, dict) else entry.split(":")[0]
            named = source and not source.startswith((".", "/", "~"))
            if named and source not in declared_volumes:
                problems.append(f"service {name} uses undeclared volume {source!r}")
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and (not test or test[0] not in {"CMD", "CMD-SHELL", "NONE"}):
            problems.append(f"service {name}: healthcheck test must start with CMD or CMD-SHELL")
    return problems + check_interpolation(compose)


# -- the HAProxy configuration ----------------------------------------------------------------


SECTION_KEYWORDS = {
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "cache",
    "program",
    "http-errors",
    "ring",
    "mailers",
}
STICKY_DIRECTIVES = {
    "cookie",
    "dynamic-cookie-key",
    "stick",
    "stick-table",
    "hash-type",
    "hash-balance-factor",
    "persist",
}


def is_table_only(directives: list[list[str]]) -> bool:
    """A backend that holds one stick table and nothing else (no server, no ``stick`` rule):
    the frontend's rate rules count requests in it, and it routes nothing."""
    return [words[0] for words in directives] == ["stick-table"]


def haproxy_sections(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(section header words, directive word lists) in file order; comments dropped."""
    sections: list[tuple[list[str], list[list[str]]]] = []
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            words = line.split("#", 1)[0].split()
        if not words:
            continue
        if not line[0].isspace() and words[0] in SECTION_KEYWORDS:
            sections.append((words, []))
        elif sections:
            sections[-1][1].append(words)
    return sections


def option_value(options: list[str], name: str) -> str:
    """The word after ``name`` in a server line ("" if absent): HAProxy reads the first one."""
    return options[options.index(name) + 1] if name in options[:-1] else ""


def _check_backend(
    name: str, backend: list[list[str]], defaults: list[list[str]], check: str, app_port: str
) -> list[str]:
    """Round robin over exactly app1..3, each health-checked on ``check``."""
    problems: list[str] = []
    if ["balance", "roundrobin"] not in backend:
        problems.append(f"backend {name} must say `balance roundrobin`")
    if not any(w[:4] == ["option", "httpchk", "GET", check] for w in backend):
        problems.append(f"backend {name}: the health check must be `option httpchk GET {check}`")
    if ["http-check", "expect", "status", "200"] not in backend + defaults:
        problems.append(f"backend {name}: the health check must expect `status 200`")
    default_server = [w for words in backend if words[0] == "default-server" for w in words[1:]]
    servers = [words[1:] for words in backend if words[0] == "server"]
    names = sorted(words[0] for words in servers if words)
    if names != sorted(APPS):
        problems.append(f"backend {name}: the servers must be exactly {list(APPS)}, are {names}")
    for server, address, *own in (words for words in servers if len(words) >= 2):
        options = own + default_server  # the server's own settings come first and win
        if address != f"{server}:{app_port}":
            problems.append(f"server {server} must point at its service, {server}:{app_port}")
        if "check" not in options:
            problems.append(f"server {server} is not health-checked (`check`)")
        if option_value(options, "resolvers") != "docker":
            problems.append(f"server {server} must resolve through `resolvers docker`")
        if "none" not in option_value(options, "init-addr").split(","):
            problems.append(f"server {server} needs `init-addr ...,none` to start before the apps")
    return problems


def check_haproxy(text: str, compose: Compose) -> list[str]:
    """Round robin over exactly app1..3, health-checked on /readyz with a fallback to the
    instances that are alive, nothing sticky."""
    problems: list[str] = []
    sections = haproxy_sections(text)
    tables = [h[1:2] for h, d in sections if h[0] == "backend" and is_table_only(d)]
    sections = [(h, d) for h, d in sections if not (h[0] == "backend" and h[1:2] in tables)]
    every = [words for _, directives in sections for words in directives]
    for words in every:
        if words[0] in STICKY_DIRECTIVES:
            problems.append(f"stickiness: {' '.join(words)!r}")
        if words[0] == "balance" and words[1:] != ["roundrobin"]:
            problems.append(f"balance must be roundrobin, found {' '.join(words)!r}")
        if words[0] in {"server", "default-server"} and "cookie" in words:
            problems.append(f"stickiness: {' '.join(words)!r}")

    backends = {h[1]: d for h, d in sections if h[0] in {"backend", "listen"} and len(h) > 1}
    if sorted(backends) != ["shop", "shop_alive"]:
        return [*problems, f"expected backends shop and shop_alive, found {sorted(backends)}"]
    defaults = [words for h, d in sections if h[0] == "defaults" for words in d]
    frontends = [words for h, d in sections if h[0] in {"frontend", "listen"} for words in d]
    # Ready instances first; when none is (Redis or the primary down for all of them), every
    # instance that is alive, so the shop can degrade instead of HAProxy refusing everything.
    if ["default_backend", "shop"] not in frontends:
        problems.append("the frontend must send traffic to `default_backend shop`")
    fallback = ["use_backend", "shop_alive", "if", "{", "nbsrv(shop)", "eq", "0", "}"]
    if fallback not in frontends:
        problems.append(f"the frontend must fall back with `{' '.join(fallback)}`")
    if ["option", "forwardfor"] not in defaults + frontends + backends["shop"]:
        problems.append("`option forwardfor` is missing: the shop would not see client addresses")
    app_port = (environment(service(compose, APPS[0])).get("SHOP_BIND") or "").rsplit(":", 1)[-1]
    for name, check in (("shop", "/readyz"), ("shop_alive", "/healthz")):
        problems += _check_backend(name, backends[name], defaults, check, app_port)
    resolvers = [d for h, d in sections if h[:2] == ["resolvers", "docker"]]
    if not resolvers or not any(
        w[0] == "nameserver" and w[2:] == ["127.0.0.11:53"] for w in resolvers[0]
    ):
        problems.append("`resolvers docker` must ask Docker's DNS, nameserver 127.0.0.11:53")

    binds = [words[1].rsplit(":", 1)[-1] for words in frontends if words[0] == "bind"]
    lb_targets = target_ports(service(compose, LB))
    if binds != lb_targets:
        problems.append(f"HAProxy binds {binds} but lb publishes to container ports {lb_targets}")
    return problems


# -- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


@pytest.fixture(scope="module")
def haproxy_text() -> str:
    return HAPROXY_CFG.read_text()


def explain(problems: list[str]) -> str:
    return "docker-compose.yml:\n  " + "\n  ".join(problems)


def test_only_lb_publishes_a_port_and_it_is_8000(compose):
    assert not (problems := check_published_ports(compose)), explain(problems)


def test_public_network_holds_only_lb_and_lb_also_reaches_frontend(compose):
    assert not (problems := check_lb_networks(compose)), explain(problems)


def test_apps_are_on_frontend_and_data_only_and_publish_nothing(compose):
    assert not (problems := check_app_tier(compose)), explain(problems)


def test_databases_and_redis_are_only_on_the_internal_data_network(compose):
    assert not (problems := check_data_tier(compose)), explain(problems)


def test_apps_share_one_configuration_but_their_instance_name(compose):
    assert not (problems := check_app_config(compose)), explain(problems)


def test_no_secret_is_written_in_the_file(compose):
    assert not (problems := check_no_literal_secrets(compose)), explain(problems)


def test_haproxy_balances_round_robin_over_the_three_apps_without_stickiness(compose, haproxy_text):
    assert not (problems := check_haproxy(haproxy_text, compose)), explain(problems)


def test_haproxy_cfg_is_the_render_of_the_one_template(haproxy_text):
    """Compose mounts the committed file, so `docker compose up` needs no step first; it must be
    exactly what deploy/haproxy renders for compose, or it would drift from the stack's."""
    assert haproxy_text == render(COMPOSE), (
        "deploy/compose/haproxy.cfg is not the render of deploy/haproxy/haproxy.cfg.j2: "
        "edit the template (or COMPOSE in deploy/haproxy), run `make haproxy-config`, commit both"
    )


def test_apps_start_after_migrate_and_healthy_primary_and_redis(compose):
    assert not (problems := check_dependencies(compose)), explain(problems)


def test_replica_is_cloned_with_pg_basebackup_r_and_streams_from_the_primary(compose):
    assert not (problems := check_replica_setup(compose)), explain(problems)


def test_file_is_valid_compose_as_far_as_it_shows_without_docker(compose):
    assert not (problems := check_structure(compose)), explain(problems)


# -- the checks bite: break a copy on purpose, expect a complaint naming the culprit ----------


Mutation = Callable[[Compose], None]


def _publish_db_port(c: Compose) -> None:
    c["services"]["db-primary"]["ports"] = ["5432:5432"]


def _redis_on_frontend(c: Compose) -> None:
    c["services"]["redis"]["networks"] = ["data", "frontend"]


def _app_on_public(c: Compose) -> None:
    c["services"]["app2"]["networks"] = ["public", "frontend", "data"]


def _app_publishes(c: Compose) -> None:
    c["services"]["app3"]["ports"] = ["8003:8000"]


def _data_not_internal(c: Compose) -> None:
    c["networks"]["data"] = {}


def _literal_secret_key(c: Compose) -> None:
    for name in APPS:
        c["services"][name]["environment"]["SHOP_SECRET_KEY"] = "hunter2-hunter2-hunter2"


def _literal_db_password(c: Compose) -> None:
    c["services"]["db-primary"]["environment"]["POSTGRES_PASSWORD"] = "postgres"


def _password_in_url(c: Compose) -> None:
    for name in APPS:
        env = c["services"][name]["environment"]
        env["SHOP_DATABASE_URL"] = "postgresql+psycopg2://shop:hunter2@db-primary/shop"


def _apps_differ(c: Compose) -> None:
    c["services"]["app3"]["environment"]["SHOP_WORKERS"] = "4"


def _same_instance_name(c: Compose) -> None:
    c["services"]["app2"]["environment"]["SHOP_INSTANCE_NAME"] = "app1"


def _no_wait_for_migrate(c: Compose) -> None:
    for name in APPS:
        c["services"][name]["depends_on"] = ["db-primary", "redis"]


def _replica_without_entrypoint(c: Compose) -> None:
    del c["services"]["db-replica"]["entrypoint"]


def _primary_allows_more_connections(c: Compose) -> None:
    c["services"]["db-primary"]["command"] += ["-c", "max_connections=500"]


def _misspelt_key(c: Compose) -> None:
    c["services"]["redis"]["healthchek"] = c["services"]["redis"].pop("healthcheck")


def _unescaped_shell_variable(c: Compose) -> None:
    c["services"]["migrate"]["command"][-1] += 'echo "$count"\n'


MUTATIONS: list[tuple[Mutation, Callable[[Compose], list[str]], str]] = [
    (_publish_db_port, check_published_ports, "db-primary"),
    (_publish_db_port, check_data_tier, "db-primary"),
    (_redis_on_frontend, check_data_tier, "redis"),
    (_app_on_public, check_lb_networks, "app2"),
    (_app_on_public, check_app_tier, "app2"),
    (_app_publishes, check_published_ports, "app3"),
    (_data_not_internal, check_data_tier, "internal"),
    (_literal_secret_key, check_app_config, "SHOP_SECRET_KEY"),
    (_literal_secret_key, check_no_literal_secrets, "SHOP_SECRET_KEY"),
    (_literal_db_password, check_no_literal_secrets, "POSTGRES_PASSWORD"),
    (_password_in_url, check_no_literal_secrets, "URL"),
    (_apps_differ, check_app_config, "SHOP_WORKERS"),
    (_same_instance_name, check_app_config, "SHOP_INSTANCE_NAME"),
    (_no_wait_for_migrate, check_dependencies, "migrate"),
    (_replica_without_entrypoint, check_replica_setup, "entrypoint"),
    (_primary_allows_more_connections, check_replica_setup, "max_connections"),
    (_misspelt_key, check_structure, "healthchek"),
    (_misspelt_key, check_dependencies, "redis"),
    (_unescaped_shell_variable, check_structure, "$count"),
]


@pytest.mark.parametrize(
    ("mutate", "check", "culprit"),
    MUTATIONS,
    ids=[f"{m.__name__.strip('_')}-{c.__name__}" for m, c, _ in MUTATIONS],
)
def test_checks_flag_a_broken_copy(compose, mutate: Mutation, check, culprit: str):
    assert check(compose) == [], "the check fails on the real file already"
    broken = copy.deepcopy(compose)
    mutate(broken)
    problems = check(broken)
    assert problems, f"{check.__name__} did not notice {mutate.__name__}"
    assert any(culprit in problem for problem in problems), (
        f"{check.__name__} noticed {mutate.__name__} but did not name {culprit!r}: {problems}"
    )


HAPROXY_MUTATIONS = [
    # (id, text to replace, replacement, what the complaint must mention)
    ("sticky-cookie", "backend shop\n", "backend shop\n    cookie SRV insert\n", "stickiness"),
    ("source-hash", "balance roundrobin", "balance source", "roundrobin"),
    ("stick-table", "balance roundrobin", "balance roundrobin\n    stick on src", "stickiness"),
    (
        "table-in-shop",
        "balance roundrobin",
        "balance roundrobin\n    stick-table type ip size 1k",
        "stickiness",
    ),
    (
        "routing-table-backend",
        "http_req_rate(10s)\n",
        "http_req_rate(10s)\n    server app1 app1:8000 check\n",
        "per_src_requests",
    ),
    ("no-check", "server app2 app2:8000 check", "server app2 app2:8000", "app2"),
    ("no-fallback", "use_backend shop_alive if { nbsrv(shop) eq 0 }", "", "fall back"),
    (
        "fourth-server",
        "server app3 app3:8000 check\n",
        "server app3 app3:8000 check\n    server app4 app4:8000 check\n",
        "app4",
    ),
    ("healthz-not-readyz", "GET /readyz", "GET /healthz", "/readyz"),
    ("no-init-addr-none", "init-addr last,libc,none", "init-addr last,libc", "init-addr"),
    ("no-resolvers", " resolvers docker init-addr", " init-addr", "resolvers docker"),
    ("other-bind", "bind :8000", "bind :8080", "binds"),
]


@pytest.mark.parametrize(
    ("before", "after", "culprit"),
    [mutation[1:] for mutation in HAPROXY_MUTATIONS],
    ids=[mutation[0] for mutation in HAPROXY_MUTATIONS],
)
def test_haproxy_check_flags_a_broken_config(
    compose, haproxy_text, before: str, after: str, culprit: str
):
    assert check_haproxy(haproxy_text, compose) == [], "the check fails on the real file already"
    assert before in haproxy_text, f"the mutation no longer applies: {before!r} is gone"
    problems = check_haproxy(haproxy_text.replace(before, after, 1), compose)
    assert problems, f"check_haproxy accepted {after!r}"
    assert any(culprit in problem for problem in problems), (
        f"check_haproxy noticed {after!r} but did not mention {culprit!r}: {problems}"
    )
