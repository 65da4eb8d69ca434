"""Assertions and shortcuts shared by the payments tests."""

from __future__ import annotations

from datetime import date

from invoices.selectors import invoice_balances, invoice_statuses
from ledger.models import LedgerTransaction
from ledger.selectors import ledger_verify, trial_balance
from payments import services
from payments.models import Method, Payment
from tests.payments import stripe_objects as so

TODAY = date(2026, 12, 15)


def balances(landlord) -> dict[str, int]:
    """Balance per account code (all currencies of the test are one), debit positive."""
    return {line.code: line.balance for line in trial_balance(landlord=landlord).lines}


def books_ok(landlord) -> None:
    result = ledger_verify(landlord=landlord)
    assert result.ok, result


def status_of(landlord, invoice) -> str:
    return invoice_statuses(landlord=landlord, invoices=[invoice], today=TODAY)[invoice.pk]


def balance_of(landlord, invoice) -> int:
    return invoice_balances(landlord=landlord, invoices=[invoice])[invoice.pk]


def start(world, amount: int, *, invoice=None, key: str = "portal-1", **kwargs) -> Payment:
    payment, secret = services.payment_intent_create(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=amount,
        currency="EUR",
        invoice=invoice,
        idempotency_key=key,
        **kwargs,
    )
    assert secret.startswith(payment.stripe_payment_intent_id)
    return payment


def metadata(payment: Payment) -> dict:
    return {
        "landlord_id": str(payment.landlord_id),
        "tenant_id": str(payment.tenant_id),
        "payment_id": str(payment.pk),
        "invoice_id": str(payment.invoice_id or ""),
    }


def pi_event(
    payment: Payment,
    status: str,
    *,
    created: int | None = None,
    charge: dict | None = None,
    error: dict | None = None,
    amount: int | None = None,
    account: str | None = None,
    method: str = "card",
) -> dict:
    type_ = {
        "succeeded": "payment_intent.succeeded",
        "processing": "payment_intent.processing",
        "requires_payment_method": "payment_intent.payment_failed",
        "canceled": "payment_intent.canceled",
    }[status]
    amount = amount or payment.amount_minor
    if status == "succeeded" and charge is None:
        # As Stripe sends it (API 2022-11-15 and later): the charge by id only.
        charge = f"ch_for_{payment.stripe_payment_intent_id}"
    obj = so.payment_intent(
        id=payment.stripe_payment_intent_id,
        amount=amount,
        status=status,
        metadata=metadata(payment),
        latest_charge=charge,
        method=method,
        last_payment_error=error,
    )
    return so.event(type_, obj, created=created, account=account)


def payment_transactions(payment: Payment) -> list[LedgerTransaction]:
    return list(
        LedgerTransaction.objects.filter(
            landlord_id=payment.landlord_id, document_kind="payment", document_id=payment.pk
        ).order_by("seq")
    )


def paid_by_transfer(world, amount: int, *, on: date = date(2026, 12, 1)) -> Payment:
    """The tenant's bank transfer of `amount` EUR, recorded by staff (oldest invoice
    first, the rest as credit)."""
    return services.manual_payment_record(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=amount,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="",
        received_on=on,
        actor=None,
    )
