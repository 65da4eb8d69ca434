"""Billing reads (invoices/selectors.py): derived invoice status, the status filter in
SQL, keyset pages and the "who is due" preview. Landlord B always has invoices too."""

from datetime import UTC, date, datetime

import pytest

from invoices import selectors, services
from invoices.models import Invoice, InvoiceSettings
from invoices.selectors import InvoiceFilters, InvoiceStatus
from ledger.models import AccountCode
from ledger.services import AccountKey, EntrySpec, accounts_get_or_create, transaction_post
from tenants.models import Lease
from tests.factories import ChargeFactory, LeaseFactory

DEC = date(2026, 12, 1)
END_OF_DEC = date(2026, 12, 31)
DUE_DAY = date(2026, 12, 1)  # billing day 1, due_days 0: issued and due on Dec 1
AFTER_DUE = date(2026, 12, 2)


def bill(landlord, *, period=DEC, as_of=END_OF_DEC):
    return services.billing_run_execute(
        landlord=landlord, period_start=period, as_of=as_of, started_by="test", on_schedule=True
    )


def pay(invoice: Invoice, amount: int, *, key: str = "") -> None:
    """A payment-like posting: debit the bank, credit the tenant's receivable on the invoice."""
    landlord, currency = invoice.landlord, invoice.currency
    receivable = AccountKey(AccountCode.RECEIVABLE, currency, invoice.tenant_id)
    bank = AccountKey(AccountCode.BANK, currency)
    accounts = accounts_get_or_create(landlord=landlord, keys=[receivable, bank])
    transaction_post(
        landlord=landlord,
        idempotency_key=key or f"test-payment:{invoice.pk}:{amount}",
        effective_at=datetime(2026, 12, 5, 12, tzinfo=UTC),
        description=f"Payment for {invoice.number}",
        entries=[
            EntrySpec(account=accounts[bank], amount_minor=amount, currency=currency),
            EntrySpec(
                account=accounts[receivable],
                amount_minor=-amount,
                currency=currency,
                document_kind="invoice",
                document_id=invoice.pk,
            ),
        ],
    )


def billed_portfolio(landlord, count: int, *, amount: int = 100_000) -> list[Invoice]:
    for i in range(count):
        ChargeFactory(
            lease__unit__property__landlord=landlord,
            lease__billing_day=1 + i % 4,
            amount_minor=amount + i,
        )
    bill(landlord)
    return list(Invoice.objects.filter(landlord=landlord).order_by("pk"))


@pytest.fixture
def theirs(other_landlord):
    """Landlord B's invoices, some paid: a page or filter that forgets its scope shows them."""
    for lease in Lease.objects.filter(landlord=other_landlord):
        ChargeFactory(lease=lease)
    invoices = billed_portfolio(other_landlord, 6)
    pay(invoices[0], invoices[0].total_minor)
    return invoices


@pytest.fixture
def mine(landlord, theirs):
    return billed_portfolio(landlord, 5)


def statuses(landlord, invoices, today):
    return selectors.invoice_statuses(landlord=landlord, invoices=invoices, today=today)


# --- derived status -----------------------------------------------------------------


def test_an_unpaid_invoice_is_open_until_its_due_date_and_overdue_after(landlord, mine):
    invoice = next(i for i in mine if i.due_date == DUE_DAY)
    assert statuses(landlord, [invoice], DUE_DAY) == {invoice.pk: InvoiceStatus.OPEN}
    assert statuses(landlord, [invoice], AFTER_DUE) == {invoice.pk: InvoiceStatus.OVERDUE}


def test_a_payment_of_the_total_makes_an_invoice_paid(landlord, mine):
    invoice = mine[0]
    pay(invoice, invoice.total_minor)
    assert statuses(landlord, [invoice], AFTER_DUE) == {invoice.pk: InvoiceStatus.PAID}


def test_a_part_payment_makes_an_invoice_partially_paid_even_when_late(landlord, mine):
    invoice = mine[0]
    pay(invoice, 1_000)
    assert statuses(landlord, [invoice], AFTER_DUE) == {invoice.pk: InvoiceStatus.PARTIALLY_PAID}
    assert selectors.invoice_balances(landlord=landlord, invoices=[invoice]) == {
        invoice.pk: invoice.total_minor - 1_000
    }


def test_a_voided_invoice_is_void_and_owes_nothing(landlord, mine):
    invoice = services.invoice_void(invoice=mine[0], reason="Wrong tenant", actor=None)
    assert statuses(landlord, [invoice], AFTER_DUE) == {invoice.pk: InvoiceStatus.VOID}
    assert selectors.invoice_balances(landlord=landlord, invoices=[invoice]) == {invoice.pk: 0}


def test_an_invoice_of_a_run_stopped_for_review_is_draft(landlord, theirs):
    InvoiceSettings.objects.update_or_create(landlord=landlord, defaults={"review_drafts": True})
    [invoice] = billed_portfolio(landlord, 1)
    assert statuses(landlord, [invoice], AFTER_DUE) == {invoice.pk: InvoiceStatus.DRAFT}


def test_statuses_of_a_page_take_one_query(landlord, mine, django_assert_num_queries):
    with django_assert_num_queries(1):
        result = statuses(landlord, mine, AFTER_DUE)
    assert set(result) == {i.pk for i in mine}


# --- the status filter in SQL -------------------------------------------------------


@pytest.fixture
def every_status(landlord, theirs):
    """Landlord A's invoices in every derived status (drafts need their own month)."""
    invoices = billed_portfolio(landlord, 6)
    pay(invoices[0], invoices[0].total_minor)  # paid
    pay(invoices[1], invoices[1].total_minor + 500)  # overpaid: still paid
    pay(invoices[2], 2_000)  # partially paid
    services.invoice_void(invoice=invoices[3], reason="Duplicate", actor=None)  # void
    InvoiceSettings.objects.update_or_create(landlord=landlord, defaults={"review_drafts": True})
    bill(landlord, period=date(2027, 1, 1), as_of=date(2027, 1, 31))  # drafts
    return Invoice.objects.filter(landlord=landlord)


@pytest.mark.parametrize("today", [DUE_DAY, AFTER_DUE])
def test_the_status_filter_selects_exactly_the_invoices_of_that_derived_status(
    landlord, every_status, today
):
    derived = statuses(landlord, every_status, today)
    assert set(derived.values()) >= {"paid", "partially_paid", "void", "draft"}
    for status in InvoiceStatus.values:
        filtered = selectors.invoice_list(
            landlord=landlord, filters=InvoiceFilters(status=status), today=today
        )
        expected = {pk for pk, s in derived.items() if s == status}
        assert set(filtered.values_list("pk", flat=True)) == expected, status


def test_the_status_filter_never_shows_another_landlords_invoices(landlord, theirs, mine):
    paid = selectors.invoice_list(
        landlord=landlord, filters=InvoiceFilters(status="paid"), today=AFTER_DUE
    )
    assert not paid.exists()


# --- list filters -------------------------------------------------------------------


def test_filters_narrow_by_period_property_tenant_and_number(landlord, mine):
    first = mine[0]
    bill(landlord, period=date(2027, 1, 1), as_of=date(2027, 1, 31))

    def ids(**filters):
        qs = selectors.invoice_list(
            landlord=landlord, filters=InvoiceFilters(**filters), today=DUE_DAY
        )
        return set(qs.values_list("pk", flat=True))

    assert ids(period=DEC) == {i.pk for i in mine}
    assert len(ids(period=date(2027, 1, 1))) == len(mine)
    assert ids(property_id=first.lease.unit.property_id, period=DEC) == {first.pk}
    assert ids(tenant_id=first.tenant_id, period=DEC) == {first.pk}
    assert ids(lease_id=first.lease_id) == set(
        Invoice.objects.filter(lease=first.lease).values_list("pk", flat=True)
    )
    assert ids(number=first.number) == {first.pk}
    assert ids(number=first.number.lower()[-6:]) >= {first.pk}
    assert ids(run_id=first.billing_run_id) == {i.pk for i in mine}


def test_filtering_by_another_landlords_ids_finds_nothing(landlord, mine, theirs):
    other = theirs[0]
    for filters in (
        InvoiceFilters(tenant_id=other.tenant_id),
        InvoiceFilters(property_id=other.lease.unit.property_id),
        InvoiceFilters(run_id=other.billing_run_id),
    ):
        assert not selectors.invoice_list(landlord=landlord, filters=filters, today=DUE_DAY)
    # Numbers are per landlord: searching B's number finds A's own invoice of that number.
    found = selectors.invoice_list(
        landlord=landlord, filters=InvoiceFilters(number=other.number), today=DUE_DAY
    )
    assert [i.landlord_id for i in found] == [landlord.pk]


# --- keyset pages -------------------------------------------------------------------


def walk(landlord, *, filters=None, size=7, today=DUE_DAY):
    """Follow "Older" links from the top, then "Newer" links back up."""
    filters = filters or InvoiceFilters()
    pages, after = [], None
    while True:
        page = selectors.invoice_page(
            landlord=landlord, filters=filters, today=today, after=after, size=size
        )
        pages.append(page)
        if not page.older:
            break
        after = page.older
    back, before = [], pages[-1].newer
    while before:
        page = selectors.invoice_page(
            landlord=landlord, filters=filters, today=today, before=before, size=size
        )
        back.append(page)
        before = page.newer
    return pages, back


@pytest.fixture
def sixty(landlord, theirs):
    return billed_portfolio(landlord, 60)


def test_keyset_pages_walk_every_invoice_exactly_once_in_order(landlord, sixty):
    pages, back = walk(landlord)
    seen = [row.invoice.pk for page in pages for row in page.rows]
    expected = list(
        Invoice.objects.filter(landlord=landlord)
        .order_by("-issue_date", "-id")
        .values_list("pk", flat=True)
    )
    assert len(pages) == 9  # 60 rows by 7
    assert seen == expected
    assert pages[0].newer is None and pages[-1].older is None
    # Walking back up with "Newer" shows the same pages in reverse.
    assert [[r.invoice.pk for r in p.rows] for p in back] == [
        [r.invoice.pk for r in p.rows] for p in reversed(pages[:-1])
    ]
    assert back[-1].newer is None


def test_keyset_pages_of_a_filter_walk_only_its_rows(landlord, sixty):
    for i in sixty[:10]:
        pay(i, i.total_minor)
    pages, _ = walk(landlord, filters=InvoiceFilters(status="paid"), size=3)
    seen = [row.invoice.pk for page in pages for row in page.rows]
    assert sorted(seen) == sorted(i.pk for i in sixty[:10])
    assert len(seen) == len(set(seen))
    assert {row.status for page in pages for row in page.rows} == {"paid"}


def test_no_page_shows_another_landlords_invoices(landlord, other_landlord, sixty, theirs):
    pages, _ = walk(landlord, size=25)
    assert {row.invoice.landlord_id for page in pages for row in page.rows} == {landlord.pk}


def test_a_page_takes_two_queries_however_many_invoices(landlord, sixty, django_assert_num_queries):
    with django_assert_num_queries(2):
        page = selectors.invoice_page(
            landlord=landlord, filters=InvoiceFilters(status="open"), today=DUE_DAY
        )
        # Related rows shown in the table come with the page query.
        [(r.invoice.tenant.full_name, r.invoice.lease.unit.property.name) for r in page.rows]
    assert len(page.rows) == selectors.PAGE_SIZE


def test_a_malformed_cursor_shows_the_first_page(landlord, mine):
    first = selectors.invoice_page(landlord=landlord, filters=InvoiceFilters(), today=DUE_DAY)
    for junk in ("nonsense", "2026-13-45_1", "2026-12-01_x", "'; drop table--"):
        page = selectors.invoice_page(
            landlord=landlord, filters=InvoiceFilters(), today=DUE_DAY, after=junk
        )
        assert [r.invoice.pk for r in page.rows] == [r.invoice.pk for r in first.rows]


# --- billing run preview ------------------------------------------------------------


def test_the_preview_counts_the_leases_the_run_then_bills(landlord, theirs):
    for day in (1, 5, 20):
        ChargeFactory(lease__unit__property__landlord=landlord, lease__billing_day=day)
    LeaseFactory(unit__property__landlord=landlord, end_date=date(2026, 11, 1))  # ended
    as_of = date(2026, 12, 10)
    preview = selectors.billing_run_preview(landlord=landlord, period_start=DEC, as_of=as_of)
    assert (preview.leases_due, preview.run) == (2, None)
    run, chunks = services.billing_run_start(landlord=landlord, period_start=DEC, as_of=as_of)
    assert sum(len(c) for c in chunks) == preview.leases_due
    for chunk in chunks:
        services.billing_run_process_chunk(run_id=run.pk, lease_ids=chunk)
    again = selectors.billing_run_preview(landlord=landlord, period_start=DEC, as_of=as_of)
    assert (again.leases_due, again.run) == (0, run)


def test_the_preview_skips_leases_already_noted_on_the_run(landlord, theirs):
    # Rent from next year only: nothing to bill in December, a skip.
    ChargeFactory(lease__unit__property__landlord=landlord, start_date=date(2027, 1, 1))
    bill(landlord)
    preview = selectors.billing_run_preview(landlord=landlord, period_start=DEC, as_of=END_OF_DEC)
    assert preview.leases_due == 0


def test_the_preview_counts_leases_with_an_error_which_running_again_retries(landlord, theirs):
    LeaseFactory(unit__property__landlord=landlord)  # no charges: an error issue
    bill(landlord)
    preview = selectors.billing_run_preview(landlord=landlord, period_start=DEC, as_of=END_OF_DEC)
    assert preview.leases_due == 1
