"""Reads for the billing pages. Every function takes the landlord and scopes through
`LandlordQuerySet.for_landlord`.

An invoice's *payment* status is derived from the ledger, never stored:

    void            the document is void
    draft           the document is a draft (no number, no posting yet)
    paid            receivable balance <= 0
    partially_paid  0 < balance < total
    overdue         balance > 0 (and not partially paid) and the due date is before today
    open            otherwise

`invoice_status` is the rule for one invoice in Python; `_status_q` is the same rule in
SQL over the `balance_minor` subquery annotation, so the status filter of the list is
exact across pages (filtering a page's rows in Python would lose rows).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from django.db.models import (
    BigIntegerField,
    Count,
    Exists,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _

from invoices.models import (
    BillingIssueKind,
    BillingRun,
    BillingRunIssue,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceSettings,
    InvoiceState,
    MeterReading,
    Notification,
    TaxRate,
)
from invoices.rules import billing_period
from ledger.models import AccountCode, LedgerEntry, LedgerTransaction
from ledger.selectors import document_balances
from tenants.models import (
    OCCUPYING_STATUSES,
    Charge,
    ChargeFrequency,
    Landlord,
    Lease,
    Property,
    Tenant,
    Unit,
)

# The `document_kind` of an invoice's ledger entries (invoices.services.DOCUMENT_KIND).
INVOICE_DOCUMENT = "invoice"
PAGE_SIZE = 25


class InvoiceStatus:
    DRAFT = "draft"
    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    OVERDUE = "overdue"
    VOID = "void"

    choices = [
        (DRAFT, _("Draft")),
        (OPEN, _("Open")),
        (PARTIALLY_PAID, _("Partially paid")),
        (PAID, _("Paid")),
        (OVERDUE, _("Overdue")),
        (VOID, _("Void")),
    ]
    labels = dict(choices)
    values = [value for value, _label in choices]


# --- invoice status -----------------------------------------------------------------


def invoice_status(*, invoice: Invoice, balance_minor: int, today: date) -> str:
    """The derived status of one invoice given its receivable balance (see module doc)."""
    if invoice.state == InvoiceState.VOID:
        return InvoiceStatus.VOID
    if invoice.state == InvoiceState.DRAFT:
        return InvoiceStatus.DRAFT
    if balance_minor <= 0:
        return InvoiceStatus.PAID
    if balance_minor < invoice.total_minor:
        return InvoiceStatus.PARTIALLY_PAID
    if invoice.due_date < today:
        return InvoiceStatus.OVERDUE
    return InvoiceStatus.OPEN


def invoice_balances(*, landlord: Landlord, invoices: Iterable[Invoice]) -> dict[int, int]:
    """Receivable still open per invoice, in the invoice's currency; one query."""
    invoices = list(invoices)
    by_document = document_balances(
        landlord=landlord,
        document_kind=INVOICE_DOCUMENT,
        document_ids=[invoice.pk for invoice in invoices],
    )
    return {
        invoice.pk: by_document.get(invoice.pk, {}).get(invoice.currency, 0) for invoice in invoices
    }


def invoice_statuses(
    *, landlord: Landlord, invoices: Iterable[Invoice], today: date
) -> dict[int, str]:
    """Derived status per invoice id, from the ledger in one query."""
    invoices = list(invoices)
    balances = invoice_balances(landlord=landlord, invoices=invoices)
    return {
        invoice.pk: invoice_status(invoice=invoice, balance_minor=balances[invoice.pk], today=today)
        for invoice in invoices
    }


def receivable_balance() -> Coalesce:
    """Subquery expression: the open receivable of the invoice in the outer query."""
    entries = (
        LedgerEntry.objects.filter(
            landlord_id=OuterRef("landlord_id"),
            document_kind=INVOICE_DOCUMENT,
            document_id=OuterRef("pk"),
            currency=OuterRef("currency"),
            account__code=AccountCode.RECEIVABLE,
        )
        .order_by()
        .values("document_id")
        .annotate(total=Sum("amount_minor"))
        .values("total")
    )
    return Coalesce(Subquery(entries, output_field=BigIntegerField()), Value(0))


