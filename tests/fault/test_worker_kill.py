"""Fault test: a real Celery worker billing 20,000 leases is SIGKILLed at random moments
and restarted; the month must still end with exactly one invoice per lease, gapless
numbers per landlord and a ledger that balances and verifies.

Killing the worker's whole process group leaves the tasks it had taken (running or
prefetched) unacknowledged in Redis, where they would only come back after the
visibility timeout (hours). Recovery must therefore come from the application itself:
the beat tick (`billing_runs_start_due`) resumes each unfinished run and re-dispatches
the leases that still have no invoice.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, defaultdict
from datetime import UTC, date, datetime

import pytest
from django.db import connection, transaction
from django.db.models import Count, F, Sum

from invoices import services
from invoices.models import (
    BillingRun,
    BillingRunIssue,
    BillingRunStatus,
    Invoice,
    InvoiceLine,
    InvoiceNumberCounter,
    InvoiceState,
)
from ledger.models import LedgerHead, LedgerTransaction
from ledger.selectors import ledger_verify, trial_balance
from tenants.models import Charge, Landlord, Lease, LeaseStatus, Property, Tenant, Unit

PERIOD = date(2026, 12, 1)
AS_OF = date(2026, 12, 31)
# The beat tick at noon UTC on 31 December: 31 December in every landlord's zone below.
TICK_AT = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
LANDLORDS = (
    ("fault-berlin", "Europe/Berlin", "EUR"),
    ("fault-new-york", "America/New_York", "USD"),
    ("fault-tokyo", "Asia/Tokyo", "JPY"),
    ("fault-london", "Europe/London", "GBP"),
)
LEASES_PER_LANDLORD = 5_000
TOTAL_LEASES = LEASES_PER_LANDLORD * len(LANDLORDS)
CHUNK_SIZE = 200
KILLS = int(os.environ.get("FAULT_KILLS", "5"))
SEED = int(os.environ.get("FAULT_SEED", "20261231"))
RECOVERY_DEADLINE = 180.0


def _portfolio(slug: str, tz: str, currency: str) -> Landlord:
    """One landlord with 5,000 units, tenants, open-ended leases and one rent charge each,
    written with bulk inserts (factories would take minutes for 20,000 leases)."""
    landlord = Landlord.objects.create(
        name=slug.replace("-", " ").title(), slug=slug, timezone=tz, default_currency=currency
    )
    prop = Property.objects.create(
        landlord=landlord, name=f"{slug} estate", address_line1="1 Fault Road", city="Nowhere"
    )
    n = LEASES_PER_LANDLORD
    units = Unit.objects.bulk_create(
        [Unit(landlord=landlord, property=prop, name=f"U{i:05d}") for i in range(n)],
        batch_size=5_000,
    )
    # No e-mail address: the run queues no notifications, the worker only bills.
    tenants = Tenant.objects.bulk_create(
        [Tenant(landlord=landlord, full_name=f"Renter {slug} {i}", email="") for i in range(n)],
        batch_size=5_000,
    )
    leases = Lease.objects.bulk_create(
        [
            Lease(
                landlord=landlord,
                unit=unit,
                start_date=date(2026, 1, 1),
                currency=currency,
                billing_day=1 + i % 28,
                status=LeaseStatus.ACTIVE,
            )
            for i, unit in enumerate(units)
        ],
        batch_size=5_000,
    )
    Lease.tenants.through.objects.bulk_create(
        [
            Lease.tenants.through(lease_id=lease.pk, tenant_id=tenant.pk)
            for lease, tenant in zip(leases, tenants, strict=True)
        ],
        batch_size=5_000,
    )
    Charge.objects.bulk_create(
        [
            Charge(
                landlord=landlord,
                lease=lease,
                amount_minor=50_000 + i,
                currency=currency,
                start_date=lease.start_date,
            )
            for i, lease in enumerate(leases)
        ],
        batch_size=5_000,
    )
    return landlord


def _invoice_count() -> int:
    return Invoice.objects.filter(period_start=PERIOD).count()


def _runs_completed() -> bool:
    runs = list(BillingRun.objects.filter(period_start=PERIOD).values_list("status", flat=True))
    return len(runs) == len(LANDLORDS) and all(s == BillingRunStatus.COMPLETED for s in runs)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigkilled_worker_still_bills_every_lease_exactly_once(fault_broker, celery_worker_process):
    worker = celery_worker_process
    rng = random.Random(SEED)
    began = time.monotonic()

    landlords = [_portfolio(*spec) for spec in LANDLORDS]
    seeded = time.monotonic()

    # The month starts: every landlord's run, 25 chunks of 200 leases each, queued on commit
    # in tasks of TASK_LEASES leases.
    for landlord in landlords:
        with transaction.atomic():
            run, chunks = services.billing_run_start(
                landlord=landlord,
                period_start=PERIOD,
                as_of=AS_OF,
                started_by="fault-test",
                chunk_size=CHUNK_SIZE,
            )
            services.billing_run_dispatch(run=run, chunks=chunks)
        assert run.leases_due == LEASES_PER_LANDLORD
    # Five chunks of 200 leases (one landlord's, each its own transaction) per task.
    assert fault_broker.queue_length() == TOTAL_LEASES // services.TASK_LEASES

    # Kill the worker at random moments while it bills, restarting it each time. If no
    # random kill caught a chunk's transaction open, the last one waits for one.
    worker.start()
    worker.wait_ready()
    kills: list[tuple[float, int, int]] = []
    stranded: set[str] = set()
    for n in range(KILLS):
        time.sleep(rng.uniform(0.3, 1.5))
        if n == KILLS - 1 and not any(open_ for *_, open_ in kills):
            _wait_for_open_worker_transaction(timeout=15.0)
        billed, open_ = _invoice_count(), _open_worker_transactions()
        worker.kill()
        kills.append((round(time.monotonic() - began, 1), billed, open_))
        # No worker alive: every unacknowledged message was held by a dead one.
        stranded = fault_broker.unacked()
        worker.start()
        worker.wait_ready()
    killed = time.monotonic()
    assert all(billed < TOTAL_LEASES for _at, billed, _open in kills), (
        f"the run finished before every kill, so some kills hit an idle worker: {kills}"
    )
    assert any(open_ for *_, open_ in kills), f"no kill hit an open chunk transaction: {kills}"

    # A killed chunk leaves nothing half-written: whatever is committed is whole.
    _assert_every_invoice_is_whole()

    # Recovery: the surviving queue drains; the chunks the dead workers held sit in Redis'
    # unacked set until the visibility timeout (hours). Meanwhile beat ticks resume the
    # runs; a tick is sent whenever the queue is empty and billing has stalled.
    assert stranded, "no task was lost by the kills, so the resume path goes untested"
    ticks, last_count, last_change = 0, -1, time.monotonic()
    while not _runs_completed():
        assert time.monotonic() - killed < RECOVERY_DEADLINE, (
            f"runs not completed {RECOVERY_DEADLINE} s after the last restart "
            f"({_invoice_count()} invoices, {ticks} ticks)\n{worker.tail()}"
        )
        assert worker.alive(), f"worker died on its own:\n{worker.tail()}"
        count = _invoice_count()
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        elif fault_broker.queue_length() == 0 and time.monotonic() - last_change > 1.0:
            services.billing_runs_start_due(now=TICK_AT)
            ticks += 1
            last_change = time.monotonic()
        time.sleep(0.25)
    recovered = time.monotonic()
    assert ticks >= 1
    _assert_books(landlords)

    # Hours later the visibility timeout expires and Redis hands the dead workers' chunks
    # out again: they must write nothing.
    _wait_until(
        lambda: fault_broker.queue_length() == 0 and fault_broker.unacked() == stranded,
        what="the worker to finish the duplicate chunks of the beat ticks",
        worker=worker,
    )
    redelivered = fault_broker.expire_visibility(stranded)
    _wait_until(
        lambda: fault_broker.queue_length() == 0 and not fault_broker.unacked(),
        what="the redelivered chunks to be processed and acknowledged",
        worker=worker,
    )
    _assert_books(landlords)
    assert not worker.errors(), "\n".join(worker.errors())

    print(
        f"\nfault test: seed={SEED}; {len(kills)} kills (s, invoices billed, open worker "
        f"transactions): {kills}; stranded messages={len(stranded)}; beat ticks={ticks}; "
        f"redelivered after the visibility timeout={redelivered}; worker starts="
        f"{worker.starts}; seed data {seeded - began:.1f} s, kill phase {killed - seeded:.1f} s, "
        f"recovery {recovered - killed:.1f} s, total {time.monotonic() - began:.1f} s"
    )


def _open_worker_transactions() -> int:
    """Other sessions on the test database inside a transaction: the worker's chunks."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND xact_start IS NOT NULL"
        )
        return cursor.fetchone()[0]


