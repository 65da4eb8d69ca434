"""Invoice write actions: the monthly billing run, issuing, voiding, the outbox.

The billing run is set-based: a chunk of leases is loaded in a handful of queries,
billed in memory by `invoices.rules`, and written (invoices, lines, ledger postings,
outbox rows) with bulk statements in one transaction. Exactly-once comes from the
unique (lease, period_start) key: a chunk that runs twice finds its invoices already
there and writes nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from invoices import rules
from invoices.models import (
    BillingIssueKind,
    BillingRun,
    BillingRunIssue,
    BillingRunStatus,
    Channel,
    Invoice,
    InvoiceLine,
    InvoiceNumberCounter,
    InvoiceSettings,
    InvoiceState,
    Notification,
    TaxRate,
)
from ledger import services as ledger
from ledger.models import AccountCode, LedgerTransaction, income_account_code
from tenants.models import OCCUPYING_STATUSES, Charge, ChargeFrequency, Landlord, Lease
from tenants.services import audit

log = logging.getLogger(__name__)

CHUNK_SIZE = 500
DOCUMENT_KIND = "invoice"


@dataclass(frozen=True)
class ChunkResult:
    created: int
    skipped: int
    failed: int
    notification_ids: tuple[int, ...] = ()


def invoice_settings_get(*, landlord: Landlord) -> InvoiceSettings:
    settings_row, _ = InvoiceSettings.objects.get_or_create(landlord=landlord)
    return settings_row


def _due_leases(*, landlord: Landlord, period_start: date, period_end: date, as_of: date):
    """Leases of the period whose issue date has come and that have no invoice yet.

    A lease's invoice is issued on its billing day, or on move-in if that is later
    (rules.invoice_lines_for); both are in the landlord's local calendar.
    """
    already = Invoice.objects.filter(lease=OuterRef("pk"), period_start=period_start)
    qs = (
        Lease.objects.for_landlord(landlord)
        .filter(status__in=OCCUPYING_STATUSES, start_date__lt=period_end)
        .filter(Q(end_date__isnull=True) | Q(end_date__gt=period_start))
        .filter(~Exists(already))
    )
    if as_of < period_end:
        qs = qs.filter(
            billing_day__lte=as_of.day if as_of >= period_start else 0, start_date__lte=as_of
        )
    return qs


@transaction.atomic
def billing_run_start(
    *,
    landlord: Landlord,
    period_start: date,
    as_of: date,
    started_by: str = "schedule",
    chunk_size: int = CHUNK_SIZE,
) -> tuple[BillingRun, list[list[int]]]:
    """Start (or resume) the landlord's billing run for the month beginning `period_start`.

    Unique per (landlord, period): starting again returns the same run with the
    chunks of leases that are due by `as_of` and still have no invoice and no recorded
    issue — which is also how missed beat ticks and killed workers self-heal.
    The caller dispatches the chunks (synchronously or as Celery tasks on commit).
    """
    period_start, period_end = rules.billing_period(month=period_start)
    now = timezone.now()
    run, created = BillingRun.objects.get_or_create(
        landlord=landlord,
        period_start=period_start,
        defaults={"period_end": period_end, "started_at": now, "started_by": started_by},
    )
    run = BillingRun.objects.select_for_update().get(pk=run.pk)
    recorded = BillingRunIssue.objects.filter(run=run, lease=OuterRef("pk"))
    lease_ids = list(
        _due_leases(
            landlord=landlord, period_start=period_start, period_end=period_end, as_of=as_of
        )
        .filter(~Exists(recorded))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if created:
        audit(
            landlord=landlord,
            actor=None,
            action="billing_run.start",
            obj=run,
            summary=f"Billing run {period_start:%Y-%m} started by {started_by}",
        )
    if lease_ids:
        # leases_due counts every lease the run has taken on, across resumptions.
        already_counted = run.processed
        outstanding = max(run.leases_due - already_counted, 0)
        new_leases = max(len(lease_ids) - outstanding, 0)
        BillingRun.objects.filter(pk=run.pk).update(
            leases_due=F("leases_due") + new_leases,
            status=BillingRunStatus.RUNNING,
            finished_at=None,
            updated_at=now,
        )
        run.refresh_from_db()
    elif run.status == BillingRunStatus.RUNNING and run.processed >= run.leases_due:
        _finish(run, now=now)
    chunks = [lease_ids[i : i + chunk_size] for i in range(0, len(lease_ids), chunk_size)]
    return run, chunks


def billing_run_dispatch(*, run: BillingRun, chunks: Sequence[Sequence[int]]) -> None:
    """Queue one Celery task per chunk once the run row is committed."""
    from invoices.tasks import billing_run_process_chunk_task

    for chunk in chunks:
        billing_run_process_chunk_task.delay_on_commit(run_id=run.pk, lease_ids=list(chunk))


def billing_runs_start_due(*, now: datetime) -> list[BillingRun]:
    """The beat tick: for every landlord, bill the leases whose issue day has come in
    the landlord's own time zone. Re-running it is harmless (each start resumes the
    month's run) and it heals missed ticks and lost chunks."""
    runs = []
    for landlord in Landlord.objects.order_by("pk"):
        today = now.astimezone(landlord.tz).date()
        with transaction.atomic():
            run, chunks = billing_run_start(
                landlord=landlord, period_start=today.replace(day=1), as_of=today
            )
            billing_run_dispatch(run=run, chunks=chunks)
        if chunks:
            runs.append(run)
    return runs


