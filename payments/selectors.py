"""Reads over payments, always scoped to one landlord (for the dashboard and portal).

Balances are not here: they come from the ledger (ledger.selectors,
invoices.selectors). A payment's money trail is its ledger transactions, found by
the payment document (`document_kind="payment"`).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Prefetch, Q, QuerySet, Sum
from django.shortcuts import get_object_or_404

from ledger.models import AccountCode, LedgerEntry, LedgerTransaction
from ledger.selectors import tenant_balance
from payments.models import (
    EventStatus,
    Payment,
    PaymentAllocation,
    SavedPaymentMethod,
    StripeConnection,
    StripeEvent,
)
from tenants.models import Landlord, Lease, Tenant
from tenants.query import whole_number

DOCUMENT_KIND = "payment"


@dataclass(frozen=True)
class PaymentFilters:
    """What the payments list can be narrowed by; empty values mean "any"."""

    q: str = ""  # reference or tenant name (contains), payment id, or a Stripe id
    status: str = ""
    method: str = ""
    source: str = ""
    tenant_id: int | None = None

    def as_query(self) -> dict[str, str | int]:
        """The non-empty filters by their query parameter names (links keep them)."""
        values = {
            "q": self.q,
            "status": self.status,
            "method": self.method,
            "source": self.source,
            "tenant": self.tenant_id,
        }
        return {name: value for name, value in values.items() if value not in ("", None)}


def payment_search(*, landlord: Landlord, filters: PaymentFilters) -> QuerySet[Payment]:
    """The landlord's payments narrowed by `filters`, newest first."""
    qs = payment_list(landlord=landlord, status=filters.status or None)
    if filters.tenant_id is not None:  # 0 matches nothing, as it should
        qs = qs.filter(tenant_id=filters.tenant_id)
    if filters.method:
        qs = qs.filter(method=filters.method)
    if filters.source:
        qs = qs.filter(source=filters.source)
    if q := filters.q:
        match = (
            Q(reference__icontains=q)
            | Q(tenant__full_name__icontains=q)
            | Q(stripe_payment_intent_id=q)
            | Q(stripe_charge_id=q)
        )
        if (number := whole_number(q)) is not None:
            match |= Q(pk=number)
        qs = qs.filter(match)
    return qs


def payment_list(
    *,
    landlord: Landlord,
    tenant: Tenant | None = None,
    status: str | None = None,
    invoice_id: int | None = None,
) -> QuerySet[Payment]:
    """The landlord's payments, newest first, with tenant and target invoice."""
    qs = Payment.objects.for_landlord(landlord).select_related("tenant", "invoice")
    if tenant is not None:
        qs = qs.filter(tenant=tenant)
    if status:
        qs = qs.filter(status=status)
    if invoice_id is not None:
        qs = qs.filter(allocations__invoice_id=invoice_id).distinct()
    return qs.order_by("-created_at", "-pk")


def payment_get(*, landlord: Landlord, pk) -> Payment:
    """One payment of the landlord with its allocations, refunds and disputes; 404 otherwise."""
    allocations = PaymentAllocation.objects.select_related("invoice").order_by("position")
    return get_object_or_404(
        Payment.objects.for_landlord(landlord)
        .select_related("tenant", "invoice", "created_by")
        .prefetch_related(
            Prefetch("allocations", queryset=allocations), "refunds", "disputes", "payout_items"
        ),
        pk=pk,
    )


def payment_transactions(*, landlord: Landlord, payment: Payment) -> QuerySet[LedgerTransaction]:
    """The payment's postings (payment, fee, refunds, dispute holds, reversals) in
    chain order, entries with accounts prefetched."""
    entries = LedgerEntry.objects.select_related("account").order_by("pk")
    return (
        LedgerTransaction.objects.for_landlord(landlord)
        .filter(document_kind=DOCUMENT_KIND, document_id=payment.pk)
        .prefetch_related(Prefetch("entries", queryset=entries))
        .order_by("seq")
    )


