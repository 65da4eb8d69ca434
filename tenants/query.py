"""Query parameters of the dashboard's lists and exports: ids parsed one way, and the
checks an export makes before it reads anything.

A list page may ignore a filter value it cannot use; an export must not: a file that
quietly held every invoice instead of the ones asked for would mislead whoever reads
it, so a bad value there is a 400 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import date

from django.http import HttpResponse


def whole_number(value: str | None) -> int | None:
    """A query parameter as an id (a bigint), or None: ASCII digits only, since
    str.isdigit() also accepts digits such as "²" that int() refuses."""
    value = value or ""
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


# Months and days a person may name: a billing period, a filter, a payment's date. Far
# wider than any tenancy, and narrow enough that a month after the last one (a period's
# end) always exists.
FIRST_YEAR, LAST_YEAR = 1900, 2999


def in_calendar(day: date) -> bool:
    return FIRST_YEAR <= day.year <= LAST_YEAR


def month_start(value: str | None) -> date | None:
    """A month parameter (YYYY-MM, as `<input type="month">` sends it) as its first day,
    or None."""
    value = value or ""
    if len(value) != 7 or not value.isascii() or value[4] != "-":
        return None
    try:
        day = date.fromisoformat(f"{value}-01")
    except ValueError:
        return None
    return day if in_calendar(day) else None


def query_errors(
    params,
    *,
    choices: Mapping[str, Collection[str]] | None = None,
    numbers: Iterable[str] = (),
    months: Iterable[str] = (),
) -> dict[str, str]:
    """What is wrong with an export's filters, by parameter name; empty values mean
    "any" and are fine."""
    errors: dict[str, str] = {}
    for name, allowed in (choices or {}).items():
        value = params.get(name, "")
        if value and value not in allowed:
            errors[name] = f"Choose one of {', '.join(sorted(allowed))}."
    for name in numbers:
        value = params.get(name, "")
        if value and whole_number(value) is None:
            errors[name] = "Enter a whole number."
    for name in months:
        value = params.get(name, "")
        if value and month_start(value) is None:
            errors[name] = "Enter a month as YYYY-MM, e.g. 2026-12."
    return errors


def bad_query(errors: Mapping[str, str | Sequence[str]]) -> HttpResponse:
    """400 naming each parameter that was wrong; nothing was read."""
    lines = [
        f"{name}: {message if isinstance(message, str) else ' '.join(message)}"
        for name, message in errors.items()
    ]
    return HttpResponse(
        "\n".join(lines) + "\n", status=400, content_type="text/plain; charset=utf-8"
    )
