"""Branded invoice PDFs (invoices/pdf.py), checked on the real document with poppler."""

from __future__ import annotations

import io
import re
import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from PIL import Image

from invoices import pdf
from invoices.models import Invoice, InvoiceSettings, InvoiceState
from invoices.services import invoice_void
from money.currency import format_money
from tests.factories import ChargeFactory
from tests.invoices.factories import bill_december, lease_with_charges, tax_rate


@pytest.fixture
def media_root(settings):
    return Path(settings.MEDIA_ROOT)  # a temporary directory per test (tests/conftest.py)


@pytest.fixture
def branded(landlord):
    landlord.address_line1 = "Kastanienallee 12"
    landlord.postal_code = "10435"
    landlord.city = "Berlin"
    landlord.country = "DE"
    landlord.tax_id = "DE123456789"
    landlord.brand_color = "#0b6e4f"
    landlord.payment_instructions = "Bank transfer to IBAN DE89 3704 0044 0532 0130 00"
    landlord.invoice_footer = "Acme Lettings GmbH · Amtsgericht Berlin HRB 12345"
    landlord.save()
    return landlord


@pytest.fixture
def theirs(other_landlord):
    """Landlord B's look-alike invoices, rendered too, so a mixed-up scope shows."""
    lease_with_charges(landlord=other_landlord, renter="Bianca Brightside", rent_minor=99_900)
    invoices = bill_december(landlord=other_landlord)
    for invoice in invoices:
        pdf.invoice_pdf(invoice=invoice)
    return invoices


@pytest.fixture
def invoice(branded, theirs):
    tax_rate(landlord=branded, kind="parking", rate_bp=1900)
    lease = lease_with_charges(
        landlord=branded,
        renter="Alice Acme",
        parking_minor=8_000,
        one_off=("Key replacement", 4_500),
        property_name="Kastanienallee 12",
    )
    (mine,) = [i for i in bill_december(landlord=branded) if i.lease_id == lease.pk]
    return mine


def pdf_text(data: bytes, tmp_path: Path) -> str:
    target = tmp_path / "out.pdf"
    target.write_bytes(data)
    return subprocess.run(
        ["pdftotext", "-layout", str(target), "-"], check=True, capture_output=True, text=True
    ).stdout


def test_pdf_shows_the_invoice_its_landlord_bill_to_lines_and_total(invoice, tmp_path):
    text = pdf_text(pdf.invoice_pdf(invoice=invoice), tmp_path)

    assert invoice.number in text
    assert "Acme Lettings" in text
    assert "Kastanienallee 12" in text
    assert "DE123456789" in text
    assert "Alice Acme" in text
    for description in ("Monthly rent", "Parking space P12", "Key replacement"):
        assert description in text
    assert format_money(invoice.total_minor, "EUR", "en") in text
    assert format_money(invoice.tax_minor, "EUR", "en") in text
    assert "19%" in text
    assert "IBAN DE89 3704 0044 0532 0130 00" in text
    assert "Amtsgericht Berlin HRB 12345" in text
    assert "Page 1 of 1" in text
    assert "Brightside" not in text
    assert "VOID" not in text


def test_a_one_page_invoice_is_one_page(invoice, tmp_path):
    target = tmp_path / "one.pdf"
    target.write_bytes(pdf.invoice_pdf(invoice=invoice))
    info = subprocess.run(["pdfinfo", str(target)], check=True, capture_output=True, text=True)
    assert "Pages:           1" in info.stdout


def test_voiding_gives_a_new_document_with_the_void_banner_and_reason(invoice, tmp_path):
    issued = pdf.invoice_pdf(invoice=invoice)

    invoice_void(invoice=invoice, reason="Billed the wrong unit", actor=None)
    # The caller's object is stale on purpose: the state is re-read.
    voided = pdf.invoice_pdf(invoice=invoice)

    text = pdf_text(voided, tmp_path)
    assert voided != issued
    assert "VOID" in text
    assert "This invoice was voided on" in text
    assert "Billed the wrong unit" in text
    assert invoice.number in text
    path = pdf.invoice_pdf_path(invoice=invoice)
    assert re.fullmatch(rf"{invoice.pk}-issued-[0-9a-f]+\.pdf", path.name)
    assert sorted(p.name for p in path.parent.iterdir()) == [
        path.name,
        path.name.replace("-issued-", "-void-"),
    ]


def test_a_draft_says_draft_and_has_no_number(branded, theirs, tmp_path):
    InvoiceSettings.objects.create(landlord=branded, review_drafts=True)
    lease_with_charges(landlord=branded, renter="Alice Acme")
    (draft,) = bill_december(landlord=branded)
    assert draft.state == InvoiceState.DRAFT

    text = pdf_text(pdf.invoice_pdf(invoice=draft), tmp_path)

    assert "DRAFT" in text
    assert "not payable yet" in text
    assert f"Draft {draft.pk}" in text
    assert re.fullmatch(
        rf"{draft.pk}-draft-[0-9a-f]+\.pdf", pdf.invoice_pdf_path(invoice=draft).name
    )


