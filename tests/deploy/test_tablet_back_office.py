"""The back office on a tablet, drawn by Chromium: every page of it (walked from the route map,
so a new page is checked too; pages of one record are opened on a product, an order and the
admin's own account) fits a 768 px portrait tablet
without scrolling sideways (wide tables scroll inside their own box), its buttons and fields
are 44 px targets, and each page leaves a screenshot, artifacts/screenshots/tablet-*.png."""

from __future__ import annotations

import pytest

from shop import create_app, staff
from shop.audit import Actor
from shop.config import Settings
from tests.support import utc_now
from tests.support.browser import SCREENSHOTS, TAP, chromium_context, serving

TABLET = {"width": 768, "height": 1024}
EMAIL, PASSWORD = "owner@example.com", "correct horse 42"
# What a finger presses in the back office's own part of the page.
_TARGETS = """() => {
  const found = [];
  for (const el of document.querySelectorAll(
      '.admin button, .admin input:not([type=hidden]), .admin select, .admin-nav a')) {
    if (['checkbox', 'radio'].includes(el.type)) continue;
    const box = el.getBoundingClientRect();
    if (box.width === 0 || box.height === 0) continue;
    const name = (el.innerText || el.value || el.name || '').trim().slice(0, 30);
    found.push({what: `${el.tagName.toLowerCase()} "${name}"`, height: box.height});
  }
  return found;
}"""


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    app = create_app(Settings(instance_path=str(tmp_path_factory.mktemp("tablet"))).validated())
    with serving(app) as url:
        yield app, url
    app.extensions["shop"].close()


def back_office_pages(app, values: dict[str, int]) -> list[str]:
    """Every page of the back office a browser opens (GET, not a download), with ``values``
    for the records in its address."""
    adapter = app.url_map.bind("localhost")
    return sorted(
        adapter.build(rule.endpoint, {name: values[name] for name in rule.arguments})
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/admin")
        and "GET" in (rule.methods or ())
        and not rule.rule.endswith((".csv", "/reauth"))
    )


def _guest_order(app) -> int:
    """A guest's order through the API (this app's own secret signs its token)."""
    client = app.test_client()
    token = client.get("/api/v1/session").get_json()["csrf_token"]
    headers = {"X-CSRF-Token": token}
    client.post("/api/v1/cart/items", json={"product_id": 1, "quantity": 1}, headers=headers)
    placed = client.post(
        "/api/v1/orders",
        json={"email": "guest@example.com", "shipping": {"name": "G", "address": "1 Road"}},
        headers={**headers, "Idempotency-Key": "tablet-order"},
    )
    assert placed.status_code == 201, placed.get_json()
    return placed.get_json()["order"]["id"]


def test_every_back_office_page_fits_a_tablet(shop):
    app, url = shop
    with chromium_context(viewport=TABLET, has_touch=True) as context:
        page = context.new_page()
        page.goto(url + "/register")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("form.stacked button[type=submit]")
        with app.extensions["shop"].engines.primary.begin() as conn:
            staff.grant(conn, Actor.command_line(), email=EMAIL, role="admin", at=utc_now())
        page.goto(url + "/login")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        with page.expect_navigation():
            page.click("form.stacked button[type=submit]")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        admin_id = page.evaluate("fetch('/api/v1/session').then(r => r.json())")["user"]["id"]
        values = {"product_id": 1, "order_id": _guest_order(app), "user_id": admin_id}
        pages = back_office_pages(app, values)
        assert {"/admin/", "/admin/staff", "/admin/products/1", f"/admin/staff/{admin_id}"} <= set(
            pages
        )
        for path in pages:
            answer = page.goto(url + path)
            name = path.strip("/").replace("/", "-") or "admin"
            assert answer is not None and answer.status == 200, (path, answer and answer.status)
            page.screenshot(path=str(SCREENSHOTS / f"tablet-{name}.png"), full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= TABLET["width"], f"{path}: {width} px wide, scrolls sideways"
            small = [
                f"{t['what']}: {t['height']:.0f} px"
                for t in page.evaluate(_TARGETS)
                if t["height"] < TAP - 0.5
            ]
            assert not small, f"{path}: targets under {TAP} px: {small}"
