"""Product images: what staff upload, what is stored, how it is served and shown.

Every image here is made with Pillow in the test (a photo with GPS in its EXIF, a PNG with
transparency, a WebP) or is one of the uploads an attacker or a mistake sends: a program
renamed .jpg, a PNG header with garbage, a truncated JPEG, a 50-megapixel bomb that compresses
to a few kilobytes, a GIF, an SVG, an empty file, a body past the limit. Each of those gets a
4xx with a message and leaves no trace: no stored variant, no image row, no audit entry.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import time

import pytest
from PIL import Image, ImageFile
from sqlalchemy import func, select

from shop import images as image_rules
from shop.config import ConfigError, Settings
from shop.errors import ImageTooLarge
from shop.models import audit_log, image_blobs, product_images
from tests.support import (
    KETTLE,
    MUG,
    Shopper,
    StatementCounter,
    back_office_user,
    page_text,
    wait_for_local_tier,
)

PAGE = f"/admin/products/{KETTLE}/images"

# -- images made here ----------------------------------------------------------------------


@functools.cache
def photo_with_gps(size=(1000, 700), orientation: int = 6) -> bytes:
    """A JPEG as a phone writes it: camera, GPS position, an orientation to apply, a comment."""
    image = Image.new("RGB", size, (200, 60, 40))
    image.paste((20, 60, 200), (0, 0, size[0] // 2, size[1] // 4))  # a mark: top-left is blue
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0112] = orientation  # Orientation: 6 = turn 90° clockwise to show
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (51.0, 30.0, 12.5)  # GPSLatitudeRef, GPSLatitude
    gps[3], gps[4] = "W", (0.0, 7.0, 39.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, comment=b"taken at home", quality=90)
    return out.getvalue()


def png_with_alpha(size=(700, 300)) -> bytes:
    image = Image.new("RGBA", size, (0, 128, 0, 128))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def small_webp(size=(200, 150)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 10, 10)).save(out, "WEBP")
    return out.getvalue()


@functools.cache
def bomb_png(size=(8000, 6250)) -> bytes:
    """50 megapixels of one colour: a few kilobytes of PNG (made once, ~0.15 s)."""
    out = io.BytesIO()
    Image.new("1", size, 1).save(out, "PNG")
    return out.getvalue()


def gif() -> bytes:
    out = io.BytesIO()
    Image.new("P", (40, 40)).save(out, "GIF")
    return out.getvalue()


SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56) + b"\x90" * 2000
PE = b"MZ\x90\x00\x03\x00\x00\x00" + bytes(120) + b"PE\x00\x00" + b"\x90" * 2000


# -- steps -------------------------------------------------------------------------------------


def upload(browser: Shopper, data: bytes, filename: str = "photo.jpg", alt="A blue kettle"):
    return browser.client.post(
        PAGE,
        data={"csrf_token": browser.csrf(), "alt": alt, "image": (io.BytesIO(data), filename)},
        content_type="multipart/form-data",
    )


def traces(app) -> dict[str, int]:
    """What an upload leaves behind."""
    with app.extensions["shop"].engines.primary.connect() as conn:
        return {
            "blobs": conn.execute(select(func.count()).select_from(image_blobs)).scalar_one(),
            "images": conn.execute(select(func.count()).select_from(product_images)).scalar_one(),
            "audit": conn.execute(
                select(func.count()).where(audit_log.c.action.like("product.image%"))
            ).scalar_one(),
        }


def image_rows(app, product_id: int = KETTLE) -> list:
    with app.extensions["shop"].engines.primary.connect() as conn:
        return conn.execute(
            select(product_images)
            .where(product_images.c.product_id == product_id)
            .order_by(product_images.c.position)
        ).all()


def stored(app, variant: dict) -> bytes:
    found = app.extensions["shop"].images.get(f"{variant['hash']}.webp")
    assert found is not None and found[1] == "image/webp"
    return found[0]


NOTHING = {"blobs": 0, "images": 0, "audit": 0}


@pytest.fixture
def staff(app) -> Shopper:
    return back_office_user(app, "staff")


# -- uploads that work ---------------------------------------------------------------------------


def test_a_photo_is_stored_upright_without_its_metadata_at_three_widths(app, staff):
    page = staff.client.get(PAGE)
    assert page.status_code == 200
    form = page.get_data(as_text=True)
    assert '<input type="file" name="image" accept="image/jpeg,image/png,image/webp"' in form
    assert 'name="alt"' in form and "Upload image" in form

    sent = upload(staff, photo_with_gps())
    assert sent.status_code == 303
    assert sent.headers["Location"].startswith(PAGE + "?done=")
    (row,) = image_rows(app)
    assert row.alt == "A blue kettle" and row.position == 1
    variants = json.loads(row.variants)
    # Orientation 6 applied: the 1000 x 700 photo is shown 700 wide, 1000 high.
    assert [(v["width"], v["height"]) for v in variants] == [(320, 457), (640, 914), (700, 1000)]
    for variant in variants:
        data = stored(app, variant)
        assert hashlib.sha256(data).hexdigest() == variant["hash"]
        with Image.open(io.BytesIO(data)) as shown:
            assert shown.format == "WEBP"
            assert not shown.getexif(), "EXIF (GPS, camera) must not be stored"
            assert not {"exif", "xmp", "icc_profile", "comment"} & set(shown.info)
            assert shown.size == (variant["width"], variant["height"])
            # Upright: the blue mark of the sensor's top-left is now at the top right.
            r, g, b = shown.convert("RGB").getpixel((shown.width - 5, 5))
            assert b > 150 and r < 100
        assert b"PhoneMaker" not in data and b"taken at home" not in data
    assert traces(app) == {"blobs": 3, "images": 1, "audit": 1}
    entry = page_text(staff.client.get("/admin/"))  # the page still works for staff
    assert entry


@pytest.mark.parametrize(
    ("data", "name", "widths"),
    [
        (png_with_alpha(), "logo.png", [320, 640, 700]),
        (small_webp(), "tiny.webp", [200]),  # never wider than the original
    ],
    ids=["png", "webp"],
)
def test_png_and_webp_are_taken_and_never_enlarged(app, staff, data, name, widths):
    assert upload(staff, data, name).status_code == 303
    (row,) = image_rows(app)
    variants = json.loads(row.variants)
    assert [v["width"] for v in variants] == widths
    if name.endswith(".png"):
        with Image.open(io.BytesIO(stored(app, variants[0]))) as shown:
            assert shown.mode == "RGBA"  # transparency kept


def test_the_widest_variant_is_1280_whatever_the_original():
    wide = Image.new("RGB", (3000, 60), (1, 2, 3))  # thin: cheap to encode
    variants = image_rules.make_variants(wide)
    assert [(v.width, v.height) for v in variants] == [(320, 6), (640, 13), (1280, 26)]


def test_the_same_picture_twice_is_stored_once(app, staff):
    data = small_webp()
    assert upload(staff, data).status_code == 303
    assert upload(staff, data, alt="The kettle again").status_code == 303
    assert traces(app) == {"blobs": 1, "images": 2, "audit": 2}


def test_the_format_comes_from_the_content_not_the_name(app, staff):
    assert upload(staff, png_with_alpha(), "not-really.gif").status_code == 303


# -- uploads that are refused --------------------------------------------------------------------

REFUSED = [
    ("elf-renamed", ELF, "photo.jpg", 415, "program"),
    ("exe-renamed", PE, "photo.jpg", 415, "program"),
    ("png-garbage", b"\x89PNG\r\n\x1a\n" + b"garbage!" * 64, "x.png", 400, "damaged"),
    ("truncated-jpeg", None, "cut.jpg", 400, "damaged or incomplete"),
    ("50-megapixels", None, "bomb.png", 413, "too many pixels"),
    ("gif", None, "anim.gif", 415, "GIF"),
    ("svg", SVG, "drawing.svg", 415, "SVG"),
    ("empty", b"", "empty.jpg", 400, "empty"),
]


def _refused_data(label: str, data: bytes | None) -> bytes:
    if label == "truncated-jpeg":
        whole = photo_with_gps((400, 300))
        return whole[: len(whole) * 2 // 3]
    if label == "50-megapixels":
        return bomb_png()
    if label == "gif":
        return gif()
    assert data is not None
    return data


@pytest.mark.parametrize(
    ("label", "data", "name", "status", "says"), REFUSED, ids=[r[0] for r in REFUSED]
)
def test_a_bad_upload_gets_a_4xx_and_leaves_nothing(app, staff, label, data, name, status, says):
    answer = upload(staff, _refused_data(label, data), name)
    assert answer.status_code == status, page_text(answer)[:400]
    text = page_text(answer)
    assert says in text
    assert "Upload image" in text  # the form again, to try another file
    assert traces(app) == NOTHING


def test_a_file_over_the_limit_is_refused_before_it_is_read(make_app):
    app = make_app(image_max_bytes=100_000)
    staff = back_office_user(app, "staff")
    over = photo_with_gps() + bytes(100_000)  # a real photo, padded past the limit
    answer = upload(staff, over)
    assert answer.status_code == 413
    assert "the most the shop takes is 0.1 MB" in page_text(answer)
    # A body past the image plus an ordinary form is refused before the form is parsed.
    answer = upload(staff, bytes(200_000))
    assert answer.status_code == 413
    assert "too large: at most 161 KiB can be sent here" in page_text(answer)
    assert traces(app) == NOTHING


def test_only_staff_may_send_a_large_body(app, shopper):
    """Anyone else (a visitor, a customer) gets the shop's ordinary limit, exactly as at an
    address that does not exist: the back office stays invisible."""
    customer = Shopper(app.test_client(), app)
    customer.sign_up("carol@example.com")
    for browser in (shopper, customer):
        answers = []
        for path in (PAGE, "/no-such" + PAGE):
            data = {"csrf_token": browser.csrf(), "image": (io.BytesIO(bytes(200_000)), "x.jpg")}
            answers.append(browser.client.post(path, data=data, content_type="multipart/form-data"))
        here, elsewhere = answers
        assert here.status_code == elsewhere.status_code == 413
        assert page_text(here) == page_text(elsewhere)
        assert "image" not in page_text(here)
    assert traces(app) == NOTHING


def test_alt_text_is_required_and_bounded(app, staff):
    assert upload(staff, small_webp(), alt="   ").status_code == 400
    assert upload(staff, small_webp(), alt="x" * 201).status_code == 400
    answer = staff.client.post(
        PAGE,
        data={"csrf_token": staff.csrf(), "alt": "no file"},
        content_type="multipart/form-data",
    )
    assert answer.status_code == 400 and "Choose an image file" in page_text(answer)
    assert traces(app) == NOTHING


def test_a_bomb_is_refused_before_a_pixel_is_decoded(monkeypatch):
    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageTooLarge, match="too many pixels"):
        image_rules.process_upload(bomb_png(), max_bytes=5_000_000)


def test_an_unknown_product_has_no_images_page(app, staff):
    assert staff.client.get("/admin/products/999999/images").status_code == 404
    assert upload_to(staff, 999999).status_code == 404
    assert traces(app) == NOTHING


def upload_to(browser: Shopper, product_id: int):
    return browser.client.post(
        f"/admin/products/{product_id}/images",
        data={"csrf_token": browser.csrf(), "alt": "x", "image": (io.BytesIO(small_webp()), "a")},
        content_type="multipart/form-data",
    )


# -- serving ---------------------------------------------------------------------------------


def _first_variant(app) -> dict:
    return json.loads(image_rows(app)[0].variants)[0]


def test_an_image_is_served_immutable_by_its_hash(app, staff):
    upload(staff, png_with_alpha())
    variant = _first_variant(app)
    path = f"/images/{variant['hash']}.webp"
    for browser in (Shopper(app.test_client(), app), staff):  # signed in or not: the same
        answer = browser.client.get(path)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "image/webp"
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert answer.headers["ETag"] == f'"{variant["hash"]}"'
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "Cookie" not in answer.headers.get("Vary", "")
        assert hashlib.sha256(answer.data).hexdigest() == variant["hash"]
    again = app.test_client().get(path, headers={"If-None-Match": f'"{variant["hash"]}"'})
    assert again.status_code == 304 and again.data == b""
    assert again.headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_unknown_and_malformed_image_names_are_404(app, monkeypatch):
    client = app.test_client()
    assert client.get("/images/" + "a" * 64 + ".webp").status_code == 404
    asked = []
    monkeypatch.setattr(app.extensions["shop"].images, "get", lambda key: asked.append(key))
    for name in ("abc.webp", "A" * 64 + ".webp", "a" * 64 + ".gif", "a" * 65 + ".webp", "..%2F"):
        assert client.get("/images/" + name).status_code == 404, name
    assert asked == []  # refused by its shape, the store never asked


# -- pages -----------------------------------------------------------------------------------


def _img_tags(response) -> list[str]:
    return re.findall(r"<img [^>]*>", response.get_data(as_text=True))


def _next_load_showing(client, path: str) -> list[str]:
    """The page's images once the instance has heard of the change: its in-process tier is
    told by a pub/sub message, which arrives within milliseconds, not before the next line."""
    deadline = time.monotonic() + 3
    while not (tags := _img_tags(client.get(path))) and time.monotonic() < deadline:
        time.sleep(0.01)
    return tags


def test_pages_show_the_image_and_another_instance_sees_it_next_load(make_app):
    first, second = make_app(), make_app()
    for app in (first, second):
        wait_for_local_tier(app)  # each instance's memory, told of changes by pub/sub
    visitor = second.test_client()
    assert _img_tags(visitor.get("/")) == []  # cached on the second instance, no images yet
    assert _img_tags(visitor.get(f"/products/{KETTLE}")) == []
    staff = back_office_user(first, "staff")
    assert upload(staff, photo_with_gps(), alt="Kettle on a stove").status_code == 303
    (tag,) = _next_load_showing(visitor, "/")
    assert 'alt="Kettle on a stove"' in tag and 'loading="lazy"' in tag
    assert re.search(r'srcset="/images/[0-9a-f]{64}\.webp 320w, .* 640w, .* 700w"', tag)
    assert 'width="320" height="457"' in tag
    main, *_ = _next_load_showing(visitor, f"/products/{KETTLE}")
    assert 'alt="Kettle on a stove"' in main and 'width="640" height="914"' in main
    assert "srcset=" in main and 'fetchpriority="high"' in main  # above the fold: not lazy
    # A second image: the product page lists it, lazily; the grid keeps the first.
    assert upload(staff, small_webp(), alt="Its lid").status_code == 303
    deadline = time.monotonic() + 3
    while len(tags := _img_tags(visitor.get(f"/products/{KETTLE}"))) < 2:
        assert time.monotonic() < deadline, "the second instance never heard of the change"
        time.sleep(0.01)
    assert len(tags) == 2 and 'loading="lazy"' in tags[1] and 'alt="Its lid"' in tags[1]
    assert len(_img_tags(visitor.get("/"))) == 1
    # Products without images keep the letter.
    assert f'href="/products/{MUG}" aria-hidden="true" tabindex="-1">R</a>' in (
        visitor.get("/").get_data(as_text=True)
    )


def test_a_grid_page_reads_its_images_in_one_query_and_none_when_warm(app, staff):
    counter = StatementCounter(app.extensions["shop"].engines.primary)
    client = app.test_client()

    def cold_grid() -> int:
        app.extensions["shop"].catalogue.invalidate([KETTLE, MUG], structural=True)
        before = counter.count
        assert client.get("/").status_code == 200
        return counter.count - before

    without = cold_grid()
    upload(staff, small_webp())
    upload_to(staff, MUG)
    assert len(_img_tags(client.get("/"))) == 2
    assert cold_grid() == without  # the same statements: one query for all images
    for path in ("/", f"/products/{KETTLE}"):
        client.get(path)
        before = counter.count
        assert client.get(path).status_code == 200
        assert counter.count == before, f"a warm {path} read the database"


def test_the_api_gives_image_urls(app, staff):
    upload(staff, png_with_alpha(), alt="Green")
    product = app.test_client().get(f"/api/v1/products/{KETTLE}").get_json()
    assert product["image"]["alt"] == "Green"
    assert [v["width"] for v in product["image"]["variants"]] == [320, 640, 700]
    assert product["images"] == [product["image"]]
    url = product["image"]["variants"][0]["url"]
    assert re.fullmatch(r"/images/[0-9a-f]{64}\.webp", url)
    listed = app.test_client().get("/api/v1/products?category=kitchen").get_json()["items"]
    assert listed[0]["image"] == product["image"] and listed[1]["image"] is None


def test_a_public_base_url_moves_the_links(make_app):
    app = make_app(image_public_base_url="https://cdn.example.com/shop-images/")
    staff = back_office_user(app, "staff")
    upload(staff, small_webp())
    (tag,) = _img_tags(app.test_client().get("/"))
    assert re.search(r'src="https://cdn\.example\.com/shop-images/[0-9a-f]{64}\.webp"', tag)


# -- managing ----------------------------------------------------------------------------------


def test_staff_reorder_describe_and_remove_images_each_audited(app, staff):
    upload(staff, small_webp((200, 150)), alt="First")
    upload(staff, small_webp((300, 150)), alt="Second")
    first, second = (row.id for row in image_rows(app))
    base = f"{PAGE}/{second}"
    assert staff.post_form(f"{base}/move", {"direction": "up"}).status_code == 303
    assert [row.alt for row in image_rows(app)] == ["Second", "First"]
    shown = _img_tags(app.test_client().get(f"/products/{KETTLE}"))
    assert 'alt="Second"' in shown[0]  # the cache was refreshed
    assert staff.post_form(f"{base}/move", {"direction": "up"}).status_code == 303  # first already
    assert staff.post_form(f"{base}/move", {"direction": "sideways"}).status_code == 400
    assert staff.post_form(f"{base}/alt", {"alt": "Lid, closed"}).status_code == 303
    assert staff.post_form(f"{base}/alt", {"alt": ""}).status_code == 400
    assert staff.post_form(f"{PAGE}/{first}/delete").status_code == 303
    assert [row.alt for row in image_rows(app)] == ["Lid, closed"]
    assert staff.post_form(f"{PAGE}/{first}/delete").status_code == 404
    assert staff.post_form(f"/admin/products/{MUG}/images/{second}/delete").status_code == 404
    with app.extensions["shop"].engines.primary.connect() as conn:
        actions = conn.execute(
            select(audit_log.c.action)
            .where(audit_log.c.action.like("product.image%"))
            .order_by(audit_log.c.id)
        ).scalars()
        assert list(actions) == [
            "product.image_add",
            "product.image_add",
            "product.image_move",
            "product.image_alt",
            "product.image_remove",
        ]
    assert 'alt="Lid, closed"' in _img_tags(app.test_client().get(f"/products/{KETTLE}"))[0]


# -- settings and the demo -----------------------------------------------------------------------


def test_s3_storage_needs_a_bucket():
    with pytest.raises(ConfigError, match="SHOP_IMAGE_S3_BUCKET"):
        Settings(image_storage="s3").validated()
    with pytest.raises(ConfigError, match="SHOP_IMAGE_STORAGE"):
        Settings(image_storage="disk").validated()
    with pytest.raises(ConfigError, match="SHOP_IMAGE_PUBLIC_BASE_URL"):
        Settings(image_public_base_url="cdn.example.com").validated()
    assert Settings(image_storage="s3", image_s3_bucket="b").validated()


def test_the_demo_seed_shares_a_few_pictures_and_the_bulk_seed_makes_none(tmp_path):
    from sqlalchemy import create_engine

    from shop.db import Engines
    from shop.image_storage import DatabaseImageStore
    from shop.migrate import upgrade
    from shop.seed import seed_catalogue, seed_demo_if_empty

    engine = create_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    upgrade(engine)
    store = DatabaseImageStore(Engines(primary=engine, replicas=[]))
    assert seed_demo_if_empty(engine, 40, images=store) == 40
    with engine.connect() as conn:
        rows = conn.execute(select(product_images.c.variants, product_images.c.alt)).all()
        blobs = conn.execute(select(func.count()).select_from(image_blobs)).scalar_one()
    assert len(rows) == 40
    assert len({variants for variants, _ in rows}) == 8  # one picture per category
    assert blobs == 16  # 8 pictures x 2 widths (640 x 480 made: 320 and 640)
    assert all(alt.startswith("Demo picture for ") for _, alt in rows)
    assert seed_catalogue(engine, 100) == 100
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(product_images)).scalar_one() == 40
    engine.dispose()