def invoice_payments(*, landlord: Landlord, invoice_id: int) -> QuerySet[PaymentAllocation]:
    """What each payment contributed to one invoice (for the invoice page)."""
    return (
        PaymentAllocation.objects.for_landlord(landlord)
        .filter(invoice_id=invoice_id)
        .select_related("payment")
        .order_by("payment__created_at", "pk")
    )


def saved_payment_methods(*, landlord: Landlord, tenant: Tenant) -> QuerySet[SavedPaymentMethod]:
    return (
        SavedPaymentMethod.objects.for_landlord(landlord)
        .filter(tenant=tenant, detached_at__isnull=True)
        .order_by("-autopay", "-created_at")
    )


def stripe_connection_get(*, landlord: Landlord) -> StripeConnection | None:
    return StripeConnection.objects.filter(landlord=landlord).first()


def stripe_event_list(*, landlord: Landlord, status: str | None = None) -> QuerySet[StripeEvent]:
    """The landlord's Stripe events, newest first (events resolved to no landlord are
    visible to operators in the admin). Payload and raw body are deferred."""
    qs = StripeEvent.objects.for_landlord(landlord).defer("payload", "raw_body")
    if status in EventStatus.values:
        qs = qs.filter(status=status)
    return qs.order_by("-created_at", "-pk")


def tenant_credits(*, landlord: Landlord, tenant: Tenant) -> dict[str, int]:
    """Credit that may be paid back to the tenant, per currency, only where there is
    some: what their credit account holds, never more than they are owed on balance
    (credit still needed for what they owe pays that first;
    `payments.services.tenant_credit_pay_back`)."""
    rows = (
        LedgerEntry.objects.for_landlord(landlord)
        .filter(account__code=AccountCode.TENANT_CREDIT, account__tenant=tenant)
        .values("currency")
        .annotate(total=Sum("amount_minor"))
        .order_by("currency")
    )
    held = {row["currency"]: -int(row["total"]) for row in rows if row["total"] < 0}
    owed = tenant_balance(landlord=landlord, tenant=tenant)
    payable = {currency: min(amount, -owed.get(currency, 0)) for currency, amount in held.items()}
    return {currency: amount for currency, amount in payable.items() if amount > 0}


# The idempotency key of every pay-back posting starts so (tenant_credit_pay_back).
CREDIT_PAY_BACK_KEY = "credit-payback:"


def is_credit_pay_back(idempotency_key: str) -> bool:
    return idempotency_key.startswith(CREDIT_PAY_BACK_KEY)


@dataclass(frozen=True)
class CreditPayBack:
    """A pay-back posting as a page shows it: whose credit, how much, undone or not."""

    posting: LedgerTransaction
    tenant: Tenant
    amount_minor: int
    currency: str
    reversal: LedgerTransaction | None


def credit_pay_back_get(*, landlord: Landlord, pk: int) -> CreditPayBack:
    """The landlord's pay-back posting `pk`, or 404 (another landlord's, or a posting
    that is no pay-back)."""
    posting = get_object_or_404(
        LedgerTransaction.objects.for_landlord(landlord).filter(
            idempotency_key__startswith=CREDIT_PAY_BACK_KEY
        ),
        pk=pk,
    )
    entry = posting.entries.select_related("account__tenant").get(
        account__code=AccountCode.TENANT_CREDIT
    )
    return CreditPayBack(
        posting=posting,
        tenant=entry.account.tenant,
        amount_minor=entry.amount_minor,
        currency=entry.currency,
        reversal=LedgerTransaction.objects.filter(reverses=posting).first(),
    )


def tenant_currencies(*, landlord: Landlord, tenant: Tenant) -> list[str]:
    """The currencies the tenant is billed in (their leases'), sorted."""
    return sorted(
        set(
            Lease.objects.for_landlord(landlord)
            .filter(tenants=tenant)
            .values_list("currency", flat=True)
        )
    )
