"""Small rules about text shown to a person, each written once."""

from __future__ import annotations


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 paper``, ``2 papers``, ``1,204 papers``."""
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def one_line(exc: BaseException) -> str:
    """An exception as the one line a user reads; digest's own failures are already phrased for that."""
    text = " ".join(str(exc).split())
    if getattr(exc, "phrased", False):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """One CSV cell, the same in every CSV digest writes: lists joined with "; ", nothing for None, and
    text that a spreadsheet would run as a formula (a title starting with "=") kept as text with a
    leading apostrophe. Numbers are left alone: -0.12 is a score, not a formula."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = "; ".join(map(str, value))
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return str(value)


def shown_cell(value) -> str:
    """A value in a terminal table: lists joined with ", ", nothing for None."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)
