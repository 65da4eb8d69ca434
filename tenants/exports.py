"""CSV downloads of the dashboard: streamed, spreadsheet-safe, one shape for all.

Finance staff open these in spreadsheets, so text that a spreadsheet would run as a
formula (a tenant named "=HYPERLINK(...)") is written with a leading apostrophe;
numbers are written as they are. Rows are streamed as they are read (a server-side
cursor), so a landlord's whole ledger downloads in constant memory in the web process.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from itertools import chain

from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

from money.currency import from_minor

# What Excel, LibreOffice and Google Sheets treat as the start of a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str | None) -> str:
    """A text cell that a spreadsheet shows as text, never evaluates."""
    if not value:
        return ""
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def csv_amount(minor: int | None, currency: str) -> str:
    """An exact amount in major units (JPY 1200, EUR 12.00), what a spreadsheet sums;
    empty for none."""
    return "" if minor is None else str(from_minor(minor, currency))


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