def billing_run_execute(
    *, landlord: Landlord, period_start: date, as_of: date, started_by: str
) -> BillingRun:
    """Run one landlord's month synchronously (operators' command, tests, the demo):
    the same start and chunk code as the Celery path, called inline."""
    run, chunks = billing_run_start(
        landlord=landlord, period_start=period_start, as_of=as_of, started_by=started_by
    )
    for chunk in chunks:
        billing_run_process_chunk(run_id=run.pk, lease_ids=chunk)
    run.refresh_from_db()
    return run


def billing_run_existing_counts(*, landlord: Landlord, period_start: date) -> int:
    run = BillingRun.objects.filter(landlord=landlord, period_start=period_start).first()
    return run.invoices_created if run else 0


def _finish(run: BillingRun, *, now: datetime) -> None:
    has_drafts = Invoice.objects.filter(billing_run=run, state=InvoiceState.DRAFT).exists()
    status = BillingRunStatus.REVIEW if has_drafts else BillingRunStatus.COMPLETED
    BillingRun.objects.filter(pk=run.pk, status=BillingRunStatus.RUNNING).update(
        status=status, finished_at=now, updated_at=now
    )


def _lease_terms(leases: Sequence[Lease], charges: Iterable[Charge]) -> dict[int, rules.LeaseTerms]:
    by_lease: dict[int, list[rules.ChargeTerms]] = defaultdict(list)
    for c in charges:
        by_lease[c.lease_id].append(
            rules.ChargeTerms(
                charge_id=c.pk,
                kind=c.kind,
                description=c.description,
                amount_minor=c.amount_minor,
                currency=c.currency,
                frequency=c.frequency,
                start_date=c.start_date,
                end_date=c.end_date,
            )
        )
    return {
        lease.pk: rules.LeaseTerms(
            lease_id=lease.pk,
            start_date=lease.start_date,
            end_date=lease.end_date,
            currency=lease.currency,
            billing_day=lease.billing_day,
            due_days=lease.due_days,
            charges=tuple(by_lease.get(lease.pk, ())),
        )
        for lease in leases
    }


def _allocate_numbers(*, landlord: Landlord, series: str, year: int, count: int) -> list[str]:
    """`count` consecutive numbers, e.g. INV-2026-000123, from the locked counter row.

    The counter is updated inside the caller's transaction: if it rolls back, so do the
    numbers, and the series has no gaps.
    """
    InvoiceNumberCounter.objects.get_or_create(landlord=landlord, series=series, year=year)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE invoices_invoicenumbercounter SET last_number = last_number + %s, updated_at = now() "
            "WHERE landlord_id = %s AND series = %s AND year = %s RETURNING last_number",
            [count, landlord.pk, series, year],
        )
        last = cursor.fetchone()[0]
    return [f"{series}-{year}-{n:06d}" for n in range(last - count + 1, last + 1)]


