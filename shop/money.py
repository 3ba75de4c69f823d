"""Money as people type it: ``12.34`` into integer cents, the one parser of the command line,
the back office's forms and its CSV imports. Money never passes through a float."""

from __future__ import annotations

import re

from .catalogue import MAX_PRICE_CENTS, format_cents
from .errors import InvalidInput

_PRICE = re.compile(r"\s*(\d{1,30})(?:\.(\d{1,2}))?\s*")


def parse_price(text: str, *, field: str = "price") -> int:
    """'12.34', '12.3' or '12' -> cents; anything else (a sign, a comma, three decimals,
    more than MAX_PRICE_CENTS) is refused with a message that quotes what was typed."""
    match = _PRICE.fullmatch(text)
    if not match:
        shown = text.strip()[:40]
        raise InvalidInput(f"'{shown}' is not a price like 12.34.", field=field)
    cents = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    if cents > MAX_PRICE_CENTS:
        raise InvalidInput(
            f"{text.strip()} is more than the highest price, {format_cents(MAX_PRICE_CENTS)}.",
            field=field,
        )
    return cents