def _wait_for_open_worker_transaction(*, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _open_worker_transactions():
        time.sleep(0.005)


def _wait_until(predicate, *, what: str, worker, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{worker.tail()}"
        assert worker.alive(), f"worker died on its own:\n{worker.tail()}"
        time.sleep(0.25)


def _assert_every_invoice_is_whole() -> None:
    without_lines = Invoice.objects.filter(lines__isnull=True).count()
    assert without_lines == 0
    ledger_docs = Counter(
        LedgerTransaction.objects.filter(document_kind="invoice").values_list(
            "document_id", flat=True
        )
    )
    invoice_ids = set(Invoice.objects.values_list("pk", flat=True))
    assert set(ledger_docs) == invoice_ids, "an invoice without its posting, or the reverse"
    assert set(ledger_docs.values()) <= {1}, "an invoice posted twice"


def _assert_books(landlords: list[Landlord]) -> None:
    # Exactly one invoice per (lease, period), and every lease has it.
    assert _invoice_count() == TOTAL_LEASES
    dupes = (
        Invoice.objects.values("lease_id", "period_start")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    assert dupes == 0
    billed_leases = set(Invoice.objects.values_list("lease_id", flat=True))
    assert billed_leases == set(Lease.objects.values_list("pk", flat=True))
    assert not BillingRunIssue.objects.exists()
    assert set(Invoice.objects.values_list("state", flat=True)) == {InvoiceState.ISSUED}

    # Whole invoices: lines that add up, one posting each.
    _assert_every_invoice_is_whole()
    assert InvoiceLine.objects.count() == TOTAL_LEASES
    mismatched = (
        Invoice.objects.annotate(lines_total=Sum("lines__amount_minor"))
        .exclude(lines_total=F("subtotal_minor"))
        .count()
    )
    assert mismatched == 0

    totals: dict[str, int] = defaultdict(int)
    for landlord in landlords:
        # Numbers 1..n without gaps or repeats, and the counter agrees.
        numbers = list(Invoice.objects.filter(landlord=landlord).values_list("number", flat=True))
        serials = sorted(int(n.rsplit("-", 1)[1]) for n in numbers)
        assert serials == list(range(1, LEASES_PER_LANDLORD + 1)), landlord.slug
        assert {n.rsplit("-", 1)[0] for n in numbers} == {"INV-2026"}
        counter = InvoiceNumberCounter.objects.get(landlord=landlord, year=2026)
        assert counter.last_number == LEASES_PER_LANDLORD

        # The ledger: balanced, hash chain intact, one transaction per invoice.
        balance = trial_balance(landlord=landlord)
        assert balance.is_balanced, (landlord.slug, balance.totals)
        verify = ledger_verify(landlord=landlord)
        assert verify.ok, (landlord.slug, verify)
        assert verify.transactions_checked == LEASES_PER_LANDLORD
        assert LedgerHead.objects.get(landlord=landlord).last_seq == LEASES_PER_LANDLORD

        # The run's counters.
        run = BillingRun.objects.get(landlord=landlord, period_start=PERIOD)
        assert run.status == BillingRunStatus.COMPLETED
        assert (run.leases_due, run.invoices_created, run.skipped, run.failed) == (
            LEASES_PER_LANDLORD,
            LEASES_PER_LANDLORD,
            0,
            0,
        )
        assert run.finished_at is not None
        for line in balance.lines:
            totals[line.currency] += line.balance
    assert (
        sum(
            BillingRun.objects.filter(period_start=PERIOD).values_list(
                "invoices_created", flat=True
            )
        )
        == TOTAL_LEASES
    )
    assert all(total == 0 for total in totals.values())
