"""Workload (c) and the checkout race, through the stack's balancer and three instances
(``deploy/stack/stack.py``: PostgreSQL primary and replica, Redis, HAProxy, on ports of the
benchmark's own).

The mix: logged-in shoppers, each following a cycle of :data:`CYCLE` requests: page views, the
cart changes of :data:`CART_CHANGES` and a checkout last, which never meets an empty cart.
Latency per kind of request comes from the instances' own access logs (gunicorn's request
time), read for the run's window.

Peak throughput is the best of a few closed-loop concurrencies; the paced run (at
:data:`PACED_SHARE` of peak) paces each connection with wrk's ``delay()`` (Debian has no wrk2),
calibrated until the measured rate is within :data:`TOLERANCE` of the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import requests

from deploy.stack import stack as stack_module
from deploy.stack.redis_server import stack_client

from . import wrk
from .servers import BenchError

PASSWORD = "bench-shopper-passphrase-7"
SHIPPING = {"name": "Bench Buyer", "address": "1 Loopback Road, 127.0.0.1"}
UNITS_PER_BUYER = 1  # in each cart of the checkout race

# A shopper's cycle of requests: a page view at every step but these, which the script below
# finds by name in its table ``steps``; the last step checks out.
CYCLE = 50
CART_CHANGES = {  # name in the script: (step, what it does)
    "add": (0, "add a line"),
    "quantity": (12, "set its quantity"),
    "remove": (24, "remove it"),
    "rebuy": (36, "set the line to buy"),
}
PACED_SHARE = 0.8  # of the closed loop's peak: the rate of the paced run
TOLERANCE = 0.03  # how close to that rate calibration must come
CALIBRATION_TRIALS = 3


def described_cycle() -> dict:
    """The cycle as the results record it, for the report to describe."""
    changes = [text for _step, text in sorted(CART_CHANGES.values())]
    return {"requests": CYCLE, "cart_changes": changes, "checkouts": 1}


def cycle_steps() -> dict[str, int]:
    """The step of each request of the cycle that is not a page view, by its name in the
    script."""
    return {name: step for name, (step, _text) in CART_CHANGES.items()} | {"checkout": CYCLE - 1}


MIX = r"""
local mine, step = {}, {}
local turn, browse, orders, pace = 0, 0, 0, 0
local nonce = "run"
statuses = {}

