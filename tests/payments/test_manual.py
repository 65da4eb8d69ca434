from datetime import date, timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from payments.models import Method, Payment, PaymentStatus
from payments.services import manual_payment_record, payment_reverse
from tenants.models import AuditEvent
from tests.payments.helpers import balances, books_ok, pi_event, start, status_of

pytestmark = pytest.mark.django_db

RENT = 120_000


def record(world, amount, **kwargs):
    defaults = {
        "landlord": world.landlord,
        "tenant": world.tenant,
        "amount_minor": amount,
        "currency": "EUR",
        "method": Method.CHEQUE,
        "reference": "Cheque 004711",
        "received_on": date(2026, 11, 20),
        "actor": None,
    }
    return manual_payment_record(**(defaults | kwargs))


def test_a_manual_payment_is_posted_to_the_bank_and_allocated_oldest_first(world):
    payment = record(world, RENT)
    assert payment.status == PaymentStatus.SUCCEEDED
    assert status_of(world.landlord, world.november) == "paid"
    assert status_of(world.landlord, world.december) == "overdue"
    assert balances(world.landlord)["bank"] == RENT
    assert payment.posting.effective_at.date() == date(2026, 11, 20)
    assert AuditEvent.objects.filter(landlord=world.landlord, action="payment.record").exists()
    books_ok(world.landlord)


def test_a_manual_payment_for_a_chosen_invoice_goes_there_first(world):
    record(world, RENT, invoice=world.december, method=Method.BANK_TRANSFER)
    assert status_of(world.landlord, world.december) == "paid"
    assert status_of(world.landlord, world.november) == "overdue"


def test_a_double_submit_with_the_same_key_records_once(world):
    first = record(world, RENT, idempotency_key="form-123")
    second = record(world, RENT, idempotency_key="form-123")
    assert first.pk == second.pk
    assert balances(world.landlord)["bank"] == RENT


def test_the_same_form_sent_again_for_another_cheque_is_refused_not_dropped(world):
    # Staff go Back to the form they just sent and type the next cheque of the pile.
    first = record(world, RENT, idempotency_key="form-123")
    with pytest.raises(ValidationError):
        record(world, 50_000, reference="Cheque 004712", idempotency_key="form-123")
    with pytest.raises(ValidationError):
        record(world, RENT, received_on=date(2026, 11, 21), idempotency_key="form-123")
    assert first.tenant.payments.count() == 1
    assert balances(world.landlord)["bank"] == RENT
    assert Payment.objects.filter(landlord=world.other).count() == 1  # B's own, untouched
    books_ok(world.landlord)


def test_a_reversed_cheque_reopens_the_invoice_and_keeps_the_reason(world):
    payment = record(world, RENT)
    reversed_ = payment_reverse(payment=payment, reason="Cheque bounced", actor=None)
    assert reversed_.status == PaymentStatus.REVERSED
    assert reversed_.reversal_reason == "Cheque bounced"
    assert reversed_.reversal.idempotency_key == f"payment:{payment.pk}:reverse"
    assert status_of(world.landlord, world.november) == "overdue"
    assert balances(world.landlord)["bank"] == 0
    with pytest.raises(ValidationError):
        payment_reverse(payment=payment, reason="again", actor=None)
    books_ok(world.landlord)


def test_a_reversal_needs_a_reason(world):
    payment = record(world, RENT)
    with pytest.raises(ValidationError):
        payment_reverse(payment=payment, reason="  ", actor=None)


def test_a_stripe_payment_cannot_be_reversed_by_staff(world, deliver):
    payment = start(world, RENT, invoice=world.december)
    deliver(pi_event(payment, "succeeded"))
    payment.refresh_from_db()
    with pytest.raises(ValidationError):
        payment_reverse(payment=payment, reason="tenant asked", actor=None)


@pytest.mark.parametrize(
    "bad",
    [
        {"amount_minor": 0},
        {"amount_minor": -5},
        {"method": Method.CARD},
        {"currency": "USD"},
        {"received_on": timezone.now().date() + timedelta(days=2)},
    ],
)
def test_invalid_manual_payments_are_refused(world, bad):
    if bad.get("currency") == "USD":
        bad = bad | {"invoice": world.december}
    with pytest.raises(ValidationError):
        record(world, bad.pop("amount_minor", RENT), **bad)
    assert "bank" not in balances(world.landlord)


def test_another_landlords_tenant_cannot_be_credited(world):
    with pytest.raises(ValidationError):
        record(world, RENT, tenant=world.other_tenant)
