"""The monthly billing run: exactly once, gapless numbers, balanced ledger, local days."""

import threading
from datetime import UTC, date, datetime

import pytest
from django.db import connection

from invoices import selectors, services
from invoices.models import BillingRun, BillingRunIssue, Invoice, InvoiceState, Notification
from ledger.models import LedgerTransaction
from ledger.selectors import document_balance, ledger_verify, trial_balance
from tenants.models import AuditEvent, ChargeFrequency, ChargeKind
from tests.factories import (
    ChargeFactory,
    LandlordFactory,
    LeaseFactory,
    TenantFactory,
    UserFactory,
)

DEC = date(2026, 12, 1)
END_OF_DEC = date(2026, 12, 31)


def bill(landlord, period=DEC, as_of=END_OF_DEC):
    return services.billing_run_execute(
        landlord=landlord, period_start=period, as_of=as_of, started_by="test", on_schedule=True
    )


@pytest.fixture
def portfolio(landlord, other_landlord):
    leases = [
        ChargeFactory(lease__unit__property__landlord=landlord, amount_minor=100_000 + i).lease
        for i in range(5)
    ]
    for lease in leases[:2]:
        ChargeFactory(lease=lease, kind=ChargeKind.PARKING, amount_minor=5_000)
    ChargeFactory.create_batch(3, lease__unit__property__landlord=other_landlord)
    return leases


def test_a_run_bills_every_active_lease_once_with_lines_and_totals(landlord, portfolio):
    run = bill(landlord)
    assert run.status == "completed"
    assert (run.leases_due, run.invoices_created, run.failed) == (5, 5, 0)
    invoice = Invoice.objects.get(lease=portfolio[0], period_start=DEC)
    assert invoice.state == InvoiceState.ISSUED
    assert invoice.total_minor == 105_000
    assert [line.amount_minor for line in invoice.lines.all()] == [100_000, 5_000]


def test_rerunning_a_billing_run_creates_no_new_invoices(landlord, portfolio):
    bill(landlord)
    numbers = sorted(Invoice.objects.values_list("number", flat=True))
    run = bill(landlord)
    assert run.invoices_created == 5
    assert sorted(Invoice.objects.values_list("number", flat=True)) == numbers
    assert BillingRun.objects.filter(landlord=landlord).count() == 1


def test_a_duplicated_chunk_writes_nothing(landlord, portfolio):
    run, chunks = services.billing_run_start(landlord=landlord, period_start=DEC, as_of=END_OF_DEC)
    first = services.billing_run_process_chunk(run_id=run.pk, lease_ids=chunks[0])
    again = services.billing_run_process_chunk(run_id=run.pk, lease_ids=chunks[0])
    assert (first.created, again.created) == (5, 0)
    assert Invoice.objects.filter(landlord=landlord).count() == 5


def test_numbers_are_consecutive_per_landlord_without_gaps(landlord, other_landlord, portfolio):
    bill(landlord)
    bill(other_landlord)
    bill(landlord, period=date(2027, 1, 1), as_of=date(2027, 1, 31))
    for owner in (landlord, other_landlord):
        by_year: dict[str, list[int]] = {}
        for number in Invoice.objects.filter(landlord=owner).values_list("number", flat=True):
            prefix, year, n = number.split("-")
            by_year.setdefault(year, []).append(int(n))
        for values in by_year.values():
            assert sorted(values) == list(range(1, len(values) + 1))


def test_issuing_posts_a_balanced_transaction_per_invoice(landlord, portfolio):
    bill(landlord)
    invoice = Invoice.objects.get(lease=portfolio[0], period_start=DEC)
    assert document_balance(landlord=landlord, document_kind="invoice", document_id=invoice.pk) == {
        "EUR": 105_000
    }
    assert trial_balance(landlord=landlord).totals == {"EUR": 0}
    assert ledger_verify(landlord=landlord).ok


def test_an_invoice_email_is_queued_once_per_invoice(landlord, portfolio):
    bill(landlord)
    bill(landlord)
    assert Notification.objects.filter(landlord=landlord, kind="invoice_issued").count() == 5