def _reserve_ids(model, count: int) -> list[int]:
    """Primary keys taken from the table's sequence up front, so invoices, lines and
    ledger entries can reference each other in one round of bulk inserts."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [table, count],
        )
        return [row[0] for row in cursor.fetchall()]


def _posting_plan(
    invoice: Invoice, lines: Sequence[rules.LineDraft]
) -> list[tuple[ledger.AccountKey, int]]:
    """Issuing posts: debit the tenant's receivable, credit income per kind and tax payable."""
    credits: dict[str, int] = defaultdict(int)
    for line in lines:
        credits[income_account_code(line.kind)] += line.amount_minor
        credits[AccountCode.TAX_PAYABLE] += line.tax_minor
    plan = [
        (
            ledger.AccountKey(AccountCode.RECEIVABLE, invoice.currency, invoice.tenant_id),
            invoice.total_minor,
        )
    ]
    plan += [
        (ledger.AccountKey(code, invoice.currency), -amount)
        for code, amount in sorted(credits.items())
        if amount
    ]
    return plan


def _ledger_specs(
    *, landlord: Landlord, planned: list[tuple[Invoice, list]]
) -> list[ledger.TransactionSpec]:
    accounts = ledger.accounts_get_or_create(
        landlord=landlord, keys={key for _invoice, plan in planned for key, _amount in plan}
    )
    specs = []
    for invoice, plan in planned:
        ref = {"document_kind": DOCUMENT_KIND, "document_id": invoice.pk}
        entries = tuple(
            ledger.EntrySpec(
                account=accounts[key],
                amount_minor=amount,
                currency=invoice.currency,
                tenant_id=invoice.tenant_id,
                lease_id=invoice.lease_id,
                **ref,
            )
            for key, amount in plan
        )
        specs.append(
            ledger.TransactionSpec(
                idempotency_key=f"invoice:{invoice.pk}:issue",
                effective_at=_local_midnight(landlord, invoice.issue_date),
                description=f"Invoice {invoice.number}",
                entries=entries,
                **ref,
            )
        )
    return specs


def _local_midnight(landlord: Landlord, day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=landlord.tz)


