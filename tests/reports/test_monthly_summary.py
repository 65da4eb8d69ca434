"""The monthly summary: a year of the ledger by month and currency (billed, received,
written off, owed), reconciling every month, by the landlord's local month, with a CSV
for export rights. Landlord B's postings never count."""

import csv
import io
from datetime import UTC, date, datetime

import pytest
from django.urls import reverse

from invoices.services import invoice_void
from ledger.models import AccountCode
from ledger.services import EntrySpec, account_get_or_create, transaction_post
from payments.services import manual_payment_record
from reports.monthly import ADJUSTMENTS, OTHER, OWED, RECEIVED, RENT, column_of, monthly_summary
from tenants.models import ChargeKind
from tests.factories import MembershipFactory
from tests.invoices.factories import bill_december, lease_with_charges, tax_rate

URL = "dashboard:monthly_summary"
CSV_URL = "dashboard:monthly_summary_csv"
TODAY = date(2026, 12, 20)


@pytest.fixture(autouse=True)
def _today(time_machine):
    time_machine.move_to(datetime(2026, 12, 20, 11, tzinfo=UTC), tick=False)


def _post(landlord, key, when, *pairs):
    """A balanced posting of (account, amount) pairs in EUR."""
    transaction_post(
        landlord=landlord,
        idempotency_key=key,
        effective_at=when,
        description=key,
        entries=[EntrySpec(account=a, amount_minor=m, currency="EUR") for a, m in pairs],
    )


@pytest.fixture
def books(landlord, other_landlord):
    """Acme (Europe/Berlin): an opening balance owed from before 2026 and one imported
    at 00:30 on 1 November Berlin time (still October in UTC); December billed for Ada
    (rent, parking with 19 % tax) and Bob (rent, voided on the 10th); Ada paid 1,000.00
    by transfer; 50.00 of Bob's written off; a processor fee of 3.00. Landlord B billed
    December too."""
    tax_rate(landlord=landlord, kind=ChargeKind.PARKING, rate_bp=1900)
    ada = lease_with_charges(landlord=landlord, renter="Ada Lovelace", parking_minor=8_000)
    bob = lease_with_charges(landlord=landlord, renter="Bob Builder", rent_minor=90_000)
    ada_tenant, bob_tenant = ada.tenants.get(), bob.tenants.get()
    receivable = account_get_or_create(
        landlord=landlord, code=AccountCode.RECEIVABLE, currency="EUR", tenant=bob_tenant
    )
    opening = account_get_or_create(
        landlord=landlord, code=AccountCode.OPENING_BALANCE, currency="EUR"
    )
    _post(
        landlord,
        "import:2025",
        datetime(2025, 12, 31, 22, 30, tzinfo=UTC),  # 23:30 in Berlin: still 2025
        (receivable, 30_000),
        (opening, -30_000),
    )
    _post(
        landlord,
        "import:nov",
        datetime(2026, 10, 31, 23, 30, tzinfo=UTC),  # 00:30 on 1 November in Berlin
        (receivable, 20_000),
        (opening, -20_000),
    )
    invoices = bill_december(landlord=landlord)
    invoice_void(invoice=invoices[1], reason="Billed in error", actor=None)
    manual_payment_record(
        landlord=landlord,
        tenant=ada_tenant,
        amount_minor=100_000,
        currency="EUR",
        method="bank_transfer",
        reference="",
        received_on=date(2026, 12, 3),
        actor=None,
    )
    _post(
        landlord,
        "write-off:bob",
        datetime(2026, 12, 15, 9, tzinfo=UTC),
        (
            account_get_or_create(landlord=landlord, code=AccountCode.WRITE_OFF, currency="EUR"),
            5_000,
        ),
        (receivable, -5_000),
    )
    _post(
        landlord,
        "fee:1",
        datetime(2026, 12, 4, 9, tzinfo=UTC),
        (
            account_get_or_create(
                landlord=landlord, code=AccountCode.PROCESSOR_FEES, currency="EUR"
            ),
            300,
        ),
        (
            account_get_or_create(
                landlord=landlord, code=AccountCode.CASH_IN_TRANSIT, currency="EUR"
            ),
            -300,
        ),
    )
    bill_december(landlord=other_landlord)
    return {"ada": ada, "bob": bob}


def test_every_chart_code_has_one_column():
    assert column_of(AccountCode.RENT_INCOME) == RENT
    assert column_of("income:parking") == OTHER
    assert column_of(AccountCode.RECEIVABLE) == OWED
    assert column_of(AccountCode.TENANT_CREDIT) == OWED
    assert column_of(AccountCode.BANK) == RECEIVED
    assert column_of(AccountCode.OPENING_BALANCE) == ADJUSTMENTS
    assert column_of("something_new") == ADJUSTMENTS