def test_a_lease_with_no_charges_is_recorded_as_an_error_and_the_run_goes_on(landlord, portfolio):
    bare = LeaseFactory(unit__property__landlord=landlord)
    run = bill(landlord)
    assert (run.invoices_created, run.failed) == (5, 1)
    issue = BillingRunIssue.objects.get(run=run, lease=bare)
    assert issue.kind == "error" and "no charges" in issue.message


def test_a_charge_in_another_currency_is_an_error_for_that_lease_only(landlord, portfolio):
    lease = LeaseFactory(unit__property__landlord=landlord)
    ChargeFactory(lease=lease, currency="USD")
    run = bill(landlord)
    assert run.failed == 1 and run.invoices_created == 5
    assert "USD" in BillingRunIssue.objects.get(run=run, lease=lease).message
    assert not Invoice.objects.filter(lease=lease).exists()


def test_a_mid_month_move_in_is_issued_on_move_in_and_prorated(landlord):
    lease = LeaseFactory(unit__property__landlord=landlord, start_date=date(2026, 12, 11))
    ChargeFactory(lease=lease, amount_minor=310_000)
    not_yet = bill(landlord, as_of=date(2026, 12, 10))
    assert not_yet.invoices_created == 0
    run = bill(landlord, as_of=date(2026, 12, 11))
    invoice = Invoice.objects.get(lease=lease)
    assert run.invoices_created == 1
    assert invoice.issue_date == date(2026, 12, 11)
    assert invoice.total_minor == 210_000  # 21 of 31 days


def test_a_one_off_charge_is_billed_exactly_once(landlord):
    lease = ChargeFactory(lease__unit__property__landlord=landlord).lease
    ChargeFactory(
        lease=lease,
        kind=ChargeKind.OTHER,
        frequency=ChargeFrequency.ONE_OFF,
        start_date=date(2026, 12, 5),
        amount_minor=7_500,
    )
    bill(landlord)
    bill(landlord, period=date(2027, 1, 1), as_of=date(2027, 1, 31))
    totals = list(
        Invoice.objects.filter(lease=lease)
        .order_by("period_start")
        .values_list("total_minor", flat=True)
    )
    assert totals == [127_500, 120_000]


def test_voiding_reverses_the_posting_and_voiding_again_is_refused(landlord, portfolio):
    bill(landlord)
    invoice = Invoice.objects.filter(landlord=landlord).first()
    services.invoice_void(invoice=invoice, reason="Wrong rent", actor=None)
    invoice.refresh_from_db()
    assert invoice.state == InvoiceState.VOID
    assert document_balance(landlord=landlord, document_kind="invoice", document_id=invoice.pk) in (
        {},
        {"EUR": 0},
    )
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="already void"):
        services.invoice_void(invoice=invoice, reason="again", actor=None)


def test_an_invoice_voided_before_its_issue_day_is_credited_on_that_day(
    landlord, portfolio, time_machine
):
    """Written ahead (on schedule, on 20 November for 1 December): voided on 20
    November, its credit note is dated 1 December, never before the invoice."""
    time_machine.move_to(datetime(2026, 11, 20, 9, tzinfo=UTC), tick=False)
    from tests.invoices.factories import bill_december

    invoice = bill_december(landlord=landlord)[0]
    services.invoice_void(invoice=invoice, reason="Tenant left early", actor=None)
    issue, void = LedgerTransaction.objects.filter(
        landlord=landlord, document_kind="invoice", document_id=invoice.pk
    ).order_by("seq")
    assert void.reverses_id == issue.pk
    assert void.effective_at == issue.effective_at == landlord.day_start(DEC)
    invoice.refresh_from_db()
    assert invoice.voided_at == datetime(2026, 11, 20, 9, tzinfo=UTC)
    assert ledger_verify(landlord=landlord).ok


def tick(capture, when):
    """One beat tick; chunk tasks are queued on commit, so run the captured callbacks."""
    with capture(execute=True):
        services.billing_runs_start_due(now=when)