@transaction.atomic
def billing_run_process_chunk(*, run_id: int, lease_ids: Sequence[int]) -> ChunkResult:
    """Bill one chunk of a run's leases: invoices + lines + ledger + outbox, set-based.

    Idempotent: leases that already have their invoice for the period, or a recorded
    issue in this run, are left alone, so a retried or duplicated chunk creates nothing.
    The run row is locked first: chunks of one landlord serialise (they share its
    invoice counter anyway), and a duplicate can never race its twin.
    """
    run = BillingRun.objects.select_for_update().select_related("landlord").get(pk=run_id)
    landlord = run.landlord
    period_start, period_end = run.period_start, run.period_end
    done = Invoice.objects.filter(lease=OuterRef("pk"), period_start=period_start)
    noted = BillingRunIssue.objects.filter(run=run, lease=OuterRef("pk"))
    leases = list(
        Lease.objects.for_landlord(landlord)
        .filter(pk__in=lease_ids)
        .filter(~Exists(done), ~Exists(noted))
        .order_by("pk")
    )
    if not leases:
        return ChunkResult(0, 0, 0)
    ids = [lease.pk for lease in leases]
    charges = Charge.objects.for_landlord(landlord).filter(lease_id__in=ids).order_by("pk")
    terms = _lease_terms(leases, charges)
    billed_one_offs = frozenset(
        InvoiceLine.objects.filter(
            invoice__lease_id__in=ids,
            charge_id__isnull=False,
            charge_id__in=Charge.objects.filter(
                lease_id__in=ids, frequency=ChargeFrequency.ONE_OFF
            ).values("pk"),
        )
        .exclude(invoice__state=InvoiceState.VOID)
        .values_list("charge_id", flat=True)
    )
    tax_rates = dict(TaxRate.objects.for_landlord(landlord).values_list("kind", "rate_bp"))
    bill_to = _bill_to(ids)
    review = invoice_settings_get(landlord=landlord).review_drafts

    drafts: list[tuple[Lease, rules.InvoiceDraft]] = []
    issues: list[BillingRunIssue] = []
    for lease in leases:
        outcome = rules.invoice_lines_for(
            lease=terms[lease.pk],
            period_start=period_start,
            period_end=period_end,
            tax_rates=tax_rates,
            already_billed_one_off_ids=billed_one_offs,
        )
        if isinstance(outcome, rules.BillingSkip):
            issues.append(
                BillingRunIssue(
                    run=run, lease=lease, kind=BillingIssueKind.SKIPPED, message=outcome.reason
                )
            )
        elif isinstance(outcome, rules.BillingError):
            issues.append(
                BillingRunIssue(
                    run=run, lease=lease, kind=BillingIssueKind.ERROR, message=outcome.message
                )
            )
        elif lease.pk not in bill_to:
            issues.append(
                BillingRunIssue(
                    run=run,
                    lease=lease,
                    kind=BillingIssueKind.ERROR,
                    message="Lease has no tenant to bill",
                )
            )
        else:
            drafts.append((lease, outcome))

    invoices, lines, notification_ids = _write_invoices(
        run=run, drafts=drafts, bill_to=bill_to, issue_now=not review
    )
    BillingRunIssue.objects.bulk_create(issues, ignore_conflicts=True)
    skipped = sum(1 for i in issues if i.kind == BillingIssueKind.SKIPPED)
    failed = len(issues) - skipped
    now = timezone.now()
    BillingRun.objects.filter(pk=run.pk).update(
        invoices_created=F("invoices_created") + len(invoices),
        skipped=F("skipped") + skipped,
        failed=F("failed") + failed,
        updated_at=now,
    )
    run.refresh_from_db()
    if run.processed >= run.leases_due:
        _finish(run, now=now)
    if notification_ids:
        transaction.on_commit(lambda: _enqueue_notifications(notification_ids))
    return ChunkResult(len(invoices), skipped, failed, tuple(notification_ids))


def _bill_to(lease_ids: Sequence[int]) -> dict[int, tuple[int, str, str]]:
    """Per lease: (bill-to tenant id, all tenants' names, bill-to email). The first
    tenant added to the lease is the one whose receivable carries the invoice."""
    through = Lease.tenants.through
    rows = (
        through.objects.filter(lease_id__in=lease_ids)
        .order_by("lease_id", "id")
        .values_list("lease_id", "tenant_id", "tenant__full_name", "tenant__email")
    )
    out: dict[int, tuple[int, list[str], str]] = {}
    for lease_id, tenant_id, name, email in rows:
        if lease_id not in out:
            out[lease_id] = (tenant_id, [name], email)
        else:
            out[lease_id][1].append(name)
    return {k: (t, ", ".join(names), email) for k, (t, names, email) in out.items()}


