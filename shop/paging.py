"""Which catalogue pages can be asked for: a few page sizes, and no deeper than a result window.

Every distinct (page, per_page) of a listing is a cache entry of its own and, on a miss, a
query whose ``OFFSET`` reads and discards every row before the page. So a client may choose only
among a few page sizes (one cache entry per page, however the request is spelled) and may not
page past ``max_result_window`` results (as Elasticsearch's ``index.max_result_window``): beyond
it, the shopper is asked to narrow the search instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInput


@dataclass(frozen=True)
class Paging:
    per_page_choices: tuple[int, ...] = (12, 24, 48, 96)
    per_page_default: int = 24
    max_result_window: int = 10_000

    def last_page(self, per_page: int) -> int:
        """The deepest page of this size that stays within the window."""
        return self.max_result_window // per_page

    def check(self, page: int, per_page: int) -> None:
        """Refuse a page size not on the list and a page beyond the window."""
        if per_page not in self.per_page_choices:
            *most, last = (str(choice) for choice in self.per_page_choices)
            choices = f"{', '.join(most)} or {last}" if most else last
            raise InvalidInput(f"Per page must be {choices}.", field="per_page")
        if page < 1:
            raise InvalidInput("Page must be at least 1.", field="page")
        if page > self.last_page(per_page):
            raise InvalidInput(self.narrow_message(per_page), field="page")

    def narrow_message(self, per_page: int) -> str:
        return (
            f"Only the first {self.max_result_window:,} results can be shown (up to page "
            f"{self.last_page(per_page):,} at {per_page} per page). Narrow the search with more "
            "words or a category to find the rest."
        )
