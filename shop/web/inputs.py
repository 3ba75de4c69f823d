"""Parsing what a client sends: strict, with a message a person can act on."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask import request

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


def json_int(value: Any, field: str, *, minimum: int = 0, maximum: int) -> int:
    """A JSON integer: not a string, a fraction or a boolean."""
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


def product_id_from_form(value: str | None) -> int:
    return form_int(value, "product_id", minimum=1, maximum=MAX_ID)


def json_body() -> dict[str, Any]:
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nested deeper than the parser goes: not an object we accept
        body = None
    if not isinstance(body, dict):
        raise InvalidInput("Send a JSON object with Content-Type: application/json.")
    if _contains_nul(body):
        raise InvalidInput("Text may not contain NUL characters.")
    return body


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


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
