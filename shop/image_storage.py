"""Where image variants live: the database (the default) or an S3 bucket.

Keys are ``<sha256>.<ext>`` (:attr:`shop.images.Variant.name`): content-addressed, so a key
is written at most once with one content, a second put of it is a no-op, and nothing is ever
updated. Nothing is deleted either: a variant may be shared by several products' images
(the demo catalogue shares eight), and a removed image's variants stay until a clean-up that
checks no image names them (none yet).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from .config import Settings
from .db import Engines
from .images import EXTENSIONS
from .models import image_blobs

if TYPE_CHECKING:
    from datetime import datetime

# A key as the shop makes them; anything else is no image (and is not looked up).
KEY = re.compile(r"^([0-9a-f]{64})\.(webp|jpg|png)$")
CACHE_CONTROL = "public, max-age=31536000, immutable"
_TYPES = {ext: content_type for content_type, ext in EXTENSIONS.items()}


class ImageStore(Protocol):
    """Put and get variants by key; both backends keep the content type with the bytes."""

    def put(self, key: str, data: bytes, content_type: str) -> None: ...

    def get(self, key: str) -> tuple[bytes, str] | None: ...


def parse_key(key: str) -> tuple[str, str] | None:
    """``(hash, content type)`` of a well-formed key, else None."""
    match = KEY.match(key)
    return (match.group(1), _TYPES[match.group(2)]) if match else None


class DatabaseImageStore:
    """Variants in the ``image_blobs`` table of the shop's database (PostgreSQL ``bytea``, or
    the embedded SQLite): nothing more to run or configure, on every topology. Writes go to the
    primary; reads to a replica, falling back to the primary. Each variant is read once per
    browser and CDN (immutable caching), so this is a cold path after a page's first load."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with self.engines.primary.begin() as conn:
            put_blob(conn, key, data, content_type)

    def get(self, key: str) -> tuple[bytes, str] | None:
        parsed = parse_key(key)
        if parsed is None:
            return None
        digest, content_type = parsed
        row = self.engines.read(
            lambda conn: conn.execute(
                select(image_blobs.c.data, image_blobs.c.content_type).where(
                    image_blobs.c.hash == digest
                )
            ).first()
        )
        if row is None or row.content_type != content_type:
            return None
        return bytes(row.data), row.content_type


def put_blob(
    conn: Connection, key: str, data: bytes, content_type: str, *, at: datetime | None = None
) -> None:
    """Insert a variant in the caller's transaction; a key already there is left alone."""
    parsed = parse_key(key)
    if parsed is None or parsed[1] != content_type:
        raise ValueError(f"not an image key for {content_type}: {key!r}")
    values: dict[str, Any] = {
        "hash": parsed[0],
        "content_type": content_type,
        "data": data,
        "size": len(data),
    }
    if at is not None:
        values["created_at"] = at
    if conn.dialect.name == "postgresql":
        conn.execute(pg_insert(image_blobs).values(**values).on_conflict_do_nothing())
    elif conn.dialect.name == "sqlite":
        conn.execute(sqlite_insert(image_blobs).values(**values).on_conflict_do_nothing())
    else:  # pragma: no cover - the shop runs on these two
        conn.execute(insert(image_blobs).values(**values))


class S3ImageStore:
    """Variants as objects in an S3 bucket (``<prefix><key>``), written with their content type
    and the immutable Cache-Control, so the bucket (or a CDN in front of it) can serve them as
    the shop would. boto3 is imported only when this store is built; credentials come from
    boto3's usual chain (the ECS task role on AWS)."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        if client is None:
            import boto3  # lazily: the database store needs no AWS SDK loaded

            # The region and credentials: boto3's own chain (AWS_REGION, which ECS sets, and
            # the task role).
            client = boto3.client("s3", endpoint_url=endpoint_url)
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if parse_key(key) is None:
            raise ValueError(f"not an image key: {key!r}")
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            ContentType=content_type,
            CacheControl=CACHE_CONTROL,
        )

    def get(self, key: str) -> tuple[bytes, str] | None:
        if parse_key(key) is None:
            return None
        try:
            found = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except self.client.exceptions.NoSuchKey:
            return None
        return found["Body"].read(), found["ContentType"]


def store_from_settings(settings: Settings, engines: Engines) -> ImageStore:
    """The store SHOP_IMAGE_STORAGE names (the settings have checked an S3 one has a bucket)."""
    if settings.image_storage == "s3":
        assert settings.image_s3_bucket is not None
        return S3ImageStore(
            settings.image_s3_bucket,
            prefix=settings.image_s3_prefix,
            endpoint_url=settings.image_s3_endpoint_url,
        )
    return DatabaseImageStore(engines)
