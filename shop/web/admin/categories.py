"""Categories: create, rename, and their order in the shop's category bar."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from ... import category_admin
from ...errors import FormError
from ..context import services
from ..errors import form_error
from . import actor, add_section, bp, now, refresh_catalogue

add_section("admin.categories", "Categories", order=20)


def _page(**context):
    with services().engines.primary.connect() as conn:
        categories = category_admin.list_categories(conn)
    context.setdefault("slug", "")
    context.setdefault("name", "")
    context.setdefault("failed", None)  # the category whose form the error belongs to
    return categories, context


def _done(message: str, changed: bool = True):
    """Back to the list; a change is structural for the shop (every page shows the bar)."""
    args: dict[str, Any] = {"done": message}
    if changed:
        warning = refresh_catalogue([], structural=True)
        if warning:
            args["warning"] = warning
    return redirect(url_for("admin.categories", **args), 303)


def _refused(exc: FormError, **context):
    categories, context = _page(**context)
    return form_error("admin/categories.html", exc, categories=categories, **context)


@bp.route("/categories", methods=["GET", "POST"])
def categories():
    if request.method == "GET":
        listed, context = _page()
        return render_template(
            "admin/categories.html",
            categories=listed,
            error=None,
            done=request.args.get("done"),
            warning=request.args.get("warning"),
            **context,
        )
    slug, name = request.form.get("slug", ""), request.form.get("name", "")
    try:
        with services().engines.primary.begin() as conn:
            category_admin.create_category(conn, actor(), slug=slug, name=name, at=now())
    except FormError as exc:
        return _refused(exc, slug=slug, name=name)
    return _done(f"Category {slug.strip().lower()} created, last in the bar.")


@bp.post("/categories/<id:category_id>/rename")
def category_rename(category_id: int):
    try:
        with services().engines.primary.begin() as conn:
            changed = category_admin.rename_category(
                conn, actor(), category_id, name=request.form.get("name"), at=now()
            )
    except FormError as exc:
        if exc.status == 404:
            raise
        return _refused(exc, failed=category_id)
    return _done("Renamed." if changed else "Nothing to save: the name is the same.", changed)


@bp.post("/categories/<id:category_id>/move")
def category_move(category_id: int):
    direction = request.form.get("direction")
    try:
        with services().engines.primary.begin() as conn:
            moved = category_admin.move_category(
                conn, actor(), category_id, direction=direction, at=now()
            )
    except FormError as exc:
        if exc.status == 404:
            raise
        return _refused(exc, failed=category_id)
    if not moved:
        return _done(f"Already at the {'top' if direction == 'up' else 'bottom'}.", False)
    return _done(f"Moved {direction}.")