def test_the_schedule_bills_each_landlord_on_its_own_local_day(
    db, django_capture_on_commit_callbacks
):
    berlin = LandlordFactory(timezone="Europe/Berlin")
    new_york = LandlordFactory(timezone="America/New_York", default_currency="USD")
    for owner in (berlin, new_york):
        ChargeFactory(lease__unit__property__landlord=owner, lease__start_date=date(2026, 1, 1))
    # 1 Dec 00:30 in Berlin is still 30 Nov in New York.
    tick(django_capture_on_commit_callbacks, datetime(2026, 11, 30, 23, 30, tzinfo=UTC))
    assert Invoice.objects.filter(landlord=berlin, period_start=DEC).count() == 1
    assert not Invoice.objects.filter(landlord=new_york, period_start=DEC).exists()
    tick(django_capture_on_commit_callbacks, datetime(2026, 12, 1, 5, 0, tzinfo=UTC))
    assert Invoice.objects.filter(landlord=new_york, period_start=DEC).count() == 1


def test_the_schedule_uses_local_days_across_a_dst_change(db, django_capture_on_commit_callbacks):
    # Europe switches to summer time on 29 Mar 2026; 1 Apr 00:15 local is 31 Mar 22:15 UTC.
    berlin = LandlordFactory(timezone="Europe/Berlin")
    ChargeFactory(lease__unit__property__landlord=berlin, lease__start_date=date(2026, 1, 1))
    tick(django_capture_on_commit_callbacks, datetime(2026, 3, 31, 21, 59, tzinfo=UTC))
    assert not Invoice.objects.filter(period_start=date(2026, 4, 1)).exists()
    tick(django_capture_on_commit_callbacks, datetime(2026, 3, 31, 22, 15, tzinfo=UTC))
    assert Invoice.objects.filter(period_start=date(2026, 4, 1)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_runs_of_one_landlord_keep_numbers_gapless():
    landlord = LandlordFactory()
    tenant = TenantFactory(landlord=landlord)
    for _ in range(40):
        ChargeFactory(lease__unit__property__landlord=landlord, lease__tenants=[tenant])
    run, chunks = services.billing_run_start(
        landlord=landlord, period_start=DEC, as_of=END_OF_DEC, chunk_size=10
    )
    barrier = threading.Barrier(2)
    errors = []

    def worker():
        try:
            barrier.wait()
            for chunk in chunks:  # both threads process every chunk: duplicates must be no-ops
                services.billing_run_process_chunk(run_id=run.pk, lease_ids=chunk)
        except Exception as exc:  # pragma: no cover - surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    numbers = sorted(
        int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True)
    )
    assert numbers == list(range(1, 41))
    assert ledger_verify(landlord=landlord).ok


def test_voiding_a_paid_invoice_keeps_the_money_as_tenant_credit(landlord, portfolio):
    from ledger import services as ledger
    from ledger.models import AccountCode

    bill(landlord)
    invoice = Invoice.objects.get(lease=portfolio[2], period_start=DEC)
    keys = [
        ledger.AccountKey(AccountCode.CASH_IN_TRANSIT, "EUR"),
        ledger.AccountKey(AccountCode.RECEIVABLE, "EUR", invoice.tenant_id),
    ]
    accounts = ledger.accounts_get_or_create(landlord=landlord, keys=keys)
    ref = {"document_kind": "invoice", "document_id": invoice.pk}
    ledger.transaction_post(
        landlord=landlord,
        idempotency_key="test:payment",
        effective_at=datetime(2026, 12, 3, tzinfo=UTC),
        description="card payment",
        entries=[
            ledger.EntrySpec(account=accounts[keys[0]], amount_minor=40_000, currency="EUR"),
            ledger.EntrySpec(
                account=accounts[keys[1]], amount_minor=-40_000, currency="EUR", **ref
            ),
        ],
    )

    services.invoice_void(invoice=invoice, reason="Billed the wrong unit", actor=None)

    assert document_balance(landlord=landlord, document_kind="invoice", document_id=invoice.pk) in (
        {},
        {"EUR": 0},
    )
    credit = ledger.account_get_or_create(
        landlord=landlord, code=AccountCode.TENANT_CREDIT, currency="EUR", tenant=invoice.tenant
    )
    from ledger.selectors import account_balance

    assert account_balance(account=credit) == -40_000  # held for the tenant
    assert trial_balance(landlord=landlord).totals == {"EUR": 0}
    assert ledger_verify(landlord=landlord).ok


def test_small_chunks_are_packed_into_tasks_of_at_most_task_leases():
    chunks = [(1, [1, 2]), (2, [3, 4, 5]), (3, [6]), (4, list(range(10, 20))), (5, [7])]
    assert services._chunks_pack(chunks, limit=6) == [
        [(1, [1, 2]), (2, [3, 4, 5]), (3, [6])],
        [(4, list(range(10, 20)))],  # bigger than the limit: a task of its own
        [(5, [7])],
    ]


