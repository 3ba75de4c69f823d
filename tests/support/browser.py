"""Debian's Chromium driven by Playwright, for the tests that look at pages as a browser draws
them: the stack's journey through the balancer and the phone layout of an app in a thread."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.support import REQUIRE_SERVICES, ROOT

CHROMIUM = os.environ.get("SHOP_TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling out, which this machine's
# closed network refuses; as root it needs --no-sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def require(condition: bool, what: str) -> None:
    """Skip by name when something a test needs is missing; fail instead in CI."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(
            f"{what} is missing; SHOP_TEST_REQUIRE_SERVICES=1 forbids skipping", pytrace=False
        )
    pytest.skip(f"needs {what}")


@contextmanager
def chromium_context(**context_options: Any) -> Iterator[Any]:
    """A fresh browser context (``viewport``, ``is_mobile``...) in headless Chromium."""
    require(
        shutil.which(CHROMIUM) is not None or os.path.exists(CHROMIUM), f"Chromium at {CHROMIUM}"
    )
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_context(**context_options)
        finally:
            browser.close()


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """``app`` on a free loopback port in a thread (werkzeug's server): its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
