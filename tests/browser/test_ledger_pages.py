"""The ledger pages as Spree Living's finance clerk uses them after the demo's month-end:
the trial balance, the journal, a refused date range and the CSV download, on a desktop
and a phone."""

import csv
import io

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from ledger.models import LedgerEntry, LedgerHead
from tenants.models import Landlord
from tests.browser.conftest import assert_no_horizontal_overflow, assert_styled, log_in

FINANCE = "finance@spree-living.example"


@pytest.fixture
def spree(transactional_db):
    call_command("seed_demo", stdout=io.StringIO())
    return Landlord.objects.get(slug="spree-living")


def test_finance_reads_the_books_and_downloads_the_journal(app: Page, spree, open_phone, artifacts):
    page = app
    log_in(page, FINANCE)
    page.get_by_role("navigation").get_by_role("link", name="Ledger").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Ledger")
    assert_styled(page)
    expect(page.get_by_text("Balanced", exact=True)).to_be_visible()
    expect(page.get_by_role("table").first).to_contain_text("rent_income")
    head = LedgerHead.objects.get(landlord=spree)
    expect(page.get_by_text(head.last_hash)).to_be_visible()
    page.screenshot(path=str(artifacts / "ledger-desktop.png"), full_page=True)

    page.get_by_role("link", name="Journal").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Journal")
    rows = page.get_by_role("table").locator("tbody tr")
    expect(rows).to_have_count(50)
    expect(rows.first).to_contain_text(str(head.last_seq))
    expect(page.get_by_text("Hudson Homes")).to_have_count(0)

    # An end before the start is refused beside the form, naming the field.
    page.get_by_label("From").fill("2026-12-10")
    page.get_by_label("To").fill("2026-12-01")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("alert")).to_have_text("To: The end date is before the start date.")
    expect(page.get_by_role("table")).to_have_count(0)

    # The whole journal downloads as CSV: every entry of Spree's, none of Hudson's.
    page.get_by_label("From").fill("")
    page.get_by_label("To").fill("")
    page.get_by_role("button", name="Show").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    assert download.value.suggested_filename == "spree-living-journal.csv"
    text = download.value.path().read_text(encoding="utf-8-sig")
    entries = list(csv.DictReader(io.StringIO(text)))
    assert len(entries) == LedgerEntry.objects.filter(landlord=spree).count()
    assert entries[-1]["hash"] == head.last_hash

    phone = open_phone(storage_state=page.context.storage_state())
    for path in ("/app/ledger/", "/app/ledger/journal/"):
        phone.goto(path)
        expect(phone.get_by_role("heading", level=1)).to_be_visible()
        assert_styled(phone)
        assert_no_horizontal_overflow(phone)
    phone.screenshot(path=str(artifacts / "journal-phone.png"))
