"""Reads for the tenant portal. Every function takes the current Tenant and scopes by
its landlord *and* the tenant itself: another tenant's id, even of the same landlord,
is a 404. Drafts are never shown to tenants (they are not invoices yet).

Balances and invoice statuses come from the ledger (ledger.selectors,
invoices.selectors), never from stored fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from invoices.models import Invoice, InvoiceState, Notification, NotificationStatus
from invoices.selectors import InvoiceStatus, invoice_balances, invoice_status
from ledger.selectors import tenant_balance
from payments import services as payment_services
from payments.models import (
    BANK_DEBIT_METHODS,
    Method,
    Payment,
    PaymentAllocation,
    PaymentStatus,
    SavedPaymentMethod,
    Source,
)
from tenants.models import Charge, Lease, Tenant

TENANT_SESSION_KEY = "portal_tenant_id"
# Invoices a tenant still has to pay, in the order they should be paid.
OPEN_STATUSES = (InvoiceStatus.OVERDUE, InvoiceStatus.OPEN, InvoiceStatus.PARTIALLY_PAID)


def tenancy_list(*, user) -> QuerySet[Tenant]:
    """The Tenant rows linked to a login (one per landlord at most)."""
    if not getattr(user, "is_authenticated", False):
        return Tenant.objects.none()
    return Tenant.objects.filter(user=user).select_related("landlord").order_by("landlord__name")


def tenancy_for_request(*, user, chosen_id) -> tuple[Tenant | None, list[Tenant]]:
    """(the tenant the portal acts as, all of the user's tenancies). With several
    tenancies and none chosen (or a stale choice), the tenant is None: the user must
    pick one."""
    tenancies = list(tenancy_list(user=user))
    if len(tenancies) == 1:
        return tenancies[0], tenancies
    return next((t for t in tenancies if t.pk == chosen_id), None), tenancies


@dataclass(frozen=True)
class InvoiceRow:
    invoice: Invoice
    status: str
    balance_minor: int

    @property
    def status_label(self) -> str:
        return InvoiceStatus.labels[self.status]

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


def _tenant_invoices(*, tenant: Tenant) -> QuerySet[Invoice]:
    return (
        Invoice.objects.for_landlord(tenant.landlord)
        .filter(tenant=tenant)
        .exclude(state=InvoiceState.DRAFT)
    )


def invoice_rows(*, tenant: Tenant, today: date) -> list[InvoiceRow]:
    """The tenant's issued and void invoices with their derived status and open
    balance: open ones first (oldest due first, the order to pay them), then the
    rest newest first. Two queries."""
    invoices = list(
        _tenant_invoices(tenant=tenant)
        .select_related("lease__unit__property")
        .order_by("-issue_date", "-pk")
    )
    balances = invoice_balances(landlord=tenant.landlord, invoices=invoices)
    rows = [
        InvoiceRow(
            inv,
            invoice_status(invoice=inv, balance_minor=balances[inv.pk], today=today),
            balances[inv.pk],
        )
        for inv in invoices
    ]
    open_rows = sorted(
        (r for r in rows if r.is_open), key=lambda r: (r.invoice.due_date, r.invoice.pk)
    )
    return open_rows + [r for r in rows if not r.is_open]


def invoice_get(*, tenant: Tenant, pk) -> Invoice:
    """One of the tenant's (non-draft) invoices with its lines; 404 otherwise."""
    return get_object_or_404(
        _tenant_invoices(tenant=tenant)
        .select_related("landlord", "lease__unit__property")
        .prefetch_related("lines"),
        pk=pk,
    )


def invoice_row(*, tenant: Tenant, invoice: Invoice, today: date) -> InvoiceRow:
    balance = invoice_balances(landlord=tenant.landlord, invoices=[invoice])[invoice.pk]
    return InvoiceRow(
        invoice, invoice_status(invoice=invoice, balance_minor=balance, today=today), balance
    )


def invoice_allocations(*, tenant: Tenant, invoice: Invoice) -> QuerySet[PaymentAllocation]:
    """What the tenant's payments contributed to one of their invoices."""
    return (
        PaymentAllocation.objects.for_landlord(tenant.landlord)
        .filter(invoice=invoice, payment__tenant=tenant)
        .select_related("payment")
        .order_by("payment__created_at", "pk")
    )


def balances(*, tenant: Tenant) -> dict[str, int]:
    """What the tenant owes per currency (negative: credit in their favour)."""
    return tenant_balance(landlord=tenant.landlord, tenant=tenant)


@dataclass(frozen=True)
class Home:
    balances: dict[str, int]
    next_due: InvoiceRow | None
    open_rows: list[InvoiceRow]
    recent_payments: list[Payment]
    autopay: SavedPaymentMethod | None
    processing: list[Payment]


def home(*, tenant: Tenant, today: date) -> Home:
    rows = invoice_rows(tenant=tenant, today=today)
    open_rows = [r for r in rows if r.is_open]
    return Home(
        balances=balances(tenant=tenant),
        next_due=open_rows[0] if open_rows else None,
        open_rows=open_rows,
        recent_payments=list(payment_list(tenant=tenant)[:3]),
        autopay=saved_methods(tenant=tenant).filter(autopay=True).first(),
        processing=list(processing_payments(tenant=tenant)),
    )


def processing_payments(*, tenant: Tenant, invoice: Invoice | None = None) -> QuerySet[Payment]:
    """The tenant's payments on their way (a bank debit takes days): not posted yet,
    so balances still show the money as owed; the portal says so next to them."""
    qs = (
        Payment.objects.for_landlord(tenant.landlord)
        .filter(tenant=tenant, status=PaymentStatus.PROCESSING)
        .select_related("invoice")
        .order_by("created_at", "pk")
    )
    return qs.filter(invoice=invoice) if invoice is not None else qs


@dataclass(frozen=True)
class PayOptions:
    """How the tenant can pay in one currency: the methods offered (card first, then
    the currency's bank debit) and whether less than the open amount is accepted."""

    methods: list[str]
    allow_partial: bool

    @property
    def bank_method(self) -> str:
        return next((m for m in self.methods if m in BANK_DEBIT_METHODS), "")

    @property
    def choices(self) -> list[tuple[str, str]]:
        return [(m, Method(m).label) for m in self.methods]


def pay_options(*, tenant: Tenant, currency: str) -> PayOptions:
    return PayOptions(
        methods=payment_services.methods_for_currency(currency),
        allow_partial=payment_services.payment_settings_get(landlord=tenant.landlord).allow_partial,
    )


def lease_list(*, tenant: Tenant) -> QuerySet[Lease]:
    """The leases the tenant is on (as any of its tenants), newest first, with unit,
    property, co-tenants and charges."""
    charges = Charge.objects.for_landlord(tenant.landlord).order_by("start_date", "pk")
    return (
        Lease.objects.for_landlord(tenant.landlord)
        .filter(tenants=tenant)
        .exclude(status="draft")
        .select_related("unit__property")
        .prefetch_related(Prefetch("charges", queryset=charges), "tenants")
        .order_by("-start_date", "-pk")
    )


def payment_list(*, tenant: Tenant) -> QuerySet[Payment]:
    """The tenant's payments, newest first. Attempts that never reached Stripe
    (still waiting, without a PaymentIntent) are left out; declines are shown."""
    return (
        Payment.objects.for_landlord(tenant.landlord)
        .filter(tenant=tenant)
        .exclude(
            source=Source.STRIPE,
            status=PaymentStatus.REQUIRES_PAYMENT,
            stripe_payment_intent_id__isnull=True,
        )
        .select_related("invoice")
        .order_by("-created_at", "-pk")
    )


def payment_get(*, tenant: Tenant, pk) -> Payment:
    """One of the tenant's payments with its allocations; 404 otherwise."""
    allocations = PaymentAllocation.objects.select_related("invoice").order_by("position")
    return get_object_or_404(
        Payment.objects.for_landlord(tenant.landlord)
        .filter(tenant=tenant)
        .select_related("landlord", "tenant", "invoice")
        .prefetch_related(Prefetch("allocations", queryset=allocations), "refunds"),
        pk=pk,
    )


def saved_methods(*, tenant: Tenant) -> QuerySet[SavedPaymentMethod]:
    return (
        SavedPaymentMethod.objects.for_landlord(tenant.landlord)
        .filter(tenant=tenant, detached_at__isnull=True)
        .order_by("-autopay", "-created_at", "-pk")
    )


def saved_method_get(*, tenant: Tenant, pk) -> SavedPaymentMethod:
    return get_object_or_404(saved_methods(tenant=tenant), pk=pk)


def payable_invoice_get(*, tenant: Tenant, pk) -> Invoice:
    """An issued invoice of the tenant (the pay page's target); 404 otherwise."""
    return get_object_or_404(
        _tenant_invoices(tenant=tenant)
        .filter(state=InvoiceState.ISSUED)
        .select_related("lease__unit__property"),
        pk=pk,
    )


def notice_list(*, tenant: Tenant) -> QuerySet[Notification]:
    """The reminders and notices sent to the tenant (dunning's outbox rows), newest
    first: what they were told, when, and by which channel. Rows not sent (yet, or
    ever) are left out, so the page shows only what really reached them."""
    return (
        Notification.objects.for_landlord(tenant.landlord)
        .filter(tenant=tenant, kind__startswith="dunning_", status=NotificationStatus.SENT)
        .select_related("invoice")
        .order_by("-sent_at", "-pk")
    )
