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
PHONE = {"width": 390, "height": 844}
TAP = 44  # px: Apple's and WCAG 2.5.5's minimum target size

# What a thumb presses: buttons, fields, button-like links, the navigation's links.
_TARGETS = """() => {
  const selector = 'button, input:not([type=hidden]), textarea, select, a.button, nav a';
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    if (el.closest('.skip-link') || ['checkbox', 'radio'].includes(el.type)) continue;
    const box = el.getBoundingClientRect();
    const hidden = getComputedStyle(el).visibility === 'hidden';
    if (box.width === 0 || box.height === 0 || hidden) continue;
    const name = (el.innerText || el.value || el.name || el.id || '').trim().slice(0, 30);
    found.push({what: `${el.tagName.toLowerCase()} "${name}"`, height: box.height,
                left: box.left + window.scrollX, right: box.right + window.scrollX});
  }
  return found;
}"""


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


def check_fits_phone(page: Any, name: str, *, prefix: str = "phone") -> None:
    """The page as a 390 px phone shows it: a screenshot (``<prefix>-<name>.png``), then the
    rules: nothing scrolls sideways, every button, field and navigation link is a 44 px target
    inside the screen, and the page has its ``<main id=content>``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{prefix}-{name}.png"), full_page=True)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{name}: {width} px wide, scrolls sideways"
    targets = page.evaluate(_TARGETS)
    assert targets, f"{name}: nothing to press?"
    small = [f"{t['what']}: {t['height']:.0f} px" for t in targets if t["height"] < TAP - 0.5]
    assert not small, f"{name}: tap targets under {TAP} px high: {small}"
    outside = [t["what"] for t in targets if t["left"] < 0 or t["right"] > PHONE["width"] + 0.5]
    assert not outside, f"{name}: off the screen: {outside}"
    assert page.locator("main#content").count() == 1, f"{name}: no <main id=content>"
