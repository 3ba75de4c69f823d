"""CSV for spreadsheets: what the back office's downloads (orders, products) share."""

from __future__ import annotations

# A cell starting so is a formula to Excel, LibreOffice and Sheets (OWASP's CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defused(cell: str) -> str:
    """A cell a spreadsheet will show as text, never evaluate."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell
