"""An invoice written after its issue day (a missed month billed now, a run resumed after
an outage, drafts reviewed late) is dated the day it is written: the tenant gets the
lease's due days to pay, the ledger posts it on that day rather than into a month already
reported, and dunning does not charge a fee the moment it exists. Building a past on
purpose (importing history) dates invoices on schedule when asked to."""

import io
from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.management import call_command

from dunning.models import DunningStep
from dunning.services import dunning_tick
from invoices import services
from invoices.models import Invoice, InvoiceKind, InvoiceSettings
from invoices.selectors import invoice_status
from ledger.models import LedgerTransaction
from ledger.selectors import trial_balance
from tests.factories import ChargeFactory, UserFactory

NOV = date(2026, 11, 1)
DEC = date(2026, 12, 1)


@pytest.fixture
def late_lease(landlord, other_landlord):
    """A Berlin lease that moved in on 12 November, due in 5 days; November was missed.
    Landlord B has a lease too, which billing A must not touch."""
    charge = ChargeFactory(
        lease__unit__property__landlord=landlord,
        lease__start_date=date(2026, 11, 12),
        lease__due_days=5,
        amount_minor=90_000,
    )
    ChargeFactory(lease__unit__property__landlord=other_landlord)
    return charge.lease


def berlin(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour - 1, 0, tzinfo=UTC)  # CET = UTC+1


def run_now(landlord, period_start, django_capture_on_commit_callbacks):
    """The dashboard's "Run billing now": start on commit, chunks through Celery."""
    with django_capture_on_commit_callbacks(execute=True):
        run, _queued = services.billing_run_start_now(
            landlord=landlord,
            period_start=period_start,
            as_of=date(2026, 12, 7),
            actor=UserFactory(username="owner@example.test"),
        )
    run.refresh_from_db()
    return run


def test_a_month_billed_late_is_dated_today_and_due_after_the_leases_due_days(
    landlord, other_landlord, late_lease, time_machine, django_capture_on_commit_callbacks
):
    time_machine.move_to(berlin(date(2026, 12, 7), 10), tick=False)
    before = trial_balance(landlord=landlord, before=landlord.day_start(DEC))
    run = run_now(landlord, NOV, django_capture_on_commit_callbacks)
    assert run.invoices_created == 1

    invoice = Invoice.objects.get(lease=late_lease, period_start=NOV)
    assert (invoice.issue_date, invoice.due_date) == (date(2026, 12, 7), date(2026, 12, 12))
    # The period billed is still November's from move-in; only the dates are truthful.
    assert (invoice.period_start, invoice.period_end) == (NOV, DEC)
    assert invoice_status(invoice=invoice, balance_minor=90_000, today=date(2026, 12, 7)) == "open"
    effective = set(
        LedgerTransaction.objects.filter(
            document_kind="invoice", document_id=invoice.pk
        ).values_list("effective_at", flat=True)
    )
    assert effective == {landlord.day_start(date(2026, 12, 7))}
    # November, as reported on 1 December, is unchanged.
    assert trial_balance(landlord=landlord, before=landlord.day_start(DEC)) == before
    assert not Invoice.objects.filter(landlord=other_landlord).exists()


def test_dunning_waits_for_the_new_due_date_of_a_late_invoice(
    landlord, late_lease, time_machine, django_capture_on_commit_callbacks
):
    time_machine.move_to(berlin(date(2026, 12, 7), 10), tick=False)
    run_now(landlord, NOV, django_capture_on_commit_callbacks)
    invoice = Invoice.objects.get(lease=late_lease, period_start=NOV)
    for day in range(7, 13):  # every hour up to the due day: nothing overdue yet
        for hour in (9, 13, 17):
            time_machine.move_to(berlin(date(2026, 12, day), hour), tick=False)
            dunning_tick(now=berlin(date(2026, 12, day), hour), landlord=landlord)
    actions = set(DunningStep.objects.filter(invoice=invoice).values_list("action", flat=True))
    assert not actions & {"late_fee", "final_notice", "escalate", "overdue_notice"}
    assert not Invoice.objects.filter(adjusts=invoice, kind=InvoiceKind.LATE_FEE).exists()


def test_a_run_on_its_billing_day_is_dated_on_that_day(
    landlord, late_lease, time_machine, django_capture_on_commit_callbacks
):
    time_machine.move_to(berlin(DEC, 7), tick=False)
    ChargeFactory(lease__unit__property__landlord=landlord, lease__due_days=5)
    run_now(landlord, DEC, django_capture_on_commit_callbacks)
    dates = set(Invoice.objects.filter(landlord=landlord).values_list("issue_date", "due_date"))
    assert dates == {(DEC, date(2026, 12, 6))}


def test_importing_history_dates_invoices_on_schedule_when_asked(
    landlord, late_lease, time_machine
):
    time_machine.move_to(berlin(date(2026, 12, 7), 10), tick=False)
    out = io.StringIO()
    call_command(
        "billing_run",
        "--landlord",
        landlord.slug,
        "--period",
        "2026-11",
        "--on-schedule",
        stdout=out,
    )
    invoice = Invoice.objects.get(lease=late_lease, period_start=NOV)
    assert (invoice.issue_date, invoice.due_date) == (date(2026, 11, 12), date(2026, 11, 17))


def test_the_command_dates_a_late_month_today_by_default(landlord, late_lease, time_machine):
    time_machine.move_to(berlin(date(2026, 12, 7), 10), tick=False)
    call_command(
        "billing_run", "--landlord", landlord.slug, "--period", "2026-11", stdout=io.StringIO()
    )
    invoice = Invoice.objects.get(lease=late_lease, period_start=NOV)
    assert (invoice.issue_date, invoice.due_date) == (date(2026, 12, 7), date(2026, 12, 12))


def test_drafts_reviewed_after_their_issue_day_are_dated_when_issued(
    landlord, late_lease, time_machine, django_capture_on_commit_callbacks
):
    InvoiceSettings.objects.create(landlord=landlord, review_drafts=True)
    ChargeFactory(lease__unit__property__landlord=landlord, lease__due_days=5)
    time_machine.move_to(berlin(DEC, 7), tick=False)
    run = run_now(landlord, DEC, django_capture_on_commit_callbacks)
    assert set(Invoice.objects.filter(billing_run=run).values_list("issue_date", flat=True)) == {
        DEC
    }

    time_machine.move_to(berlin(date(2026, 12, 9), 10), tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        issued = services.billing_run_issue(run=run, actor=None)
    assert issued == 2
    for invoice in Invoice.objects.filter(billing_run=run):
        assert invoice.issue_date == date(2026, 12, 9)
        assert invoice.due_date == date(2026, 12, 9) + timedelta(days=5)
        effective = set(
            LedgerTransaction.objects.filter(
                document_kind="invoice", document_id=invoice.pk
            ).values_list("effective_at", flat=True)
        )
        assert effective == {landlord.day_start(date(2026, 12, 9))}


def test_the_run_now_page_says_a_late_month_is_dated_today(
    staff_client, landlord, late_lease, time_machine
):
    time_machine.move_to(berlin(date(2026, 12, 7), 10), tick=False)
    page = staff_client.get("/app/billing/run/", {"month": "2026-11"}).content.decode()
    assert "it is dated today and due after the lease's due days" in page


def test_a_number_carries_the_year_its_invoice_is_issued_in(
    landlord, late_lease, time_machine, django_capture_on_commit_callbacks
):
    """December billed on 2 January (a run resumed after the holidays), drafts of
    December issued in January and a replacement written in January are numbered in
    2027's series, the year on the invoice; each series stays consecutive."""
    from tests.invoices.factories import lease_with_charges

    on_time = lease_with_charges(landlord=landlord, renter="Ann Early")
    time_machine.move_to(berlin(date(2026, 12, 20), 10), tick=False)
    services.billing_run_execute(
        landlord=landlord, period_start=NOV, as_of=date(2026, 12, 20), started_by="test"
    )
    november = Invoice.objects.filter(landlord=landlord, period_start=NOV)
    assert sorted(i.number for i in november) == ["INV-2026-000001", "INV-2026-000002"]

    time_machine.move_to(berlin(date(2027, 1, 2), 10), tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        services.billing_run_start_now(
            landlord=landlord,
            period_start=DEC,
            as_of=date(2027, 1, 2),
            actor=UserFactory(username="owner@example.test"),
        )
    december = list(Invoice.objects.filter(landlord=landlord, period_start=DEC).order_by("number"))
    assert [(i.issue_date, i.number) for i in december] == [
        (date(2027, 1, 2), "INV-2027-000001"),
        (date(2027, 1, 2), "INV-2027-000002"),
    ]
    ended = services.lease_end_and_rebill(
        landlord=landlord,
        lease=on_time,
        end_date=date(2026, 12, 16),
        reason="Moved out",
        actor=UserFactory(username="manager@example.test"),
    )
    (replacement,) = ended.replacements
    assert (replacement.issue_date, replacement.number) == (date(2027, 1, 2), "INV-2027-000003")


def test_drafts_issued_in_the_next_year_take_its_series(
    landlord, late_lease, time_machine, django_capture_on_commit_callbacks
):
    InvoiceSettings.objects.create(landlord=landlord, review_drafts=True)
    time_machine.move_to(berlin(DEC, 7), tick=False)
    run = run_now(landlord, DEC, django_capture_on_commit_callbacks)
    time_machine.move_to(berlin(date(2027, 1, 4), 10), tick=False)
    with django_capture_on_commit_callbacks(execute=True):
        services.billing_run_issue(run=run, actor=None)
    (invoice,) = Invoice.objects.filter(billing_run=run)
    assert (invoice.issue_date, invoice.number) == (date(2027, 1, 4), "INV-2027-000001")