def _status_q(status: str, *, today: date) -> Q:
    """`invoice_status` as a filter over a `balance_minor` annotation."""
    issued = Q(state=InvoiceState.ISSUED)
    owing_in_full = issued & Q(balance_minor__gt=0, balance_minor__gte=F("total_minor"))
    return {
        InvoiceStatus.VOID: Q(state=InvoiceState.VOID),
        InvoiceStatus.DRAFT: Q(state=InvoiceState.DRAFT),
        InvoiceStatus.PAID: issued & Q(balance_minor__lte=0),
        InvoiceStatus.PARTIALLY_PAID: issued
        & Q(balance_minor__gt=0, balance_minor__lt=F("total_minor")),
        InvoiceStatus.OVERDUE: owing_in_full & Q(due_date__lt=today),
        InvoiceStatus.OPEN: owing_in_full & Q(due_date__gte=today),
    }[status]


# --- a month's collection ----------------------------------------------------------


@dataclass(frozen=True)
class PeriodCollection:
    """How a month's rent invoices (rent and every charge billed with it) stand, in one
    currency: what was billed on the invoices still issued, and what is open on them."""

    currency: str
    invoices: int
    billed_minor: int
    open_minor: int  # still owed on them, from the ledger
    past_due_minor: int  # the part of `open_minor` whose due date has passed

    @property
    def collected_minor(self) -> int:
        return self.billed_minor - self.open_minor

    @property
    def collected_percent(self) -> int:
        if self.billed_minor <= 0:
            return 100
        return min(100, max(0, self.collected_minor * 100 // self.billed_minor))


def period_collection(
    *, landlord: Landlord, period_start: date, today: date
) -> list[PeriodCollection]:
    """The month `period_start` bills, per currency: its issued rent invoices (void ones
    left out, replacements in), their totals and what is open on them as of the ledger
    now. One grouped query on the (landlord, period) index; balances by document."""
    balance = Greatest(F("balance_minor"), Value(0))
    rows = (
        Invoice.objects.for_landlord(landlord)
        .filter(period_start=period_start, kind=InvoiceKind.RENT, state=InvoiceState.ISSUED)
        .annotate(balance_minor=receivable_balance())
        .values("currency")
        .annotate(
            invoices=Count("pk"),
            billed=Sum("total_minor"),
            open=Sum(balance),
            past_due=Coalesce(Sum(balance, filter=Q(due_date__lt=today)), Value(0)),
        )
        .order_by("currency")
    )
    return [
        PeriodCollection(
            currency=r["currency"],
            invoices=r["invoices"],
            billed_minor=int(r["billed"]),
            open_minor=int(r["open"]),
            past_due_minor=int(r["past_due"]),
        )
        for r in rows
    ]


# --- invoice list -------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceFilters:
    """What the invoice list can be narrowed by; empty values mean "any"."""

    status: str = ""
    period: date | None = None  # first day of the billed month
    property_id: int | None = None
    tenant_id: int | None = None
    lease_id: int | None = None
    run_id: int | None = None
    number: str = ""

    @property
    def active(self) -> bool:
        ids = (self.property_id, self.tenant_id, self.lease_id, self.run_id)
        return any((self.status, self.period, self.number)) or any(i is not None for i in ids)


def invoice_list(
    *, landlord: Landlord, filters: InvoiceFilters, today: date, with_balance: bool = False
) -> QuerySet[Invoice]:
    """The landlord's invoices narrowed by `filters`, newest first (-issue_date, -id).

    `with_balance`: each invoice carries `balance_minor` (open receivable, from the
    ledger) in the same statement; a status filter other than void or draft needs it
    anyway and adds it then."""
    qs = Invoice.objects.for_landlord(landlord).select_related("tenant", "lease__unit__property")
    status = filters.status if filters.status in InvoiceStatus.values else None
    if with_balance or status not in (None, InvoiceStatus.VOID, InvoiceStatus.DRAFT):
        qs = qs.annotate(balance_minor=receivable_balance())
    if status is not None:
        qs = qs.filter(_status_q(status, today=today))
    if filters.period:
        qs = qs.filter(period_start=filters.period)
    # `is not None`: an id that matches nothing (0) must narrow the list to nothing.
    if filters.property_id is not None:
        qs = qs.filter(lease__unit__property_id=filters.property_id)
    if filters.tenant_id is not None:
        qs = qs.filter(tenant_id=filters.tenant_id)
    if filters.lease_id is not None:
        qs = qs.filter(lease_id=filters.lease_id)
    if filters.run_id is not None:
        qs = qs.filter(billing_run_id=filters.run_id)
    if filters.number:
        qs = qs.filter(number__icontains=filters.number)
    return qs.order_by("-issue_date", "-id")


_CURSOR = re.compile(r"^(\d{4}-\d{2}-\d{2})_(\d{1,18})$")


def cursor_encode(invoice: Invoice) -> str:
    return f"{invoice.issue_date.isoformat()}_{invoice.pk}"


def cursor_decode(value: str | None) -> tuple[date, int] | None:
    """(issue_date, id) from a cursor, or None for a missing or malformed one."""
    match = _CURSOR.match(value or "")
    if not match:
        return None
    try:
        return date.fromisoformat(match[1]), int(match[2])
    except ValueError:
        return None


@dataclass(frozen=True)
class InvoiceRow:
    invoice: Invoice
    status: str
    balance_minor: int

    @property
    def status_label(self) -> str:
        return InvoiceStatus.labels[self.status]


@dataclass(frozen=True)
class InvoicePage:
    """One keyset page: rows plus the cursors of the neighbouring pages (None at an end)."""

    rows: Sequence[InvoiceRow] = field(default_factory=tuple)
    newer: str | None = None  # pass as ?before=
    older: str | None = None  # pass as ?after=

    @property
    def has_other_pages(self) -> bool:
        return bool(self.newer or self.older)


def invoice_page(
    *,
    landlord: Landlord,
    filters: InvoiceFilters,
    today: date,
    after: str | None = None,
    before: str | None = None,
    size: int = PAGE_SIZE,
) -> InvoicePage:
    """A page of `invoice_list` by keyset over (-issue_date, -id): two queries, whatever
    the table size (no COUNT, no OFFSET).

    `after` = the last row of the page above (going older); `before` = the first row of
    the page below (going newer). Malformed cursors are ignored (first page).
    """
    qs = invoice_list(landlord=landlord, filters=filters, today=today)
    after_key, before_key = cursor_decode(after), cursor_decode(before)
    if before_key and not after_key:
        day, pk = before_key
        newer = qs.filter(Q(issue_date__gt=day) | Q(issue_date=day, pk__gt=pk))
        fetched = list(newer.order_by("issue_date", "id")[: size + 1])
        more = len(fetched) > size
        invoices = list(reversed(fetched[:size]))
        has_newer, has_older = more, True
    else:
        if after_key:
            day, pk = after_key
            qs = qs.filter(Q(issue_date__lt=day) | Q(issue_date=day, pk__lt=pk))
        fetched = list(qs[: size + 1])
        invoices = fetched[:size]
        has_newer, has_older = after_key is not None, len(fetched) > size
    if not invoices:
        return InvoicePage()
    balances = invoice_balances(landlord=landlord, invoices=invoices)
    rows = tuple(_invoice_row(inv, balances[inv.pk], today=today) for inv in invoices)
    return InvoicePage(
        rows=rows,
        newer=cursor_encode(invoices[0]) if has_newer else None,
        older=cursor_encode(invoices[-1]) if has_older else None,
    )


def _invoice_row(invoice: Invoice, balance_minor: int, *, today: date) -> InvoiceRow:
    return InvoiceRow(
        invoice=invoice,
        status=invoice_status(invoice=invoice, balance_minor=balance_minor, today=today),
        balance_minor=balance_minor,
    )


def invoice_rows_every(
    *, landlord: Landlord, filters: InvoiceFilters, today: date, chunk: int = 2_000
) -> Iterator[InvoiceRow]:
    """Every row of `invoice_list` with its balance and status, newest first, for the
    invoice register export.

    One statement (balances as a correlated subquery) read through a server-side cursor:
    every row comes from one snapshot, so the register's balances add up to the ledger
    at one moment even while payments post during a long download (pages read one after
    another would mix moments), and memory stays `chunk` rows in the web process.
    """
    qs = invoice_list(landlord=landlord, filters=filters, today=today, with_balance=True)
    for invoice in qs.iterator(chunk_size=chunk):
        yield _invoice_row(invoice, invoice.balance_minor, today=today)


def invoice_get(*, landlord: Landlord, pk) -> Invoice:
    """One invoice of the landlord with its lines, lease and tenant; 404 otherwise."""
    return get_object_or_404(
        Invoice.objects.for_landlord(landlord)
        .select_related("tenant", "lease__unit__property", "billing_run", "adjusts")
        .prefetch_related("lines"),
        pk=pk,
    )


def invoice_replacement(*, landlord: Landlord, invoice: Invoice) -> Invoice | None:
    """The invoice issued in place of `invoice` when its lease ended after it was
    billed (decision 0017), if any."""
    return Invoice.objects.for_landlord(landlord).filter(adjusts=invoice, kind="rent").first()


def invoice_transactions(*, landlord: Landlord, invoice: Invoice) -> QuerySet[LedgerTransaction]:
    """Every posting that touches the invoice, in chain order, entries prefetched: its
    issue and void (the transaction names the invoice) and payments, credits or
    write-offs allocated to it (an entry names the invoice, the transaction its own
    document). Found through the (landlord, document) indexes of both tables."""
    allocated = LedgerEntry.objects.filter(
        landlord=landlord, document_kind=INVOICE_DOCUMENT, document_id=invoice.pk
    ).values("transaction_id")
    entries = LedgerEntry.objects.select_related("account").order_by("pk")
    return (
        LedgerTransaction.objects.for_landlord(landlord)
        .filter(Q(document_kind=INVOICE_DOCUMENT, document_id=invoice.pk) | Q(pk__in=allocated))
        .prefetch_related(Prefetch("entries", queryset=entries))
        .order_by("seq")
    )


def invoice_notifications(*, landlord: Landlord, invoice: Invoice) -> QuerySet[Notification]:
    return (
        Notification.objects.for_landlord(landlord)
        .filter(invoice=invoice)
        .order_by("created_at", "pk")
    )


def invoice_filter_properties(*, landlord: Landlord) -> QuerySet[Property]:
    return Property.objects.for_landlord(landlord).order_by("name", "pk").only("pk", "name")


def tenant_get_or_none(*, landlord: Landlord, pk: int | None) -> Tenant | None:
    if not pk:
        return None
    return Tenant.objects.for_landlord(landlord).filter(pk=pk).first()


# --- billing runs -------------------------------------------------------------------


def billing_run_list(*, landlord: Landlord) -> QuerySet[BillingRun]:
    return BillingRun.objects.for_landlord(landlord).order_by("-period_start", "-pk")


def billing_run_issues(*, landlord: Landlord, run: BillingRun) -> QuerySet[BillingRunIssue]:
    """Why leases of the run were not invoiced, errors first."""
    return (
        BillingRunIssue.objects.filter(run__landlord=landlord, run=run)
        .select_related("lease__unit__property")
        .order_by("kind", "pk")
    )


def billing_run_progress(*, run: BillingRun) -> dict:
    """The run's counters as JSON-ready values for the live progress bar."""
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": str(run.get_status_display()),
        "leases_due": run.leases_due,
        "invoices_created": run.invoices_created,
        "skipped": run.skipped,
        "failed": run.failed,
        "processed": run.processed,
        "percent": run.percent,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _usage_unbilled(*, period_end: date):
    """Readings of the lease's unit (the outer query's) that a later reading up to the
    lease's end date went up from, with no standing line billed up to a reading of that
    meter after them: usage up to a move-out reading still to bill (decision 0019). A
    lease whose last usage was zero, or all billed, is not picked up again."""
    # Up to the lease's end only: the next tenant's bill going past the move-out
    # reading does not bill the usage before it (services._meter_readings).
    billed_after = MeterReading.objects.filter(
        unit_id=OuterRef("unit_id"),
        meter=OuterRef("meter"),
        reading_date__gt=OuterRef("reading_date"),
        reading_date__lte=OuterRef(OuterRef("end_date")),
    ).filter(
        Exists(
            InvoiceLine.objects.filter(meter_reading_id=OuterRef("pk")).exclude(
                invoice__state=InvoiceState.VOID
            )
        )
    )
    went_up = MeterReading.objects.filter(
        unit_id=OuterRef("unit_id"),
        meter=OuterRef("meter"),
        reading_date__gt=OuterRef("reading_date"),
        reading_date__lte=OuterRef(OuterRef("end_date")),
        reading_date__lt=period_end,
        value__gt=OuterRef("value"),
    )
    # Usage before the move-in reading (the unit empty, or the previous tenant's) is
    # not this lease's: `services._meter_usage` starts there.
    before_move_in = MeterReading.objects.filter(
        unit_id=OuterRef("unit_id"),
        meter=OuterRef("meter"),
        reading_date__gt=OuterRef("reading_date"),
        reading_date__lte=OuterRef(OuterRef("start_date")),
    )
    return MeterReading.objects.filter(
        landlord_id=OuterRef("landlord_id"),
        unit_id=OuterRef("unit_id"),
        reading_date__lt=OuterRef("end_date"),
    ).filter(Exists(went_up), ~Exists(billed_after), ~Exists(before_move_in))


def leases_issued_by(qs, *, period_start: date, period_end: date, as_of: date):
    """The leases of `qs` billed in the month `[period_start, period_end)` whose issue
    date has come by `as_of`, invoiced or not. The one statement of the rule, used by
    the billing run (services) and by the "Run billing now" preview.

    A lease's invoice is issued on its billing day, or on move-in if that is later
    (rules.invoice_lines_for); both are in the landlord's local calendar. A lease that
    ended before the month is billed only for one-off charges dated before the month's
    end and on no invoice of it that stands, and for metered usage up to its end date
    not billed yet (its final invoice, decisions 0002 and 0019). Both EXISTS come last
    in the OR, so only leases already ended evaluate them.
    """
    invoiced = InvoiceLine.objects.filter(
        charge_id=OuterRef("pk"), invoice__lease=OuterRef("lease")
    ).exclude(invoice__state=InvoiceState.VOID)
    outstanding = Charge.objects.filter(
        lease=OuterRef("pk"), frequency=ChargeFrequency.ONE_OFF, start_date__lt=period_end
    ).filter(~Exists(invoiced))
    qs = qs.filter(status__in=OCCUPYING_STATUSES, start_date__lt=period_end).filter(
        Q(end_date__isnull=True)
        | Q(end_date__gt=period_start)
        | Exists(outstanding)
        | Exists(_usage_unbilled(period_end=period_end))
    )
    if as_of < period_end:
        qs = qs.filter(
            billing_day__lte=as_of.day if as_of >= period_start else 0, start_date__lte=as_of
        )
    return qs


def due_leases(*, landlord: Landlord, period_start: date, as_of: date) -> QuerySet[Lease]:
    """Leases "Run billing now" for the month of `period_start` would take on by `as_of`:
    issued by then, with no invoice for the month and no skip recorded in its run (it
    retries the errors, `services.billing_run_start_now`)."""
    period_start, period_end = billing_period(month=period_start)
    already = Invoice.objects.filter(lease=OuterRef("pk"), period_start=period_start)
    recorded = BillingRunIssue.objects.filter(
        run__landlord=landlord, run__period_start=period_start, lease=OuterRef("pk")
    ).exclude(kind=BillingIssueKind.ERROR)
    return leases_issued_by(
        Lease.objects.for_landlord(landlord),
        period_start=period_start,
        period_end=period_end,
        as_of=as_of,
    ).filter(~Exists(already), ~Exists(recorded))


@dataclass(frozen=True)
class BillingRunPreview:
    """What "Run billing now" for a month would do, for the confirmation page."""

    period_start: date
    period_end: date
    as_of: date
    leases_due: int
    run: BillingRun | None
    review_drafts: bool
    send_emails: bool

    @property
    def late(self) -> bool:
        """Some issue days of the month may have passed: those invoices are dated today."""
        return self.as_of > self.period_start


def billing_run_preview(
    *, landlord: Landlord, period_start: date, as_of: date
) -> BillingRunPreview:
    period_start, period_end = billing_period(month=period_start)
    settings_row = InvoiceSettings.objects.for_landlord(landlord).first() or InvoiceSettings()
    return BillingRunPreview(
        period_start=period_start,
        period_end=period_end,
        as_of=as_of,
        leases_due=due_leases(landlord=landlord, period_start=period_start, as_of=as_of).count(),
        run=BillingRun.objects.for_landlord(landlord).filter(period_start=period_start).first(),
        review_drafts=settings_row.review_drafts,
        send_emails=settings_row.send_emails,
    )


def draft_totals(*, landlord, run: BillingRun) -> dict:
    """The run's drafts waiting for review: how many, and their total per currency."""
    rows = list(
        Invoice.objects.for_landlord(landlord)
        .filter(billing_run=run, state=InvoiceState.DRAFT)
        .values("currency")
        .annotate(count=Count("pk"), total_minor=Sum("total_minor"))
        .order_by("currency")
    )
    return {"count": sum(r["count"] for r in rows), "by_currency": rows}


def billing_run_invoice_count(*, landlord: Landlord, period_start: date) -> int:
    """Invoices the landlord's run of that month has created so far (0 if none ran)."""
    run = BillingRun.objects.filter(landlord=landlord, period_start=period_start).first()
    return run.invoices_created if run else 0


def tax_rates(*, landlord: Landlord) -> dict[str, int]:
    """The landlord's tax rate per charge kind, in basis points (missing = untaxed)."""
    return dict(TaxRate.objects.for_landlord(landlord).values_list("kind", "rate_bp"))


def meter_reading_list(*, landlord: Landlord, unit: Unit | None = None) -> QuerySet[MeterReading]:
    """Readings newest first; for one unit, grouped by meter."""
    qs = MeterReading.objects.for_landlord(landlord).select_related("unit__property")
    if unit is not None:
        return qs.filter(unit=unit).order_by("meter", "-reading_date", "-pk")
    return qs.order_by("-reading_date", "-pk")


def lease_invoices_billing_after(
    *, landlord: Landlord, lease: Lease, day: date
) -> QuerySet[Invoice]:
    """The lease's rent invoices, issued or draft, that bill days after `day`
    (newest first): the ones ending the lease on `day` may void and replace."""
    return (
        Invoice.objects.for_landlord(landlord)
        .filter(lease=lease, kind="rent", period_end__gt=day)
        .exclude(state=InvoiceState.VOID)
        .order_by("-period_start", "-pk")
    )
