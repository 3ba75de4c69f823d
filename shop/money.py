"""Money as people type it: ``12.34`` in a form or on the command line, integer cents inside.
Money never passes through a float."""

from __future__ import annotations

import re

from .catalogue import MAX_PRICE_CENTS, format_cents
from .errors import InvalidInput

_PRICE = re.compile(r"\s*(\d{1,30})(?:\.(\d{1,2}))?\s*")


def parse_price(text: str | None, field: str = "price") -> int | None:
    """'12.34' or '12' -> 1234 cents (None for None); at most the highest price the shop holds.
    Anything else is :class:`InvalidInput` naming ``field``."""
    if text is None:
        return None
    match = _PRICE.fullmatch(text)
    if not match:
        raise InvalidInput(f"{text!r} is not a price like 12.34", field=field)
    cents = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    if cents > MAX_PRICE_CENTS:
        raise InvalidInput(
            f"{text.strip()} is more than the highest price, {format_cents(MAX_PRICE_CENTS)}",
            field=field,
        )
    return cents