def _write_invoices(*, run: BillingRun, drafts, bill_to, issue_now: bool):
    if not drafts:
        return [], [], []
    landlord = run.landlord
    settings_row = invoice_settings_get(landlord=landlord)
    invoice_ids = _reserve_ids(Invoice, len(drafts))
    numbers: list[str | None] = [None] * len(drafts)
    if issue_now:
        numbers = _allocate_numbers(
            landlord=landlord,
            series=settings_row.number_prefix,
            year=run.period_start.year,
            count=len(drafts),
        )
    invoices: list[Invoice] = []
    lines: list[InvoiceLine] = []
    planned: list[tuple[Invoice, list]] = []
    notifications: list[Notification] = []
    for (lease, draft), pk, number in zip(drafts, invoice_ids, numbers, strict=True):
        tenant_id, names, email = bill_to[lease.pk]
        invoice = Invoice(
            pk=pk,
            landlord=landlord,
            lease=lease,
            tenant_id=tenant_id,
            billing_run=run,
            period_start=draft.period_start,
            period_end=draft.period_end,
            issue_date=draft.issue_date,
            due_date=draft.due_date,
            currency=draft.currency,
            number=number,
            state=InvoiceState.ISSUED if issue_now else InvoiceState.DRAFT,
            subtotal_minor=draft.subtotal_minor,
            tax_minor=draft.tax_minor,
            total_minor=draft.total_minor,
            bill_to_name=names[:400],
        )
        invoices.append(invoice)
        lines.extend(
            InvoiceLine(
                invoice_id=pk,
                position=i,
                charge_id=ln.charge_id,
                kind=ln.kind,
                description=ln.description[:300],
                quantity=ln.quantity,
                unit_amount_minor=ln.unit_amount_minor,
                amount_minor=ln.amount_minor,
                tax_rate_bp=ln.tax_rate_bp,
                tax_minor=ln.tax_minor,
                service_start=ln.service_start,
                service_end=ln.service_end,
            )
            for i, ln in enumerate(draft.lines, start=1)
        )
        if issue_now:
            planned.append((invoice, _posting_plan(invoice, draft.lines)))
            if email and settings_row.send_emails:
                notifications.append(_invoice_notification(invoice, email))
    Invoice.objects.bulk_create(invoices, batch_size=2000)
    InvoiceLine.objects.bulk_create(lines, batch_size=2000)
    if planned:
        ledger.transactions_post_bulk(
            landlord=landlord, specs=_ledger_specs(landlord=landlord, planned=planned)
        )
    created = Notification.objects.bulk_create(
        notifications, batch_size=2000, ignore_conflicts=True
    )
    # ignore_conflicts returns no ids: re-read the ones for these invoices.
    notification_ids = (
        list(
            Notification.objects.filter(
                invoice_id__in=[i.pk for i in invoices], status="queued"
            ).values_list("pk", flat=True)
        )
        if created
        else []
    )
    return invoices, lines, notification_ids


def _invoice_notification(invoice: Invoice, email: str) -> Notification:
    return Notification(
        landlord_id=invoice.landlord_id,
        dedupe_key=f"invoice:{invoice.pk}:issued:email",
        kind="invoice_issued",
        channel=Channel.EMAIL,
        tenant_id=invoice.tenant_id,
        invoice_id=invoice.pk,
        to_address=email,
    )


def _enqueue_notifications(ids: Sequence[int]) -> None:
    from invoices.tasks import notifications_send

    for start in range(0, len(ids), 200):
        notifications_send.delay(notification_ids=list(ids[start : start + 200]))


@transaction.atomic
def invoice_void(*, invoice: Invoice, reason: str, actor) -> Invoice:
    """Void an issued invoice: its ledger posting is reversed (the credit note), the
    document keeps its number and is marked void; it is never edited or deleted."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "Say why the invoice is voided."})
    locked = Invoice.objects.select_for_update().get(pk=invoice.pk)
    if locked.state == InvoiceState.VOID:
        raise ValidationError({"__all__": f"Invoice {locked.number} is already void."})
    if locked.state == InvoiceState.DRAFT:
        raise ValidationError(
            {"__all__": "A draft has no number yet; discard the run's drafts instead."}
        )
    now = timezone.now()
    posting = LedgerTransaction.objects.for_landlord(locked.landlord).get(
        idempotency_key=f"invoice:{locked.pk}:issue"
    )
    ledger.transaction_reverse(
        landlord=locked.landlord,
        transaction=posting,
        idempotency_key=f"invoice:{locked.pk}:void",
        reason=f"Void {locked.number}: {reason}",
        effective_at=now,
    )
    locked.state = InvoiceState.VOID
    locked.void_reason = reason[:300]
    locked.voided_at = now
    locked.save(update_fields=["state", "void_reason", "voided_at", "updated_at"])
    audit(
        landlord=locked.landlord,
        actor=actor,
        action="invoice.void",
        obj=locked,
        summary=f"Voided {locked.number}: {reason}",
    )
    return locked
