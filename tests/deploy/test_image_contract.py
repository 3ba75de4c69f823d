"""The image's command line against gunicorn's config and the AWS stack: one port, one graceful
timeout, one health check, stated once and checked everywhere they reappear.

The Dockerfile's CMD is run as it is (``--print-config`` makes gunicorn load the ``-c`` file and
the app module, print the resulting settings and exit), with the environment the AWS task
definition gives it. The port gunicorn binds is then the one the image EXPOSEs, its HEALTHCHECK
asks, the task maps, the target group sends to and the app's security group admits; the time
gunicorn gives requests after SIGTERM is the target group's deregistration delay and less than
ECS waits before it kills. hadolint checks the Dockerfile itself.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.deploy.test_aws_template import APP_CONTAINER, APP_TASK, tool
from tests.deploy.test_packaging import final_stage, only
from tests.support import ROOT
from tests.support.aws_template import Stack, load_template

SECRET = "image-contract-secret-0123456789"


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack.of(load_template(), Image="example/shop:1")


@pytest.fixture(scope="module")
def cmd() -> list[str]:
    command = json.loads(only(final_stage(), "CMD"))
    assert isinstance(command, list), "CMD must be the exec form (a JSON list): no shell, signals"
    return command


@pytest.fixture(scope="module")
def gunicorn_settings(cmd, stack, tmp_path_factory) -> dict[str, str]:
    """The settings gunicorn ends up with when the image's CMD runs in the AWS task."""
    assert cmd[0] == "gunicorn", cmd
    task_env = stack.environment(APP_TASK, APP_CONTAINER)
    home = tmp_path_factory.mktemp("gunicorn-home")
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
        # gunicorn's variables exactly as the task sets them ...
        **{name: value for name, value in task_env.items() if name.startswith("SHOP_")},
        # ... and servers the app can be built against here (nothing connects at import).
        "SHOP_DATABASE_URL": "postgresql+psycopg2://shop@127.0.0.1:1/shop",
        "SHOP_REPLICA_URLS": "",
        "SHOP_REDIS_URL": "redis://127.0.0.1:1/0",
        "SHOP_SECRET_KEY": SECRET,
        # The task sets SHOP_METRICS_PORT: gunicorn.conf.py prepares the workers' metrics
        # folder at load, here rather than a /dev/shm folder that --print-config would leave.
        "PROMETHEUS_MULTIPROC_DIR": str(home / "prometheus"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", *cmd[1:], "--print-config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"the CMD does not load: {result.stderr[-2000:]}"
    settings = {}
    for line in result.stdout.splitlines():
        name, equals, value = line.partition("=")
        if equals:
            settings[name.strip()] = value.strip()
    return settings


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_the_cmd_names_a_config_file_and_an_app_the_image_contains(cmd):
    config = cmd[cmd.index("-c") + 1]
    assert (ROOT / config).is_file()
    module, _, attribute = next(arg for arg in cmd[1:] if ":" in arg).partition(":")
    assert (ROOT / f"{module}.py").is_file() and attribute == "app"
    copied = {
        Path(part).name
        for keyword, arguments in final_stage()
        if keyword == "COPY"
        for part in shlex.split(arguments)[:-1]
    }
    assert {config, f"{module}.py"} <= copied
    assert only(final_stage(), "WORKDIR") == "/app"


def test_the_cmd_loads_the_config_file_and_the_app(gunicorn_settings):
    assert gunicorn_settings["config"] == "gunicorn.conf.py"
    assert gunicorn_settings["worker_class"] == "gthread"


def test_one_port_from_gunicorn_to_the_balancer(gunicorn_settings, stack):
    (bind,) = json.loads(gunicorn_settings["bind"].replace("'", '"'))
    port = port_of(bind)
    assert bind.startswith("0.0.0.0:"), "in a container gunicorn must listen on every interface"
    stage = final_stage()
    assert only(stage, "EXPOSE").split() == [str(port)]
    healthcheck = only(stage, "HEALTHCHECK")
    assert re.findall(r"http://127\.0\.0\.1:(\d+)/", healthcheck) == [str(port)]

    container = stack.containers(APP_TASK)[APP_CONTAINER]
    assert [m["ContainerPort"] for m in container["PortMappings"]] == [port]
    (probe,) = re.findall(
        r"http://127\.0\.0\.1:(\d+)/", " ".join(container["HealthCheck"]["Command"])
    )
    assert int(probe) == port
    (target_group,) = stack.resources("AWS::ElasticLoadBalancingV2::TargetGroup").values()
    assert target_group["Port"] == port
    (service,) = stack.resources("AWS::ECS::Service").values()
    assert [lb["ContainerPort"] for lb in service["LoadBalancers"]] == [port]
    app_ingress = stack.properties("AppFromLoadBalancer")
    assert (app_ingress["FromPort"], app_ingress["ToPort"]) == (port, port)
    (balancer_egress,) = stack.properties("LoadBalancerSecurityGroup")["SecurityGroupEgress"]
    assert (balancer_egress["FromPort"], balancer_egress["ToPort"]) == (port, port)


def test_the_task_health_check_is_the_image_s(stack):
    """ECS ignores the image's HEALTHCHECK, so the task repeats it: the same command and
    timing."""
    healthcheck = only(final_stage(), "HEALTHCHECK")
    options = dict(re.findall(r"--([a-z-]+)=(\S+)", healthcheck))
    image_command = json.loads(healthcheck.split(" CMD ", 1)[1])
    task_check = stack.containers(APP_TASK)[APP_CONTAINER]["HealthCheck"]
    assert task_check["Command"] == ["CMD", *image_command]
    assert f"{task_check['Interval']}s" == options["interval"]
    assert f"{task_check['Timeout']}s" == options["timeout"]
    assert str(task_check["Retries"]) == options["retries"]
    assert f"{task_check['StartPeriod']}s" == options["start-period"]


def test_a_leaving_task_drains_as_long_as_gunicorn_waits(gunicorn_settings, stack):
    graceful = int(gunicorn_settings["graceful_timeout"])
    (target_group,) = stack.resources("AWS::ElasticLoadBalancingV2::TargetGroup").values()
    attributes = {a["Key"]: a["Value"] for a in target_group["TargetGroupAttributes"]}
    assert int(attributes["deregistration_delay.timeout_seconds"]) == graceful
    stop_timeout = stack.containers(APP_TASK)[APP_CONTAINER]["StopTimeout"]
    assert stop_timeout > graceful, "ECS would SIGKILL gunicorn before its workers finish"


def test_gunicorn_outlasts_the_balancer_s_idle_connections(gunicorn_settings, stack):
    """The balancer reuses idle connections for up to its idle timeout; if gunicorn closed
    them first, a request sent on one would get a 502."""
    (balancer,) = stack.resources("AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    attributes = {a["Key"]: a["Value"] for a in balancer["LoadBalancerAttributes"]}
    idle = int(attributes["idle_timeout.timeout_seconds"])
    assert int(gunicorn_settings["keepalive"]) > idle
    assert int(gunicorn_settings["timeout"]) <= idle


def test_workers_are_set_for_the_task_not_the_host(gunicorn_settings, stack):
    """gunicorn's default counts the host's CPUs; on Fargate the task's share is what counts."""
    env = stack.environment(APP_TASK, APP_CONTAINER)
    assert gunicorn_settings["workers"] == env["SHOP_WORKERS"]
    assert urlsplit(env["SHOP_REDIS_URL"]).scheme == "rediss"  # several workers share Redis


def test_hadolint_finds_nothing_in_the_dockerfile():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
