"""Product images: served by their content's hash, and linked from pages and the API.

``GET /images/<sha256>.<ext>`` answers the same bytes forever (the name is their hash), so it
is cached as immutable by browsers and any CDN, and a revalidation (``If-None-Match``) is
answered 304 without a look at the store. With ``SHOP_IMAGE_PUBLIC_BASE_URL`` set, pages and
the API link there instead (a CDN in front of this route, or of the S3 bucket).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from werkzeug.exceptions import NotFound as NoSuchPage

from ..image_storage import CACHE_CONTROL, parse_key
from ..images import EXTENSIONS
from .context import services
from .errors import NO_PAGE

bp = Blueprint("images", __name__)


@bp.get("/images/<name>")
def image(name: str):
    parsed = parse_key(name)
    if parsed is None:  # not a name the shop makes: no such image, and no look-up
        raise NoSuchPage(NO_PAGE)
    digest = parsed[0]
    if request.if_none_match.contains(digest):
        response = Response(status=304)
    else:
        found = services().images.get(name)
        if found is None:
            raise NoSuchPage("There is no such image.")
        data, content_type = found
        response = Response(data, content_type=content_type)
    response.set_etag(digest)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


def _base() -> str:
    configured = services().settings.image_public_base_url
    return configured.rstrip("/") if configured else request.script_root + "/images"


def image_url(variant: dict[str, Any]) -> str:
    """Where a variant (as the catalogue caches it) is fetched from."""
    return f"{_base()}/{variant['hash']}.{EXTENSIONS[variant['type']]}"


def srcset(image: dict[str, Any]) -> str:
    """The ``srcset`` of an image: each variant's URL and width."""
    base = _base()
    return ", ".join(
        f"{base}/{v['hash']}.{EXTENSIONS[v['type']]} {v['width']}w" for v in image["variants"]
    )


def src_variant(image: dict[str, Any], width: int) -> dict[str, Any]:
    """The narrowest variant at least ``width`` wide (else the widest): the ``src`` for
    browsers without ``srcset``, and the ``width``/``height`` that reserve its space."""
    variants = image["variants"]
    return next((v for v in variants if v["width"] >= width), variants[-1])


def public_image(image: dict[str, Any] | None) -> dict[str, Any] | None:
    """An image as the API gives it: its text and each variant's URL and size."""
    if image is None:
        return None
    return {
        "alt": image["alt"],
        "variants": [
            {"width": v["width"], "height": v["height"], "url": image_url(v)}
            for v in image["variants"]
        ],
    }