def test_the_tick_queues_small_landlords_chunks_together(
    db, django_capture_on_commit_callbacks, monkeypatch
):
    from invoices import tasks

    owners = [LandlordFactory(timezone="Europe/Berlin") for _ in range(3)]
    for owner in owners:
        for _ in range(2):
            ChargeFactory(lease__unit__property__landlord=owner, lease__start_date=date(2026, 1, 1))
    queued = []
    monkeypatch.setattr(
        tasks.billing_run_process_chunks_task,
        "apply_async",
        lambda kwargs, **options: queued.append(kwargs),
    )
    tick(django_capture_on_commit_callbacks, datetime(2026, 12, 1, 12, 0, tzinfo=UTC))
    assert len(queued) == 1
    runs = {run.pk: run for run in BillingRun.objects.filter(period_start=DEC)}
    assert sorted(run_id for run_id, _ids in queued[0]["chunks"]) == sorted(runs)
    assert all(len(ids) == 2 for _run_id, ids in queued[0]["chunks"])
    started = AuditEvent.objects.filter(action="billing_run.start", object_type="BillingRun")
    assert sorted(started.values_list("landlord_id", "object_id")) == sorted(
        (run.landlord_id, str(run.pk)) for run in runs.values()
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.billing_run_process_chunks_task.apply(kwargs=queued[0]).get() == 6
    assert Invoice.objects.filter(period_start=DEC).count() == 6
    assert Notification.objects.count() == 6
    for run in runs.values():
        run.refresh_from_db()
        assert (run.status, run.invoices_created) == ("completed", 2)
    # The same message again (redelivered after a lost ack) writes nothing.
    assert tasks.billing_run_process_chunks_task.apply(kwargs=queued[0]).get() == 0
    assert Invoice.objects.filter(period_start=DEC).count() == 6


def test_a_failing_chunk_rolls_back_alone_and_only_it_is_retried(
    landlord, other_landlord, portfolio, monkeypatch
):
    from invoices import tasks

    started = [
        services.billing_run_start(landlord=owner, period_start=DEC, as_of=END_OF_DEC)
        for owner in (landlord, other_landlord)
    ]
    chunks = [[run.pk, chunk] for run, run_chunks in started for chunk in run_chunks]
    failing, other = started[0][0].pk, started[1][0].pk
    real = services._bill_chunks
    calls = []

    def flaky(chunks, **kwargs):
        run_ids = [run_id for run_id, _ids in chunks]
        calls.append(run_ids)
        # The failing landlord's chunk breaks twice: billed with the other's, then alone.
        if failing in run_ids and sum(failing in c for c in calls) <= 2:
            real(chunks, **kwargs)  # written, then the connection drops before commit
            raise RuntimeError("connection lost")
        return real(chunks, **kwargs)

    monkeypatch.setattr(services, "_bill_chunks", flaky)
    result = tasks.billing_run_process_chunks_task.apply(kwargs={"chunks": chunks})
    assert result.successful(), result.traceback
    # Together first; then one by one, where the other landlord's chunk commits; the
    # task's retry carries only the failed chunk.
    assert calls == [[failing, other], [failing], [other], [failing]]
    # 5 of the landlord's leases; 3 of the other's (2 have no charges: errors).
    assert Invoice.objects.filter(period_start=DEC).count() == 5 + 3
    numbers = sorted(
        int(n.rsplit("-", 1)[1])
        for n in Invoice.objects.filter(landlord=landlord).values_list("number", flat=True)
    )
    assert numbers == [1, 2, 3, 4, 5]


def test_chunks_of_several_landlords_are_billed_together_each_in_its_own_series(
    landlord, other_landlord, portfolio
):
    started = [
        services.billing_run_start(landlord=owner, period_start=DEC, as_of=END_OF_DEC)
        for owner in (landlord, other_landlord)
    ]
    chunks = [(run.pk, chunk) for run, run_chunks in started for chunk in run_chunks]
    result = services.billing_run_process_chunks(chunks=chunks)
    assert (result.created, result.failed_chunks) == (8, ())
    for owner, count in ((landlord, 5), (other_landlord, 3)):
        numbers = Invoice.objects.filter(landlord=owner).values_list("number", flat=True)
        assert sorted(int(n.rsplit("-", 1)[1]) for n in numbers) == list(range(1, count + 1))
    for run, _chunks in started:
        run.refresh_from_db()
        assert run.status == "completed"
    assert Notification.objects.count() == 8
    for owner in (landlord, other_landlord):
        assert ledger_verify(landlord=owner).ok


def test_a_chunk_queued_by_the_one_chunk_task_name_still_bills(landlord, portfolio):
    from invoices import tasks

    run, chunks = services.billing_run_start(landlord=landlord, period_start=DEC, as_of=END_OF_DEC)
    result = tasks.billing_run_process_chunk_task.apply(
        kwargs={"run_id": run.pk, "lease_ids": chunks[0]}
    )
    assert result.get() == 5


def test_a_one_off_entered_after_the_last_month_is_billed_on_a_final_invoice(
    landlord, other_landlord
):
    # A fixed-term lease to 20 December; its December was billed on the 1st, and the
    # cleaning fee of the 18th was entered only after that.
    lease = LeaseFactory(unit__property__landlord=landlord, end_date=date(2026, 12, 20))
    ChargeFactory(lease=lease, amount_minor=310_000, end_date=date(2026, 12, 20))
    ChargeFactory(lease__unit__property__landlord=other_landlord, end_date=date(2026, 12, 20))
    bill(landlord, as_of=date(2026, 12, 1))
    ChargeFactory(
        lease=lease,
        kind=ChargeKind.OTHER,
        description="Final cleaning",
        frequency=ChargeFrequency.ONE_OFF,
        start_date=date(2026, 12, 18),
        amount_minor=15_000,
    )
    bill(landlord, period=date(2027, 1, 1), as_of=date(2027, 1, 31))
    final = Invoice.objects.get(lease=lease, period_start=date(2027, 1, 1))
    assert [(line.description, line.amount_minor) for line in final.lines.all()] == [
        ("Final cleaning (dated 18 Dec 2026)", 15_000)
    ]
    assert final.total_minor == 15_000


def test_running_again_bills_a_lease_whose_error_was_fixed(
    landlord, portfolio, django_capture_on_commit_callbacks
):
    lease = LeaseFactory(unit__property__landlord=landlord)
    charge = ChargeFactory(lease=lease, currency="USD", amount_minor=90_000)
    bill(landlord)
    charge.currency = "EUR"
    charge.save(update_fields=["currency"])
    preview = selectors.billing_run_preview(landlord=landlord, period_start=DEC, as_of=END_OF_DEC)
    assert preview.leases_due == 1
    with django_capture_on_commit_callbacks(execute=True):
        _run, queued = services.billing_run_start_now(
            landlord=landlord, period_start=DEC, as_of=END_OF_DEC, actor=UserFactory()
        )
    run = BillingRun.objects.get(landlord=landlord, period_start=DEC)
    assert queued == 1
    assert Invoice.objects.get(lease=lease, period_start=DEC).total_minor == 90_000
    assert (run.status, run.leases_due, run.invoices_created, run.failed) == (
        "completed",
        6,
        6,
        0,
    )
    assert not BillingRunIssue.objects.filter(run=run).exists()


def test_the_due_leases_are_read_without_jit(landlord):
    """The EXISTS for ended leases inflate the planner's estimate past `jit_above_cost`
    at 100,000 leases; compiling then costs more than the query (decision 0007)."""
    from django.test.utils import CaptureQueriesContext

    ChargeFactory(lease=LeaseFactory(unit__property__landlord=landlord))
    with CaptureQueriesContext(connection) as captured:
        services.billing_runs_start_due(now=datetime(2026, 12, 1, 12, tzinfo=UTC))
        services.billing_runs_start_due(now=datetime(2026, 12, 1, 13, tzinfo=UTC))
    statements = [q["sql"] for q in captured]
    reads = [i for i, sql in enumerate(statements) if 'FROM "tenants_lease"' in sql]
    assert len(reads) >= 2  # the start, then the settled check of the second tick
    for i in reads:
        assert any(s == "SET LOCAL jit = off" for s in statements[:i]), statements[i]
