"""The stack's monitoring, on paper: the balancer never routes to a metrics port, Prometheus
scrapes every instance's, and every monitoring port is the stack's own (the running stack:
tests/stack/test_metrics.py)."""

from __future__ import annotations

import json

from deploy.haproxy import render
from deploy.stack.haproxy import stack_edge
from deploy.stack.monitoring import prometheus_config
from deploy.stack.topology import Ports, _build_topology


def topology(tmp_path):
    ports = Ports.from_env({"STACK_PORT_BASE": "27800", "STACK_PORT": "27880"})
    return _build_topology(tmp_path, ports), ports


def test_the_balancer_never_routes_to_a_metrics_port(tmp_path):
    stack, _ = topology(tmp_path)
    config = render(stack_edge(stack))
    metrics_ports = [app.env["SHOP_METRICS_PORT"] for app in stack.apps.values()]
    assert len(set(metrics_ports)) == 3
    for port in metrics_ports:
        assert f":{port}" not in config
    for app in stack.apps.values():  # while the shop's ports are its backends
        assert f":{app.port}" in config


def test_prometheus_scrapes_every_instance_and_both_exporters(tmp_path):
    stack, ports = topology(tmp_path)
    config = json.loads(prometheus_config(stack))
    targets = {
        job["job_name"]: [t for group in job["static_configs"] for t in group["targets"]]
        for job in config["scrape_configs"]
    }
    assert sorted(targets["shop"]) == sorted(
        f"127.0.0.1:{app.env['SHOP_METRICS_PORT']}" for app in stack.apps.values()
    )
    assert targets["redis"] == [f"127.0.0.1:{stack.redis_exporter.port}"]
    assert targets["postgres"] == [f"127.0.0.1:{stack.postgres_exporter.port}"]
    named = ports.all()
    assert len(set(named.values())) == len(named)  # no monitoring port collides with another
    assert all(27800 <= port <= 27880 for port in named.values())
