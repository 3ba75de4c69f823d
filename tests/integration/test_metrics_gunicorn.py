"""Metrics and logs as an operator gets them: a real gunicorn with two workers on the real
PostgreSQL and Redis, its metrics port answered by the master with every worker's counts, the
shop's port without /metrics, and every log line JSON with the request's id."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REDIS_URL, SECRET, free_port, gunicorn_running


@dataclass
class Instance:
    url: str
    metrics_url: str
    metrics_dir: Path
    stdout: Path
    stderr: Path
    process: subprocess.Popen


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gunicorn exited: {log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.1)
    pytest.fail(f"{url} never answered: {log.read_text()[-3000:]}")


@pytest.fixture
def instance(pg_url, real_redis, tmp_path) -> Iterator[Instance]:
    _, prefix = real_redis
    port, metrics_port = free_port(), free_port()
    metrics_dir = tmp_path / "prometheus"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOP_", "PROMETHEUS_"))}
    env.update(
        SHOP_DATABASE_URL=pg_url,
        SHOP_REDIS_URL=REDIS_URL,
        SHOP_REDIS_PREFIX=prefix,
        SHOP_SECRET_KEY=SECRET,
        SHOP_ENV="development",
        SHOP_BIND=f"127.0.0.1:{port}",
        SHOP_WORKERS="2",
        SHOP_THREADS="1",  # sync workers: one request each at a time, so both get some
        SHOP_METRICS_PORT=str(metrics_port),
        SHOP_LOG_FORMAT="json",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with gunicorn_running(env, stdout, stderr) as process:
        wait_for(f"http://127.0.0.1:{port}/healthz", process, stderr)
        wait_for(f"http://127.0.0.1:{metrics_port}/metrics", process, stderr)
        yield Instance(
            f"http://127.0.0.1:{port}",
            f"http://127.0.0.1:{metrics_port}/metrics",
            metrics_dir,
            stdout,
            stderr,
            process,
        )


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(url, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def requests_by_worker(folder: Path) -> dict[int, float]:
    """Each worker's own count of answered requests, from its file in the multiprocess folder."""
    counts: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "shop_http_requests_total":  # (family, sample, ...)
                counts[pid] = counts.get(pid, 0) + value
    return counts


def test_the_metrics_port_sums_both_workers_and_the_shop_port_has_no_metrics(instance):
    product = "/products/<id:product_id>"
    before = total(scrape(instance.metrics_url), "shop_http_requests_total", route=product)

    def browse(i: int) -> int:
        return requests.get(f"{instance.url}/products/{1 + i % 5}", timeout=10).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(browse, range(60)))
    assert statuses == [200] * 60

    samples = scrape(instance.metrics_url)
    assert total(samples, "shop_http_requests_total", route=product, status="200") - before == 60
    assert total(samples, "shop_http_request_duration_seconds_count", route=product) >= 60
    by_worker = {pid: n for pid, n in requests_by_worker(instance.metrics_dir).items() if n}
    assert len(by_worker) >= 2, f"one worker served everything: {by_worker}"
    # The cache tiers answered every page, and the first of each was rendered from the database.
    assert total(samples, "shop_cache_lookups_total", cache="page") >= 60
    assert total(samples, "shop_cache_lookups_total", cache="page", tier="database") >= 1
    assert total(samples, "shop_request_sql_statements_count") >= 60
    assert ("shop_db_pool_connections_in_use", (("engine", "primary"),)) in samples

    for path in ("/metrics", "/metrics/"):
        assert requests.get(instance.url + path, timeout=5).status_code == 404


def test_every_log_line_is_json_and_carries_the_request_id(instance):
    rid = "from-the-balancer-42"
    refused = requests.post(
        f"{instance.url}/cart/add", data={"product_id": 1}, headers={"X-Request-ID": rid}
    )
    assert refused.status_code == 403 and refused.headers["X-Request-ID"] == rid
    generated = requests.get(f"{instance.url}/healthz").headers["X-Request-ID"]
    time.sleep(0.5)  # the access lines are written after the responses
    lines = instance.stdout.read_text().splitlines() + instance.stderr.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # every line parses
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    ours = [r for r in records if r["request_id"] == rid]
    assert {r["logger"] for r in ours} >= {"shop.access", "gunicorn.access"}
    access = next(r for r in ours if r["logger"] == "gunicorn.access")
    assert access["status"] == 403 and access["method"] == "POST" and access["path"] == "/cart/add"
    assert any(r["request_id"] == generated for r in records if r["logger"] == "gunicorn.access")
    assert any(r["logger"] == "gunicorn.error" for r in records)  # the master's lines too
