"""Branded invoice PDFs, rendered with WeasyPrint on demand and cached on disk.

A render costs tens of milliseconds for one page and much more for long documents
(FIELD-NOTES: PDFs), so this is only ever called for one invoice at a time (a
download, one outgoing email), never from the bulk billing run. The cache file name
carries the invoice's state, so voiding an invoice produces a new document (with its
VOID banner) instead of serving the issued one.

Texts are chosen by the tenant's language (English and German; other languages fall
back to English), and amounts and dates are formatted in that same language so one
document never mixes conventions.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_percent
from django.conf import settings
from django.template.loader import render_to_string
from weasyprint import HTML
from weasyprint.urls import URLFetcher

from invoices.models import Invoice, InvoiceLine, InvoiceState
from money.currency import format_money

TEMPLATE = "invoices/pdf/invoice.html"
DEFAULT_BRAND_COLOR = "#1f4e79"
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
# Countries whose paper is US Letter; everyone else gets A4.
_LETTER_COUNTRIES = frozenset({"US", "CA", "MX", "PH", "CL", "CO", "VE", "GT", "CR"})

# Document texts per language. Deliberately a small table rather than gettext: the
# project ships no compiled catalogues yet, and an invoice must not depend on them.
LANGUAGES = ("en", "de")
LABELS: dict[str, dict[str, str]] = {
    "en": {
        "invoice": "Invoice",
        "number": "Invoice no.",
        "draft_number": "Draft",
        "issue_date": "Issue date",
        "due_date": "Due date",
        "period": "Billing period",
        "bill_to": "Bill to",
        "tax_id": "Tax ID",
        "description": "Description",
        "service_period": "Service period",
        "qty": "Qty",
        "unit_amount": "Unit price",
        "tax_rate": "Tax",
        "tax": "Tax amount",
        "amount": "Amount",
        "subtotal": "Subtotal",
        "tax_total": "Tax",
        "total": "Total due",
        "total_plain": "Total",
        "how_to_pay": "How to pay",
        "reference": "Please quote the invoice number as the payment reference.",
        "page": "Page",
        "of": "of",
        "void": "VOID",
        "void_banner": "This invoice was voided on {date} and is no longer payable.",
        "void_reason": "Reason",
        "draft": "DRAFT",
        "draft_banner": "Draft for review. This is not an invoice and is not payable yet.",
        "replaces": "Replaces",
    },
    "de": {
        "invoice": "Rechnung",
        "number": "Rechnungsnr.",
        "draft_number": "Entwurf",
        "issue_date": "Rechnungsdatum",
        "due_date": "Fällig am",
        "period": "Abrechnungszeitraum",
        "bill_to": "Rechnungsempfänger",
        "tax_id": "USt-IdNr.",
        "description": "Beschreibung",
        "service_period": "Leistungszeitraum",
        "qty": "Menge",
        "unit_amount": "Einzelpreis",
        "tax_rate": "USt.",
        "tax": "USt.-Betrag",
        "amount": "Betrag",
        "subtotal": "Zwischensumme",
        "tax_total": "Umsatzsteuer",
        "total": "Zu zahlender Betrag",
        "total_plain": "Gesamtbetrag",
        "how_to_pay": "Zahlungsinformationen",
        "reference": "Bitte geben Sie die Rechnungsnummer als Verwendungszweck an.",
        "page": "Seite",
        "of": "von",
        "void": "STORNIERT",
        "void_banner": "Diese Rechnung wurde am {date} storniert und ist nicht mehr zahlbar.",
        "void_reason": "Grund",
        "draft": "ENTWURF",
        "draft_banner": "Entwurf zur Prüfung. Dies ist keine Rechnung und noch nicht zahlbar.",
        "replaces": "Ersetzt Rechnung",
    },
}
_DATE_FORMATS = {"en": "d MMM y", "de": "d. MMM y"}


def document_language(language: str | None) -> str:
    """The language an invoice document or email is written in: the tenant's if we
    have texts for it, else English."""
    code = (language or "").split("-")[0].lower()
    return code if code in LANGUAGES else "en"


def format_day(day: date, *, language: str) -> str:
    """A date as people write it in `language`: "6 Dec 2026" / "6. Dez. 2026"."""
    lang = document_language(language)
    return format_date(day, _DATE_FORMATS[lang], locale=lang)


def format_date_range(start: date, end: date, *, language: str) -> str:
    """A half-open `[start, end)` range shown with its last included day."""
    last = end - timedelta(days=1)
    if last <= start:
        return format_day(start, language=language)
    return f"{format_day(start, language=language)} – {format_day(last, language=language)}"


def invoice_pdf_filename(*, invoice: Invoice) -> str:
    """The download / attachment name: "INV-2026-000001.pdf" (drafts by id)."""
    label = invoice.number or f"draft-{invoice.pk}"
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', label)}.pdf"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def invoice_pdf_path(*, invoice: Invoice) -> Path:
    """Where the cached document of the invoice in its current state lives.

    The name carries the invoice's creation time to the microsecond as well as its id:
    ids can come round again (a database restored from a backup while the media folder
    was kept), and a file found by id alone would then be another tenant's document.
    """
    created = (invoice.created_at - _EPOCH) // timedelta(microseconds=1)
    return (
        Path(settings.MEDIA_ROOT)
        / "invoices"
        / str(invoice.landlord_id)
        / f"{invoice.pk}-{invoice.state}-{created:x}.pdf"
    )


def invoice_pdf(*, invoice: Invoice) -> bytes:
    """The invoice as a branded PDF document.

    The first call for an invoice in a given state renders it and writes the file
    atomically (a reader never sees half a PDF, and two concurrent first renders just
    both write the same bytes); later calls read the file. The state is re-read from
    the database, so a stale `invoice` object cannot serve the issued document of a
    voided invoice.
    """
    current = Invoice.objects.select_related("landlord", "tenant", "lease__unit__property").get(
        pk=invoice.pk
    )
    path = invoice_pdf_path(invoice=current)
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes()
    pdf = _render_pdf(invoice=current)
    _write_atomically(path, pdf)
    return pdf


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


@dataclass(frozen=True)
class _LineRow:
    description: str
    service_period: str
    quantity: int
    unit_amount: str
    tax_rate: str
    tax: str
    amount: str


def _render_pdf(*, invoice: Invoice) -> bytes:
    """Render the document; `invoice` comes with landlord, tenant and unit loaded."""
    html = render_to_string(TEMPLATE, _context(invoice=invoice))
    media_root = Path(settings.MEDIA_ROOT).resolve()
    return HTML(
        string=html,
        base_url=media_root.as_uri() + "/",
        url_fetcher=_MediaOnlyFetcher(media_root=media_root),
    ).write_pdf()


class _MediaOnlyFetcher(URLFetcher):
    """Lets the document load files from MEDIA_ROOT (the landlord's logo) and inline
    data, nothing else: no network, and no other local file even if some
    landlord-supplied text ever reached the markup unescaped."""

    def __init__(self, *, media_root: Path) -> None:
        super().__init__(allowed_protocols=("file", "data"))
        self._root = media_root

    def fetch(self, url, headers=None):
        if url.lower().startswith("file:"):
            path = Path(url2pathname(urlsplit(url).path)).resolve()
            if not path.is_relative_to(self._root):
                raise ValueError(f"Refusing to load {url}: outside MEDIA_ROOT")
        return super().fetch(url, headers)


def _context(*, invoice: Invoice) -> dict:
    landlord, tenant = invoice.landlord, invoice.tenant
    lang = document_language(tenant.language)
    labels = LABELS[lang]
    currency = invoice.currency

    def money(minor: int) -> str:
        return format_money(minor, currency, lang)

    lines = list(InvoiceLine.objects.filter(invoice=invoice).order_by("position"))
    rows = [
        _LineRow(
            description=line.description,
            service_period=(
                format_date_range(line.service_start, line.service_end, language=lang)
                if line.service_start and line.service_end
                else ""
            ),
            quantity=line.quantity,
            unit_amount=money(line.unit_amount_minor),
            tax_rate=_percent(line.tax_rate_bp, lang),
            tax=money(line.tax_minor),
            amount=money(line.amount_minor),
        )
        for line in lines
    ]
    prop = invoice.lease.unit.property
    state = invoice.state
    return {
        "lang": lang,
        "t": labels,
        "invoice": invoice,
        "landlord": landlord,
        "brand_color": _brand_color(landlord.brand_color),
        "page_size": "letter" if landlord.country.upper() in _LETTER_COUNTRIES else "A4",
        "logo_url": _logo_url(landlord),
        "landlord_address": _address_lines(
            landlord.address_line1,
            landlord.address_line2,
            landlord.postal_code,
            landlord.city,
            landlord.country,
            lang=lang,
        ),
        "bill_to_address": [
            f"{prop.name} · {invoice.lease.unit.name}"
            if prop.name != prop.address_line1
            else invoice.lease.unit.name,
            *_address_lines(
                prop.address_line1,
                prop.address_line2,
                prop.postal_code,
                prop.city,
                prop.country if prop.country != landlord.country else "",
                lang=lang,
            ),
        ],
        "number": invoice.number or f"{labels['draft_number']} {invoice.pk}",
        # A rent invoice issued in place of a voided one (lease ended after billing).
        "replaces": (
            invoice.adjusts.number if invoice.kind == "rent" and invoice.adjusts_id else ""
        ),
        "issue_date": format_day(invoice.issue_date, language=lang),
        "due_date": format_day(invoice.due_date, language=lang),
        "period": format_date_range(invoice.period_start, invoice.period_end, language=lang),
        "lines": rows,
        "show_tax": invoice.tax_minor != 0 or any(line.tax_rate_bp for line in lines),
        "subtotal": money(invoice.subtotal_minor),
        "tax_total": money(invoice.tax_minor),
        "total": money(invoice.total_minor),
        "is_void": state == InvoiceState.VOID,
        # Sized so the longest word ("STORNIERT") still fits across the page.
        "watermark_pt": min(
            110, 520 // len(labels["void" if state == InvoiceState.VOID else "draft"])
        ),
        "is_draft": state == InvoiceState.DRAFT,
        "void_banner": labels["void_banner"].format(
            date=format_day(
                invoice.voided_at.astimezone(landlord.tz).date()
                if invoice.voided_at
                else invoice.issue_date,
                language=lang,
            )
        ),
    }


def _percent(rate_bp: int, lang: str) -> str:
    return format_percent(Decimal(rate_bp) / 10_000, "#,##0.##%", locale=lang)


def _brand_color(value: str) -> str:
    # Validated by the model and a CHECK constraint; checked again because it is
    # interpolated into CSS.
    return value if value and _HEX_COLOR.fullmatch(value) else DEFAULT_BRAND_COLOR


def _logo_url(landlord) -> str:
    if not landlord.logo:
        return ""
    try:
        path = Path(landlord.logo.path)
    except (ValueError, NotImplementedError):
        return ""
    return path.resolve().as_uri() if path.is_file() else ""


def _address_lines(line1, line2, postal_code, city, country, *, lang: str) -> list[str]:
    country_name = Locale.parse(lang).territories.get(country.upper(), country) if country else ""
    town = " ".join(part for part in (postal_code, city) if part)
    return [part for part in (line1, line2, town, country_name) if part]