def test_the_year_by_month_from_the_ledger(books, landlord):
    [eur] = monthly_summary(landlord=landlord, year=2026, through=TODAY)
    assert eur.currency == "EUR"
    assert eur.owed_start == 30_000
    assert [m.month for m in eur.months] == [date(2026, n, 1) for n in range(1, 13)]
    october, november, december = eur.months[9], eur.months[10], eur.months[11]
    # The import at 00:30 Berlin time on 1 November is November's, not October's (UTC).
    assert october.quiet and october.owed_end == 30_000
    assert november.adjustments == 20_000 and november.owed_end == 50_000
    # Bob's rent billed and voided in the same month nets to nothing; Ada's stays.
    assert december.rent == 120_000
    assert december.other == 8_000
    assert december.tax == 1_520
    assert december.billed == 129_520
    assert december.received == 100_000
    assert december.processor_fees == 300
    assert december.written_off == 5_000
    assert december.owed_end == 50_000 + 129_520 - 100_000 - 5_000
    for month in eur.months:
        assert month.owed_change == (
            month.billed + month.adjustments - month.received - month.written_off
        )
    totals = eur.totals
    assert totals.billed == 129_520 and totals.adjustments == 20_000
    assert totals.owed_end == december.owed_end


def test_months_after_today_and_years_to_come_are_left_out(books, landlord):
    assert monthly_summary(landlord=landlord, year=2027, through=TODAY) == []
    [eur] = monthly_summary(landlord=landlord, year=2026, through=date(2026, 11, 5))
    assert len(eur.months) == 11
    [earlier] = monthly_summary(landlord=landlord, year=2025, through=TODAY)
    assert earlier.owed_start == 0 and earlier.totals.adjustments == 30_000


@pytest.fixture
def finance(client, landlord):
    client.force_login(MembershipFactory(landlord=landlord, role="finance").user)
    return client


def test_page_shows_the_months_and_links_each_to_its_journal(books, finance):
    response = finance.get(reverse(URL))
    assert response.status_code == 200
    body = response.content.decode()
    assert "December 2026" in body and "1,295.20" in body
    journal = reverse("dashboard:ledger_journal")
    assert f"{journal}?since=2026-12-01&amp;until=2026-12-31" in body
    assert "USD" not in body  # landlord B's December
    assert "Adjustments" in body


def test_csv_for_export_rights(books, finance):
    response = finance.get(reverse(CSV_URL), {"year": "2026"})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["month"] for r in rows] == [f"2026-{n:02d}" for n in range(1, 13)] + ["2026 total"]
    december = rows[11]
    assert december["owed_at_start"] == "500.00"
    assert december["billed"] == "1295.20"
    assert december["received"] == "1000.00"
    assert december["written_off"] == "50.00"
    assert december["owed_at_end"] == "745.20"
    assert {r["currency"] for r in rows} == {"EUR"}


def test_viewer_cannot_download(books, client, landlord):
    client.force_login(MembershipFactory(landlord=landlord, role="viewer").user)
    assert client.get(reverse(URL)).status_code == 200
    assert client.get(reverse(CSV_URL)).status_code == 403


@pytest.mark.parametrize("year", ["abc", "1800", "3000", "2026.5", "-1"])
def test_a_bad_year_is_named_and_reads_nothing(books, finance, year):
    page = finance.get(reverse(URL), {"year": year})
    assert page.status_code == 400
    assert "year" in page.content.decode()
    download = finance.get(reverse(CSV_URL), {"year": year})
    assert download.status_code == 400
    assert "year" in download.content.decode()


def test_empty_year_says_so(landlord, other_landlord, finance):
    bill_december(landlord=other_landlord)
    body = finance.get(reverse(URL)).content.decode()
    assert "Nothing was posted to the ledger in 2026" in body
    assert "Download CSV" not in body
    body = finance.get(reverse(URL), {"year": "2031"}).content.decode()
    assert "that year has not begun" in body


def test_the_identity_names_adjustments_once_for_several_currencies(books, landlord, finance):
    tenant = books["ada"].tenants.get()
    _post_in(landlord, "USD", "import:usd", datetime(2026, 3, 2, 9, tzinfo=UTC), tenant, 7_000)
    body = finance.get(reverse(URL)).content.decode()
    assert body.count("+ adjustments") == 1


def test_a_month_with_only_a_processor_fee_is_not_quiet(books, landlord):
    fees, cash = (
        account_get_or_create(landlord=landlord, code=code, currency="EUR")
        for code in (AccountCode.PROCESSOR_FEES, AccountCode.CASH_IN_TRANSIT)
    )
    _post(landlord, "fee:march", datetime(2026, 3, 4, 9, tzinfo=UTC), (fees, 250), (cash, -250))
    [eur] = monthly_summary(landlord=landlord, year=2026, through=TODAY)
    march = eur.months[2]
    assert march.processor_fees == 250 and march.received == 0
    assert not march.quiet


def _post_in(landlord, currency, key, when, tenant, amount):
    """An opening balance owed by `tenant` in `currency`."""
    receivable = account_get_or_create(
        landlord=landlord, code=AccountCode.RECEIVABLE, currency=currency, tenant=tenant
    )
    opening = account_get_or_create(
        landlord=landlord, code=AccountCode.OPENING_BALANCE, currency=currency
    )
    transaction_post(
        landlord=landlord,
        idempotency_key=key,
        effective_at=when,
        description=key,
        entries=[
            EntrySpec(account=receivable, amount_minor=amount, currency=currency),
            EntrySpec(account=opening, amount_minor=-amount, currency=currency),
        ],
    )
