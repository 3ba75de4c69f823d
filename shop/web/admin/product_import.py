"""Bulk price and stock edits from a CSV file: upload, preview, apply (all or nothing).

The preview page carries the file's text back in a hidden field (no state is kept between the
two requests); applying checks it all again in one transaction (shop.product_csv).
"""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from ... import product_csv
from ...errors import EditConflict, FormError, InvalidInput
from ..context import services
from . import actor, allow_body, bp, now, refresh_catalogue

# The file, or on apply its text and what the preview saw, plus the form's other fields.
MAX_IMPORT_BODY = 2 * product_csv.MAX_CSV_BYTES


def _page(status: int = 200, **context):
    for name in ("report", "text", "error"):
        context.setdefault(name, None)
    context.setdefault("reason", request.form.get("reason", ""))
    body = render_template(
        "admin/product_import.html",
        max_rows=product_csv.MAX_CSV_ROWS,
        max_kib=product_csv.MAX_CSV_BYTES // 1024,
        **context,
    )
    return body, status


def _preview(text: str, reason: str, status: int = 200, **context):
    with services().engines.primary.connect() as conn:
        report = product_csv.preview(conn, text, reason=reason)
    if not report.ok:
        status = 400
    return _page(status, report=report, text=text, reason=reason, **context)


@bp.get("/products/import")
def product_import():
    return _page()


@bp.post("/products/import")
@allow_body(MAX_IMPORT_BODY)
def product_import_preview():
    """Check every line; show what would change, or every problem (400)."""
    upload = request.files.get("file")
    reason = request.form.get("reason", "")
    try:
        if upload is None or not upload.filename:
            raise InvalidInput("Choose a CSV file to upload.", field="file")
        text = product_csv.decode(upload.read(product_csv.MAX_CSV_BYTES + 1))
    except FormError as exc:
        return _page(exc.status, error=exc)
    return _preview(text, reason)


@bp.post("/products/import/apply")
@allow_body(MAX_IMPORT_BODY)
def product_import_apply():
    text = request.form.get("csv", "")
    reason = request.form.get("reason", "")
    try:
        if not text:
            raise InvalidInput("There is nothing to apply: upload a file first.", field="file")
        product_csv.check_text(text)
        with services().engines.primary.begin() as conn:
            changed = product_csv.apply(
                conn, actor(), text, reason=reason, seen=request.form.get("seen", ""), at=now()
            )
    except product_csv.ImportRefused as exc:
        return _page(exc.status, report=exc.report, text=text, reason=reason, error=exc)
    except EditConflict as exc:
        return _preview(text, reason, exc.status, error=exc)
    except FormError as exc:
        return _page(exc.status, error=exc)
    args: dict[str, Any] = {"done": f"{len(changed)} product(s) changed from the CSV file."}
    if changed:
        warning = refresh_catalogue(changed)
        if warning:
            args["warning"] = warning
    return redirect(url_for("admin.products", **args), 303)
