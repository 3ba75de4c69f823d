"""A product's images: upload, remove, reorder, and the text read out instead of each.

Reached from the product's edit page (the catalogue's), not the navigation. An upload is
checked and re-encoded (shop/images.py) before anything is stored; its variants go to the
image store, then the image's row and its audit entry in one transaction; then every
instance's cached copy of the product is dropped, so shoppers see it on their next page.
"""

from __future__ import annotations

from flask import current_app, redirect, render_template, request, url_for
from sqlalchemy import select

from ... import product_images
from ...config import Settings
from ...errors import FormError, InvalidImage, NotFound
from ...images import ACCEPTED_FORMATS, MAX_ALT_LENGTH, MAX_PIXELS, check_alt, process_upload
from ...models import products
from ..context import services
from . import actor, allow_body, bp, now, refresh_catalogue

ACCEPT = "image/jpeg,image/png,image/webp"
# The catalogue's page of a product (its own module), linked back to when it exists.
PRODUCT_PAGE = "admin.product_edit"


def _upload_limit(settings: Settings) -> int:
    """The image plus an ordinary form around it (the CSRF token, the alternative text)."""
    return settings.image_max_bytes + settings.max_body_bytes


def _product_name(product_id: int) -> str:
    with services().engines.primary.connect() as conn:
        name = conn.execute(select(products.c.name).where(products.c.id == product_id)).scalar()
    if name is None:
        raise NotFound(f"There is no product {product_id}.")
    return name


def _page(product_id: int, *, status: int = 200, error: FormError | None = None, alt: str = ""):
    name = _product_name(product_id)
    settings = services().settings
    has_product_page = PRODUCT_PAGE in current_app.view_functions
    body = render_template(
        "admin/product_images.html",
        product={"id": product_id, "name": name},
        back=url_for(PRODUCT_PAGE, product_id=product_id) if has_product_page else None,
        images=product_images.images_of(services().engines.primary, product_id),
        accept=ACCEPT,
        formats=", ".join("WebP" if f == "WEBP" else f for f in ACCEPTED_FORMATS),
        max_megabytes=f"{settings.image_max_bytes / 1e6:.1f}",
        max_megapixels=MAX_PIXELS // 1_000_000,
        max_alt=MAX_ALT_LENGTH,
        max_images=product_images.MAX_IMAGES,
        alt=alt,
        error=error,
        done=request.args.get("done"),
        warning=request.args.get("warning"),
    )
    return body, error.status if error else status, error.headers() if error else {}


def _back(product_id: int, done: str, warning: str | None):
    target = url_for("admin.product_images", product_id=product_id, done=done, warning=warning)
    return redirect(target, code=303)


# The endpoint the catalogue's product page links to (by this name).
@bp.get("/products/<id:product_id>/images", endpoint="product_images")
def images_page(product_id: int):
    return _page(product_id)


@bp.post("/products/<id:product_id>/images")
@allow_body(_upload_limit)
def product_images_upload(product_id: int):
    """Upload an image (``image``, a file) with its alternative text (``alt``)."""
    _product_name(product_id)
    alt = request.form.get("alt", "")
    settings = services().settings
    try:
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            raise InvalidImage("Choose an image file to upload.", field="image")
        check_alt(alt)
        # One byte more than allowed tells "too large" apart without reading further.
        data = upload.stream.read(settings.image_max_bytes + 1)
        variants = process_upload(data, max_bytes=settings.image_max_bytes)
        for variant in variants:
            services().images.put(variant.name, variant.data, variant.content_type)
        with services().engines.primary.begin() as conn:
            product_images.add(conn, actor(), product_id, variants=variants, alt=alt, at=now())
    except FormError as exc:
        return _page(product_id, error=exc, alt=alt[:MAX_ALT_LENGTH])
    warning = refresh_catalogue([product_id])
    return _back(product_id, "Image added", warning)


@bp.post("/products/<id:product_id>/images/<id:image_id>/delete")
def product_image_delete(product_id: int, image_id: int):
    with services().engines.primary.begin() as conn:
        product_images.remove(conn, actor(), product_id, image_id, at=now())
    return _back(product_id, "Image removed", refresh_catalogue([product_id]))


@bp.post("/products/<id:product_id>/images/<id:image_id>/move")
def product_image_move(product_id: int, image_id: int):
    """Move an image one place ``up`` or ``down`` (``direction``)."""
    try:
        with services().engines.primary.begin() as conn:
            moved = product_images.move(
                conn,
                actor(),
                product_id,
                image_id,
                direction=request.form.get("direction", ""),
                at=now(),
            )
    except FormError as exc:
        if isinstance(exc, NotFound):
            raise
        return _page(product_id, error=exc)
    if not moved:
        return _back(product_id, "The image is already there", None)
    return _back(product_id, "Image moved", refresh_catalogue([product_id]))


@bp.post("/products/<id:product_id>/images/<id:image_id>/alt")
def product_image_alt(product_id: int, image_id: int):
    """Change an image's alternative text (``alt``)."""
    try:
        with services().engines.primary.begin() as conn:
            changed = product_images.describe(
                conn, actor(), product_id, image_id, alt=request.form.get("alt", ""), at=now()
            )
    except FormError as exc:
        if isinstance(exc, NotFound):
            raise
        return _page(product_id, error=exc)
    if not changed:
        return _back(product_id, "The text is unchanged", None)
    return _back(product_id, "Text saved", refresh_catalogue([product_id]))