function init(args)
  nonce = args[1] or nonce
  pace = tonumber(args[2] or "0")
  local nthreads = tonumber(args[3] or "1")
  for i, s in ipairs(shoppers) do
    if (i - 1) % nthreads == (id or 0) then
      mine[#mine + 1] = s
      -- Shoppers start at different points of their cycle, so checkouts are spread over the
      -- run (every cart holds p1 when a run starts: see prepare_carts).
      step[#mine] = (i * 17) % cycle
    end
  end
  browse = (id or 0) * 101
end

function delay()
  if pace <= 0 then return 0 end
  return math.random() * 2 * pace
end

local function api(s, method, path, body)
  local headers = { ["Cookie"] = s.cookie, ["X-CSRF-Token"] = s.csrf,
                    ["Content-Type"] = "application/json" }
  return wrk.format(method, path, headers, body)
end

function request()
  turn = (turn % #mine) + 1
  local s = mine[turn]
  local k = step[turn] % cycle
  step[turn] = step[turn] + 1
  if k == steps.add then
    return api(s, "POST", "/api/v1/cart/items", '{"product_id": ' .. s.p2 .. ', "quantity": 1}')
  elseif k == steps.quantity then
    return api(s, "PUT", "/api/v1/cart/items/" .. s.p2, '{"quantity": 2}')
  elseif k == steps.remove then
    return api(s, "DELETE", "/api/v1/cart/items/" .. s.p2, nil)
  elseif k == steps.rebuy then
    -- Setting (not adding) the line checked out next: a checkout still in flight when the
    -- cycle restarts clears the cart it finds, so nothing may rely on the first add.
    return api(s, "PUT", "/api/v1/cart/items/" .. s.p1, '{"quantity": 1}')
  elseif k == steps.checkout then
    orders = orders + 1
    local headers = { ["Cookie"] = s.cookie, ["X-CSRF-Token"] = s.csrf,
                      ["Content-Type"] = "application/json",
                      ["Idempotency-Key"] = nonce .. "-" .. (id or 0) .. "-" .. orders }
    return wrk.format("POST", "/api/v1/orders", headers, shipping)
  end
  browse = browse + 1
  return wrk.format("GET", paths[(browse % #paths) + 1], { ["Cookie"] = s.cookie })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
"""

STATUSES = r"""
local all_threads = {}
local started = 0
function setup(thread)
  thread:set("id", started)
  started = started + 1
  all_threads[#all_threads + 1] = thread
end

local function print_statuses()
  local merged = {}
  for _, t in ipairs(all_threads) do
    for status, n in pairs(t:get("statuses") or {}) do
      merged[status] = (merged[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(merged) do parts[#parts + 1] = '"' .. status .. '": ' .. n end
  io.write("BENCH_STATUSES {" .. table.concat(parts, ", ") .. "}\n")
end
"""


_ACCESS = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+) \S+ (?P<ms>\d+)ms'
)


def _percentiles(values: list[float]) -> dict:
    values = sorted(values)

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {"n": len(values), "p50_ms": at(0.5), "p95_ms": at(0.95), "p99_ms": at(0.99)}


@dataclass
class Shopper:
    cookie: str
    csrf: str


def _ports_free(ports: Sequence[int]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def choose_ports() -> stack_module.Ports:
    """``STACK_PORT_BASE`` / ``STACK_PORT`` when set (a machine whose engineers share out
    ports), else the first free block from 27400."""
    if os.environ.get("STACK_PORT_BASE"):
        ports = stack_module.Ports.from_env()
        if not _ports_free(list(ports.all().values())):
            raise BenchError(f"STACK_PORT_BASE / STACK_PORT: some of {ports.all()} are taken")
        return ports
    for base in range(27400, 32000, 200):
        ports = stack_module.Ports.from_env(
            {"STACK_PORT_BASE": str(base), "STACK_PORT": str(base + 80)}
        )
        if _ports_free(list(ports.all().values())):
            return ports
    raise BenchError("no free block of ports for the stack between 27400 and 32000")


class Stack:
    """The stack in a temporary work folder, stopped (by pid) and deleted on exit."""

    def __init__(self, products: int, echo: Callable[[str], None]) -> None:
        self.products = products
        self.echo = echo
        self.work = Path(tempfile.mkdtemp(prefix="shop-bench-stack-"))
        self.work.chmod(0o755)  # the postgres user must reach its data directories
        self.topology: stack_module.Topology | None = None

    def __enter__(self) -> Stack:
        try:
            self.topology = stack_module.start_stack(
                self.work,
                ports=choose_ports(),
                seed_products=self.products,
                echo=lambda line: self.echo("    stack: " + line),
            )
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *_exc) -> None:
        with contextlib.suppress(Exception):
            stack_module.stop_stack(self.work, purge=True, echo=lambda _line: None)
        shutil.rmtree(self.work, ignore_errors=True)

    @property
    def url(self) -> str:
        return self.topology.url

    def sql(self, server: str, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg2.connect(self.topology.component(server).dsn, connect_timeout=3) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall() if cur.description else []

    def set_stock(self, product_ids: Sequence[int], stock: int) -> None:
        """Straight in the database, then every cached catalogue entry dropped (nothing has
        been served from these products' entries yet) once the replica has replayed it."""
        ids = list(product_ids)
        self.sql("primary", "UPDATE products SET stock = %s WHERE id = ANY(%s)", (stock, ids))
        deadline = time.monotonic() + 10
        while self.sql(
            "replica",
            "SELECT count(*) FROM products WHERE id = ANY(%s) AND stock <> %s",
            (ids, stock),
        )[0][0]:
            if time.monotonic() > deadline:
                raise BenchError("the stack's replica did not replay the stock change")
            time.sleep(0.05)
        client = stack_client(self.topology)
        for key in list(client.scan_iter("shop:cat:*", count=1000)):
            client.delete(key)  # one by one: a cluster's keys live on several nodes

    def access_logs_mark(self) -> dict[str, int]:
        return {app.log: Path(app.log).stat().st_size for app in self.topology.apps.values()}

    def latency_by_kind(self, mark: dict[str, int]) -> dict[str, dict]:
        """Server-side request times (gunicorn's access log) since ``mark``, by kind."""
        times: dict[str, list[float]] = {"page": [], "cart change": [], "checkout": []}
        for path, offset in mark.items():
            with open(path, "rb") as log:
                log.seek(offset)
                for line in log.read().decode(errors="replace").splitlines():
                    found = _ACCESS.search(line)
                    if not found or found["path"].startswith(("/readyz", "/healthz")):
                        continue
                    if found["path"].startswith("/api/v1/orders"):
                        kind = "checkout"
                    elif found["path"].startswith("/api/v1/cart"):
                        kind = "cart change"
                    else:
                        kind = "page"
                    times[kind].append(float(found["ms"]))
        return {kind: _percentiles(values) for kind, values in times.items() if values}

    def register(self, count: int) -> list[Shopper]:
        nonce = secrets.token_hex(4)

        def one(i: int) -> Shopper:
            http = requests.Session()
            token = http.get(self.url + "/api/v1/session", timeout=15).json()["csrf_token"]
            account = {"email": f"bench-{nonce}-{i}@example.com", "password": PASSWORD}
            # Registration signs nobody in (the address gets a mail): register, then log in.
            for path, status in (("/api/v1/users", 202), ("/api/v1/session/login", 200)):
                response = _patiently(
                    lambda path=path: http.post(
                        self.url + path, json=account, headers={"X-CSRF-Token": token}, timeout=30
                    )
                )
                if response.status_code != status:
                    raise BenchError(f"{path}: {response.status_code} {response.text}")
            cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
            return Shopper(cookie=cookie, csrf=response.json()["csrf_token"])

        with ThreadPoolExecutor(6) as pool:
            return list(pool.map(one, range(count)))


def _patiently(send: Callable[[], requests.Response], tries: int = 20) -> requests.Response:
    """An instance whose password-hash slots are all busy answers 503 with Retry-After: wait
    and retry, as a well-behaved client does."""
    for _ in range(tries):
        answer = send()
        if answer.status_code != 503 or "Retry-After" not in answer.headers:
            break
        time.sleep(float(answer.headers["Retry-After"]))
    return answer


def api(base: str, shopper: Shopper, method: str, path: str, **kwargs) -> requests.Response:
    headers = {"Cookie": shopper.cookie, "X-CSRF-Token": shopper.csrf, **kwargs.pop("headers", {})}
    return requests.request(method, base + "/api/v1" + path, headers=headers, timeout=60, **kwargs)


def checkout_race(
    stack: Stack, buyers: Sequence[Shopper], product_ids: Sequence[int], stock: int
) -> dict:
    """Each buyer has :data:`UNITS_PER_BUYER` of its product (``product_ids`` cycled) in the
    cart; all check out at once. Orders per second, and the database's word on overselling."""
    distinct = sorted(set(product_ids))
    stack.set_stock(distinct, stock)
    for i, buyer in enumerate(buyers):
        pid = product_ids[i % len(product_ids)]
        line = {"product_id": pid, "quantity": UNITS_PER_BUYER}
        response = api(stack.url, buyer, "POST", "/cart/items", json=line)
        if response.status_code != 200:
            raise BenchError(f"filling a cart: {response.status_code} {response.text}")
    last_order = stack.sql("primary", "SELECT coalesce(max(id), 0) FROM orders")[0][0]
    barrier = threading.Barrier(len(buyers) + 1)
    outcomes: list[tuple[int, float]] = []
    lock = threading.Lock()

    def buy(buyer: Shopper) -> None:
        http = requests.Session()
        barrier.wait()
        response = http.post(
            stack.url + "/api/v1/orders",
            json={"shipping": SHIPPING},
            headers={
                "Cookie": buyer.cookie,
                "X-CSRF-Token": buyer.csrf,
                "Idempotency-Key": secrets.token_hex(8),
            },
            timeout=60,
        )
        with lock:
            outcomes.append((response.status_code, time.perf_counter()))

    threads = [threading.Thread(target=buy, args=(b,)) for b in buyers]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = max(t for _s, t in outcomes) - started
    created = sum(1 for s, _t in outcomes if s == 201)
    statuses: dict[str, int] = {}
    for s, _t in outcomes:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    rows = stack.sql(
        "primary",
        "SELECT p.id, p.stock, coalesce(sum(l.quantity), 0) FROM products p "
        "LEFT JOIN order_lines l ON l.product_id = p.id AND l.order_id > %s "
        "WHERE p.id = ANY(%s) GROUP BY p.id",
        (last_order, distinct),
    )
    orders_in_db = stack.sql("primary", "SELECT count(*) FROM orders WHERE id > %s", (last_order,))[
        0
    ][0]
    sold = sum(int(r[2]) for r in rows)
    oversold = sum(max(0, int(r[2]) - stock) for r in rows)
    negative = sum(1 for r in rows if r[1] < 0)
    consistent = all(int(r[2]) + r[1] == stock for r in rows)
    return {
        "buyers": len(buyers),
        "products": len(distinct),
        "stock_each": stock,
        "units_per_buyer": UNITS_PER_BUYER,
        "seconds": wall,
        "orders": created,
        "orders_per_second": created / wall if wall else 0.0,
        "statuses": statuses,
        "orders_in_database": orders_in_db,
        "units_sold": sold,
        "oversold_units": oversold,
        "negative_stock_products": negative,
        "stock_plus_sold_equals_initial": consistent,
        "ok": oversold == 0 and negative == 0 and consistent and orders_in_db == created,
    }


def mix_script(
    path: Path,
    shoppers: Sequence[Shopper],
    products: Sequence[tuple[int, int]],
    paths: Sequence[str],
) -> Path:
    steps = ", ".join(f"{name} = {step}" for name, step in cycle_steps().items())
    table = ",\n  ".join(
        f"{{cookie = {json.dumps(s.cookie)}, csrf = {json.dumps(s.csrf)}, p1 = {p1}, p2 = {p2}}}"
        for s, (p1, p2) in zip(shoppers, products, strict=True)
    )
    body = (
        STATUSES
        + f"shoppers = {{\n  {table}\n}}\n"
        + wrk.lua_table("paths", paths).replace("local paths", "paths")
        + f"shipping = {json.dumps(json.dumps({'shipping': SHIPPING}))}\n"
        + f"cycle = {CYCLE}\n"
        + f"steps = {{{steps}}}\n"
        + MIX
        + wrk.DONE.replace(
            "function done(summary, latency, requests)\n",
            "function done(summary, latency, requests)\n  print_statuses()\n",
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("-- written by bench/mix.py\n" + body)
    return path


def run_mix(
    stack: Stack,
    shoppers: Sequence[Shopper],
    paths: Sequence[str],
    *,
    concurrencies: Sequence[int],
    duration: float,
    lua_dir: Path,
    progress: Callable[[str], None],
) -> dict:
    """Peak throughput of the mix, then a run paced at :data:`PACED_SHARE` of it; what the
    report says of the run (the cycle, the instances) is recorded with it."""
    from .visitors import warm

    pool = 200  # products the shoppers buy, with stock that cannot run out
    products = [(1 + (i * 7) % pool, 1 + (i * 7 + pool // 2) % pool) for i in range(len(shoppers))]
    stack.set_stock(range(1, pool + 1), 1_000_000)
    script = mix_script(lua_dir / "mix.lua", shoppers, products, paths)
    warm(stack.url, paths, [s.cookie for s in shoppers[:8]])

    def orders() -> int:
        return stack.sql("primary", "SELECT count(*) FROM orders")[0][0]

    def prepare_carts() -> None:
        def put(pair: tuple[Shopper, tuple[int, int]]) -> None:
            shopper, (p1, _p2) = pair
            response = api(stack.url, shopper, "PUT", f"/cart/items/{p1}", json={"quantity": 1})
            if response.status_code != 200:
                raise BenchError(f"preparing a cart: {response.status_code} {response.text}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, zip(shoppers, products, strict=True)))

    def one(connections: int, pace_ms: float, seconds: float, label: str) -> dict:
        prepare_carts()
        time.sleep(0.5)
        before = orders()
        logs = stack.access_logs_mark()
        result = wrk.run(
            stack.url,
            script,
            connections=connections,
            duration=seconds,
            args=[secrets.token_hex(4), f"{pace_ms:.3f}", "1"],
            timeout="20s",
        )
        time.sleep(0.5)
        result["by_kind"] = stack.latency_by_kind(logs)
        result["orders"] = orders() - before
        result["orders_per_second"] = result["orders"] / result["seconds"]
        result["pace_ms"] = pace_ms
        statuses = result.get("statuses") or {}
        result["bad_statuses"] = {s: n for s, n in statuses.items() if int(s) >= 400}
        progress(
            f"  (c) {label:<22} c={connections:<3} {result['rps']:7.0f} req/s  p50 "
            f"{result['p50_ms']:6.1f} ms  p99 {result['p99_ms']:7.1f} ms  errors "
            f"{result['errors']}  orders/s {result['orders_per_second']:.1f}  "
            f"wrk cpu {result['cpu_wrk']:.0%}"
        )
        return result

    closed = [one(c, 0, duration, "closed loop") for c in concurrencies]
    peak = max(closed, key=lambda r: r["rps"])
    target = PACED_SHARE * peak["rps"]
    paced_label = f"{PACED_SHARE:.0%} of peak"
    # Many connections, each pausing much longer than a request takes: the rate then hardly
    # depends on the latency (close to an open loop, which wrk2 would give).
    connections = max(128, 4 * peak["connections"])
    # Each connection: a pause, then a request; rate = connections / (pause + latency), with
    # the latency of a trial at about that rate.
    period = connections / target * 1000
    pace = max(0.0, period - peak["mean_ms"] / 2)
    calibration = []
    for _ in range(CALIBRATION_TRIALS):
        trial = one(connections, pace, max(3.0, duration / 2), f"calibrating to {paced_label}")
        calibration.append(trial)
        if abs(trial["rps"] / target - 1) <= TOLERANCE:
            break
        overhead = connections / trial["rps"] * 1000 - pace  # latency plus wrk's own time
        pace = max(0.0, period - overhead)
    paced = one(connections, pace, duration * 2, f"at {paced_label}")
    instance = next(iter(stack.topology.apps.values())).env  # the instances are alike
    return {
        "closed_loop": closed,
        "peak": peak,
        "target_rps": target,
        "calibration": calibration,
        "paced": paced,
        "paced_share": PACED_SHARE,
        "tolerance": TOLERANCE,
        "shoppers": len(shoppers),
        "cycle": described_cycle(),
        "instances": len(stack.topology.apps),
        "workers": int(instance["SHOP_WORKERS"]),
        "threads": int(instance["SHOP_THREADS"]),
    }
