"""The back office through the balancer: an admin made with ``flask user grant`` adds a
product with an image in Chromium, and a shopper sees it on the next page load, whichever
instance answers; a price change and an archive reach every instance at once."""

from __future__ import annotations

import io
import re
import secrets

import pytest
import requests

from deploy.stack import stack as stack_module
from deploy.stack.cli import run_flask
from tests.stack.conftest import Shopper, in_stock_products
from tests.support.browser import SCREENSHOTS, chromium_context

PASSWORD = "a long back office passphrase"
_VERSION = re.compile(r'name="version" value="(\d+)"')


def flask_command(topology: stack_module.Topology, *args: str) -> str:
    """A ``flask --app shop`` command on the stack's database, as ``make stack-flask`` runs it."""
    done = run_flask(topology, list(args), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def make_admin(topology: stack_module.Topology) -> tuple[str, Shopper]:
    """An account registered through the balancer, made admin on the command line, signed in."""
    email = f"owner-{secrets.token_hex(5)}@example.com"
    browser = Shopper(topology.url)
    account = {"email": email, "password": PASSWORD}
    assert browser.api("POST", "/users", json=account).status_code == 202
    assert f"{email} is now admin" in flask_command(topology, "user", "grant", email, "admin")
    assert browser.api("POST", "/session/login", json=account).status_code == 200
    return email, browser


def every_instance_shows(topology: stack_module.Topology, path: str, check) -> None:
    """Load ``path`` as a new visitor from each instance (at its own address: through the
    balancer, the edge cache may answer for all of them) and through the balancer; each
    answer passes."""
    for name, app in topology.apps.items():
        answer = requests.get(app.url + path, timeout=10)
        check(answer)
        assert answer.headers.get("X-Served-By") == name
    check(requests.get(topology.url + path, timeout=10))


def test_a_price_change_and_an_archive_reach_every_instance_at_once(healthy_stack):
    product = in_stock_products(healthy_stack, 1)[0]
    path = f"/products/{product['id']}"
    every_instance_shows(healthy_stack, path, lambda a: a.status_code == 200)  # all warm
    _, admin = make_admin(healthy_stack)
    form = admin.get(f"/admin/products/{product['id']}")
    assert form.status_code == 200, form.text[:300]
    version = _VERSION.search(form.text)
    assert version, "the edit form carries the version it was loaded at"
    new_price = product["price_cents"] + 111
    saved = admin.submit(
        f"/admin/products/{product['id']}",
        {
            "version": version.group(1),
            "name": product["name"],
            "category": product["category"],
            "price": f"{new_price // 100}.{new_price % 100:02d}",
            "description": product["description"],
            "low_stock_threshold": "",
        },
    )
    assert saved.status_code == 200 and "Saved" in saved.text, saved.text[:500]

    def new_price_shown(answer: requests.Response) -> None:
        assert answer.status_code == 200
        api = requests.get(f"{healthy_stack.url}/api/v1/products/{product['id']}", timeout=10)
        assert api.json()["price_cents"] == new_price

    every_instance_shows(healthy_stack, path, new_price_shown)

    admin.get(f"/admin/products/{product['id']}")
    archived = admin.submit(f"/admin/products/{product['id']}/archive", {})
    assert archived.status_code == 200, archived.text[:300]
    every_instance_shows(healthy_stack, path, lambda a: _assert_status(a, 404))


def _assert_status(answer: requests.Response, status: int) -> None:
    assert answer.status_code == status, (answer.status_code, answer.url)


def _png(seed: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (900, 600), (40 + seed % 200, 90, 160))
    ImageDraw.Draw(image).ellipse((250, 100, 650, 500), fill=(250, 200, 60))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def two_browsers(healthy_stack):
    """Two browsers' worth of cookies: the staff member's and a shopper's."""
    with chromium_context(viewport={"width": 1200, "height": 900}) as staff_context:
        shop_context = staff_context.browser.new_context(viewport={"width": 1200, "height": 900})
        yield staff_context.new_page(), shop_context.new_page()


def test_an_admin_adds_a_product_with_an_image_and_a_shopper_sees_it(
    healthy_stack, two_browsers, tmp_path
):
    staff_page, shopper_page = two_browsers
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    url = healthy_stack.url
    email = f"owner-{secrets.token_hex(5)}@example.com"

    staff_page.goto(url + "/register")
    staff_page.fill("#email", email)
    staff_page.fill("#password", PASSWORD)
    staff_page.click("form.stacked button[type=submit]")
    staff_page.wait_for_selector("text=We sent a message")
    flask_command(healthy_stack, "user", "grant", email, "admin")
    staff_page.goto(url + "/login")
    staff_page.fill("#email", email)
    staff_page.fill("#password", PASSWORD)
    staff_page.click("form.stacked button[type=submit]")
    staff_page.wait_for_selector("text=Back office")
    staff_page.click("text=Back office")
    staff_page.click(".admin-nav >> text=Products")
    staff_page.click("text=New product")

    name = f"Stack Lantern {secrets.token_hex(3)}"
    staff_page.fill("input[name=name]", name)
    staff_page.select_option("select[name=category]", index=1)
    staff_page.fill("input[name=price]", "42.50")
    staff_page.fill("input[name=stock]", "7")
    staff_page.fill("textarea[name=description]", "Lights the way through the balancer.")
    staff_page.screenshot(path=str(SCREENSHOTS / "admin-01-new-product.png"), full_page=True)
    staff_page.click("button:has-text('Create product')")
    staff_page.wait_for_url(re.compile(r"/admin/products/\d+"))
    product_id = int(re.search(r"/admin/products/(\d+)", staff_page.url).group(1))

    staff_page.click("a:has-text('Images')")
    picture = tmp_path / "lantern.png"
    picture.write_bytes(_png(product_id))
    staff_page.set_input_files("input[name=image]", str(picture))
    staff_page.fill("input[name=alt]", "A yellow lantern on blue")
    staff_page.click("button:has-text('Upload image')")
    staff_page.wait_for_selector("img[alt='A yellow lantern on blue']")
    staff_page.screenshot(path=str(SCREENSHOTS / "admin-02-images.png"), full_page=True)

    # A shopper, in another browser, on the next page load: whichever instance answers.
    served: set[str] = set()
    shopper_page.on("response", lambda r: served.add(r.headers.get("x-served-by", "")))
    for _ in range(3):
        shopper_page.goto(f"{url}/products/{product_id}")
        assert shopper_page.locator("h1").inner_text() == name
        image = shopper_page.locator("main img[alt='A yellow lantern on blue']").first
        assert image.get_attribute("srcset") and image.get_attribute("width")
        assert shopper_page.evaluate("(img) => img.naturalWidth", image.element_handle()) > 0
    shopper_page.screenshot(path=str(SCREENSHOTS / "admin-03-shopper-sees.png"), full_page=True)
    assert len(served - {""}) >= 2

    source = shopper_page.locator("main img[alt='A yellow lantern on blue']").first
    src = source.get_attribute("src")
    fetched = requests.get(src if src.startswith("http") else url + src, timeout=10)
    assert fetched.status_code == 200
    assert "immutable" in fetched.headers["Cache-Control"]
    assert fetched.headers["Content-Type"].startswith("image/")

    shopper_page.goto(f"{url}/?q={name.split()[-1]}")
    assert shopper_page.locator(f".card:has-text('{name}') img").count() == 1