def test_the_second_call_reads_the_cached_file(invoice, monkeypatch):
    renders = []
    real_render = pdf._render_pdf

    def counting_render(**kwargs):
        renders.append(kwargs["invoice"].pk)
        return real_render(**kwargs)

    monkeypatch.setattr(pdf, "_render_pdf", counting_render)

    first = pdf.invoice_pdf(invoice=invoice)
    path = pdf.invoice_pdf_path(invoice=invoice)
    mtime = path.stat().st_mtime_ns
    second = pdf.invoice_pdf(invoice=invoice)

    assert renders == [invoice.pk]
    assert first == second
    assert path.stat().st_mtime_ns == mtime


def test_the_cache_lives_under_the_landlord_and_leaves_no_temp_files(invoice, media_root):
    pdf.invoice_pdf(invoice=invoice)

    folder = media_root / "invoices" / str(invoice.landlord_id)
    (cached,) = folder.iterdir()  # nothing else: no temporary file left behind
    assert cached == pdf.invoice_pdf_path(invoice=invoice)
    assert cached.read_bytes().startswith(b"%PDF-")


def test_a_file_left_under_a_reused_id_is_not_served(invoice, media_root, tmp_path):
    """A database restored from a backup hands out ids again while the media folder
    keeps the documents of the invoices it lost: the same landlord and invoice id, but
    another invoice created at another time. Its file is not this invoice's document."""
    lost = Invoice(
        pk=invoice.pk,
        landlord_id=invoice.landlord_id,
        state=invoice.state,
        created_at=invoice.created_at - timedelta(days=3),
    )
    stale = pdf.invoice_pdf_path(invoice=lost)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"%PDF- the lost invoice's document")

    document = pdf.invoice_pdf(invoice=invoice)

    assert pdf.invoice_pdf_path(invoice=invoice) != stale
    assert b"lost invoice" not in document
    assert invoice.number in pdf_text(document, tmp_path)


def test_the_landlord_logo_is_drawn_from_media_root(invoice, branded, tmp_path):
    png = io.BytesIO()
    Image.new("RGB", (240, 80), "#0b6e4f").save(png, format="PNG")
    branded.logo.save("acme.png", ContentFile(png.getvalue()))

    target = tmp_path / "logo.pdf"
    target.write_bytes(pdf.invoice_pdf(invoice=invoice))
    images = subprocess.run(
        ["pdfimages", "-list", str(target)], check=True, capture_output=True, text=True
    ).stdout.splitlines()[2:]

    assert len(images) == 1
    assert images[0].split()[3:5] == ["240", "80"]


def test_files_outside_media_root_are_not_loaded(media_root):
    fetcher = pdf._MediaOnlyFetcher(media_root=media_root.resolve())
    with pytest.raises(ValueError, match="outside MEDIA_ROOT"):
        fetcher.fetch("file:///etc/passwd")
    with pytest.raises(ValueError, match="disallowed protocol"):
        fetcher.fetch("http://169.254.169.254/latest/meta-data/")


def test_a_german_tenant_gets_a_german_document(branded, theirs, tmp_path):
    lease_with_charges(landlord=branded, renter="Jonas Keller", language="de")
    (invoice,) = bill_december(landlord=branded)

    text = pdf_text(pdf.invoice_pdf(invoice=invoice), tmp_path)

    assert "RECHNUNG" in text
    assert "1.200,00 €" in text
    assert "Seite 1 von 1" in text
    assert "1. Dez. 2026 – 31. Dez. 2026" in text


def test_a_long_invoice_numbers_every_page_and_repeats_the_table_header(branded, theirs, tmp_path):
    lease = lease_with_charges(landlord=branded, renter="Alice Acme")
    for n in range(45):
        ChargeFactory(
            lease=lease,
            kind="other",
            description=f"Repair item {n:02d}",
            amount_minor=1_000 + n,
            frequency="one_off",
            start_date=date(2026, 12, 1 + n % 28),
        )
    (invoice,) = bill_december(landlord=branded)
    target = tmp_path / "long.pdf"
    target.write_bytes(pdf.invoice_pdf(invoice=invoice))
    info = subprocess.run(["pdfinfo", str(target)], check=True, capture_output=True, text=True)
    pages = int(next(ln for ln in info.stdout.splitlines() if ln.startswith("Pages:")).split()[1])

    text = pdf_text(target.read_bytes(), tmp_path)

    assert pages >= 2
    for page in range(1, pages + 1):
        assert f"Page {page} of {pages}" in text
    assert text.count("Description") == pages
    assert "Repair item 44" in text
