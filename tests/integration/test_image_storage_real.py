"""The image stores against real servers: PostgreSQL's ``bytea`` (the default store), and S3
as spoken by moto's server mode.

moto is a local STAND-IN for S3, not S3: it runs in this process on a free port and boto3
talks HTTP to it exactly as it would to AWS (signed requests, the same API calls), but no test
here, nor anywhere in the shop, has been run against real AWS S3 (bucket policies, KMS, the
task role's credentials are not exercised).
"""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image
from sqlalchemy import create_engine, func, select

from shop.db import Engines
from shop.image_storage import CACHE_CONTROL, DatabaseImageStore, S3ImageStore
from shop.images import make_variants
from shop.models import image_blobs
from tests.support import KETTLE, back_office_user, free_port


def _variant():
    (variant,) = make_variants(Image.new("RGB", (300, 200), (200, 20, 20)))
    return variant


def test_the_database_store_keeps_bytes_as_bytea_once_per_hash(pg_url):
    engine = create_engine(pg_url)
    store = DatabaseImageStore(Engines(primary=engine))
    variant = _variant()
    store.put(variant.name, variant.data, variant.content_type)
    store.put(variant.name, variant.data, variant.content_type)  # the same key: a no-op
    data, content_type = store.get(variant.name)
    assert data == variant.data and content_type == "image/webp"
    assert hashlib.sha256(data).hexdigest() == variant.hash
    assert store.get("0" * 64 + ".webp") is None
    assert store.get(variant.hash + ".png") is None  # the key names the type too
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(image_blobs)).scalar_one() == 1
        kind = conn.exec_driver_sql(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = 'image_blobs' AND column_name = 'data' "
            "AND table_schema = current_schema()"
        ).scalar_one()
    assert kind == "bytea"
    engine.dispose()


def test_an_upload_on_postgresql_is_served_and_shown(make_real_app):
    app = make_real_app()
    staff = back_office_user(app, "staff")
    out = io.BytesIO()
    Image.new("RGB", (900, 600), (10, 120, 200)).save(out, "JPEG")
    sent = staff.client.post(
        f"/admin/products/{KETTLE}/images",
        data={
            "csrf_token": staff.csrf(),
            "alt": "Blue",
            "image": (io.BytesIO(out.getvalue()), "a"),
        },
        content_type="multipart/form-data",
    )
    assert sent.status_code == 303
    product = app.test_client().get(f"/api/v1/products/{KETTLE}").get_json()
    url = product["image"]["variants"][-1]["url"]
    served = app.test_client().get(url)
    assert served.status_code == 200 and served.headers["Cache-Control"] == CACHE_CONTROL
    with Image.open(io.BytesIO(served.data)) as shown:
        assert shown.size == (900, 600)


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 stand-in on a free port, for this module (see the module's docstring)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):
    import secrets

    import boto3

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    name = f"shop-images-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return name


def test_the_s3_store_writes_objects_with_their_type_and_immutable_caching(s3_endpoint, bucket):
    """Against moto's server (a stand-in), not AWS."""
    store = S3ImageStore(bucket, prefix="images/", endpoint_url=s3_endpoint)
    variant = _variant()
    store.put(variant.name, variant.data, variant.content_type)
    assert store.get(variant.name) == (variant.data, "image/webp")
    assert store.get("0" * 64 + ".webp") is None
    head = store.client.head_object(Bucket=bucket, Key=f"images/{variant.name}")
    assert head["ContentType"] == "image/webp"
    assert head["CacheControl"] == CACHE_CONTROL
    with pytest.raises(ValueError):
        store.put("../escape", b"x", "image/webp")


def test_the_shop_uploads_to_and_serves_from_s3_when_configured(make_app, s3_endpoint, bucket):
    """SHOP_IMAGE_STORAGE=s3 end to end, on the stand-in: the database gets no image bytes."""
    app = make_app(
        image_storage="s3",
        image_s3_bucket=bucket,
        image_s3_prefix="p/",
        image_s3_endpoint_url=s3_endpoint,
    )
    assert isinstance(app.extensions["shop"].images, S3ImageStore)
    staff = back_office_user(app, "staff")
    out = io.BytesIO()
    Image.new("RGB", (400, 300), (0, 200, 0)).save(out, "PNG")
    sent = staff.client.post(
        f"/admin/products/{KETTLE}/images",
        data={
            "csrf_token": staff.csrf(),
            "alt": "Green",
            "image": (io.BytesIO(out.getvalue()), "g"),
        },
        content_type="multipart/form-data",
    )
    assert sent.status_code == 303
    url = app.test_client().get(f"/api/v1/products/{KETTLE}").get_json()["image"]["variants"][0]
    served = app.test_client().get(url["url"])
    assert served.status_code == 200 and served.headers["Content-Type"] == "image/webp"
    listed = app.extensions["shop"].images.client.list_objects_v2(Bucket=bucket, Prefix="p/")
    assert len(listed["Contents"]) == 2  # 320 and 400 wide
    with app.extensions["shop"].engines.primary.connect() as conn:
        assert conn.execute(select(func.count()).select_from(image_blobs)).scalar_one() == 0
