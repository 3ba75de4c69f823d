"""URL converters."""

from __future__ import annotations

from werkzeug.routing import BaseConverter, ValidationError

from ..models import MAX_ID


class IdConverter(BaseConverter):
    """A positive database id; anything else (text, zero, too large) is simply no match: 404."""

    regex = r"\d{1,12}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if not 1 <= number <= MAX_ID:
            raise ValidationError()
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))
