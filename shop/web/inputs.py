"""Parsing what a client sends: strict, with a message a person can act on."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import request

from ..catalogue import MAX_PRICE_CENTS
from ..errors import InvalidInput, InvalidQuantity
from ..models import MAX_ID
from ..paging import Paging

_DIGITS = re.compile(r"^\s*(\d+)\s*$")
_MAX_DIGITS = 12  # more than any limit here needs


def form_int(value: str | None, field: str, *, minimum: int = 0, maximum: int | None) -> int:
    """A whole number typed into a form (``maximum`` None: the caller checks the top)."""
    error = InvalidQuantity if field == "quantity" else InvalidInput
    match = _DIGITS.match(value) if value is not None else None
    if match is None:
        raise error(f"{field.replace('_', ' ').capitalize()} must be a whole number.", field=field)
    digits = match.group(1).lstrip("0") or "0"
    # Longer is simply too large (and int() of long enough text is refused or slow).
    too_large = 10**_MAX_DIGITS if maximum is None else maximum + 1
    number = int(digits) if len(digits) <= _MAX_DIGITS else too_large
    return _in_range(number, field, minimum, maximum)


def json_int(value: Any, field: str, *, minimum: int = 0, maximum: int | None) -> int:
    """A JSON integer: not a string, a fraction or a boolean (``maximum`` None: the caller
    checks the top)."""
    error = InvalidQuantity if field == "quantity" else InvalidInput
    if value is None:
        raise error(f"'{field}' is required.", field=field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"'{field}' must be a whole number.", field=field)
    return _in_range(value, field, minimum, maximum)


def _in_range(value: int, field: str, minimum: int, maximum: int | None) -> int:
    error = InvalidQuantity if field == "quantity" else InvalidInput
    if value < minimum:
        raise error(
            f"{field.replace('_', ' ').capitalize()} must be at least {minimum}.", field=field
        )
    if maximum is not None and value > maximum:
        raise error(
            f"{field.replace('_', ' ').capitalize()} must be at most {maximum}.", field=field
        )
    return value


def json_prices(items: Any, max_items: int) -> dict[int, int]:
    """``[{"product_id", "unit_price_cents"}, ...]`` (a cart's ``price_changes`` or items) as
    product id -> cents."""
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InvalidInput(
            "'items' must be a list of {product_id, unit_price_cents}.", field="items"
        )
    if len(items) > max_items:
        raise InvalidInput(f"A cart holds at most {max_items} different products.", field="items")
    return {
        json_int(item.get("product_id"), "product_id", minimum=1, maximum=MAX_ID): json_int(
            item.get("unit_price_cents"), "unit_price_cents", minimum=0, maximum=MAX_PRICE_CENTS
        )
        for item in items
    }


def product_id_from_form(value: str | None) -> int:
    return form_int(value, "product_id", minimum=1, maximum=MAX_ID)


def json_body() -> dict[str, Any]:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes: not an object we accept
        body = None
    if not isinstance(body, dict):
        raise InvalidInput("Send a JSON object with Content-Type: application/json.")
    check_json(body)
    return body


MAX_JSON_DEPTH = 16  # no request of the API nests deeper than 3


def check_json(document: Any) -> None:
    """Every string in a JSON document must be usable text, and nesting is capped. The walk
    is iterative: a document nested 900 deep, which the parser accepts, cannot exhaust the
    stack here."""
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            check_text(value)
        elif isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise InvalidInput(f"JSON may nest at most {MAX_JSON_DEPTH} levels deep.")
            if isinstance(value, dict):
                for key, item in value.items():
                    check_text(key)
                    pending.append((item, depth + 1))
            else:
                pending.extend((item, depth + 1) for item in value)


def check_text(value: str, field: str | None = None) -> None:
    """No NUL (PostgreSQL refuses one) and no lone surrogate (JSON's "\\ud800" decodes to one,
    and it cannot be encoded as UTF-8 for the database, a hash or a log line)."""
    if "\x00" in value:
        raise InvalidInput("Text may not contain NUL characters.", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("Text must be valid Unicode (UTF-8).", field=field) from None


def page_args(args, paging: Paging) -> tuple[int, int]:
    """``page`` and ``per_page`` as whole numbers; which ones may be read is the catalogue's
    rule (:meth:`Paging.check`, applied by :meth:`Catalogue.page`)."""
    page = form_int(args.get("page", "1"), "page", minimum=1, maximum=None)
    per_page = form_int(
        args.get("per_page", str(paging.per_page_default)), "per_page", maximum=None
    )
    return page, per_page


def safe_next(target: str | None, default: str) -> str:
    """Only a path on this site, so a form cannot send the shopper elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return default
