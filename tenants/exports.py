"""CSV downloads of the dashboard: streamed, spreadsheet-safe, one shape for all.

Finance staff open these in spreadsheets, so text that a spreadsheet would run as a
formula (a tenant named "=HYPERLINK(...)") is written with a leading apostrophe;
numbers are written as they are. Rows are streamed as they are read (a server-side
cursor), so a landlord's whole ledger downloads in constant memory in the web process.
A filter that a list page would ignore is an error here: an export must never quietly
hold more than was asked for.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import chain

from django.http import HttpResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

# What Excel, LibreOffice and Google Sheets treat as the start of a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str | None) -> str:
    """A text cell that a spreadsheet shows as text, never evaluates."""
    if not value:
        return ""
    return f"'{value}" if value.startswith(_FORMULA_START) else value


class _Line:
    """The file-like object csv.writer writes one row to; the row is returned."""

    def write(self, value: str) -> str:
        return value


def csv_download(
    *, filename: str, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> StreamingHttpResponse:
    """A streamed CSV attachment: the header, then `rows` (already formatted: run text
    through `csv_text`)."""
    writer = csv.writer(_Line(), lineterminator="\r\n")
    rows = iter(rows)
    # The first row is read here, in the view: a failing query is an error page, not a
    # 200 with a cut-off file.
    first = next(rows, None)
    body = chain(
        # A byte-order mark, so spreadsheets read the file as UTF-8 (names, €).
        ["\ufeff" + writer.writerow(header)],
        (writer.writerow(row) for row in chain([] if first is None else [first], rows)),
    )
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["Cache-Control"] = "private, no-store"
    return response


_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


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
        if value and not (value.isascii() and value.isdigit() and len(value) < 19):
            errors[name] = "Enter a whole number."
    for name in months:
        value = params.get(name, "")
        if value and not _MONTH.match(value):
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
