from datetime import UTC, date, datetime

import pytest

from payments.models import Method, Payment, PaymentStatus, SavedPaymentMethod, StripeCustomer
from payments.selectors import tenant_credits
from payments.services import autopay_charge
from tests.payments.conftest import bill
from tests.payments.helpers import (
    balance_of,
    books_ok,
    paid_by_transfer,
    payment_transactions,
    status_of,
)

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
RENT = 120_000


@pytest.fixture
def autopay(world):
    StripeCustomer.objects.create(
        landlord=world.landlord, tenant=world.tenant, customer_id="cus_ada"
    )
    return SavedPaymentMethod.objects.create(
        landlord=world.landlord,
        tenant=world.tenant,
        stripe_payment_method_id="pm_card_visa_ada",
        method=Method.CARD,
        brand="visa",
        last4="4242",
        autopay=True,
    )


def test_autopay_charges_the_open_balance_off_session_once(world, autopay, fake_stripe):
    result = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert result.status == "succeeded"
    assert status_of(world.landlord, world.december) == "paid"
    (call,) = [kw for name, kw in fake_stripe.calls if name == "payment_intent_create"]
    assert call["idempotency_key"] == f"autopay:{world.december.pk}:1"
    assert call["off_session"] and call["confirm"]
    assert call["payment_method"] == "pm_card_visa_ada"
    again = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert (again.status, again.payment.pk) == ("succeeded", result.payment.pk)
    assert len(fake_stripe.keys("payment_intent_create")) == 1
    assert len(payment_transactions(result.payment)) == 1
    books_ok(world.landlord)


def test_a_soft_decline_is_retryable_and_posts_nothing(world, autopay, fake_stripe):
    fake_stripe.decline = {"decline_code": "insufficient_funds"}
    result = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert result.status == "declined"
    assert (result.failure_code, result.decline_code) == ("card_declined", "insufficient_funds")
    assert not result.hard_decline and result.retryable
    assert result.payment.status == PaymentStatus.FAILED
    assert result.payment.stripe_payment_intent_id  # taken from the error
    assert payment_transactions(result.payment) == []
    assert status_of(world.landlord, world.december) == "overdue"
    fake_stripe.decline = None
    second = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=2, now=NOW)
    assert second.status == "succeeded"


@pytest.mark.parametrize("code", ["lost_card", "expired_card", "authentication_required"])
def test_a_hard_decline_is_not_retryable(world, autopay, fake_stripe, code):
    fake_stripe.decline = {"decline_code": code}
    result = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert result.hard_decline and not result.retryable


def test_a_bank_debit_autopay_is_processing(world, autopay, fake_stripe):
    SavedPaymentMethod.objects.filter(pk=autopay.pk).update(method=Method.SEPA_DEBIT)
    fake_stripe.confirm_status = "processing"
    result = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert result.status == "processing"
    assert payment_transactions(result.payment) == []


def test_autopay_skips_a_paid_invoice_and_a_tenant_without_autopay(world, autopay, fake_stripe):
    autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    result = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=2, now=NOW)
    assert (result.status, result.reason) == ("skipped", "nothing_due")
    SavedPaymentMethod.objects.update(autopay=False)
    result = autopay_charge(landlord=world.landlord, invoice=world.november, attempt=1, now=NOW)
    assert (result.status, result.reason) == ("skipped", "no_autopay_method")
    assert Payment.objects.filter(landlord=world.landlord).count() == 1


def test_a_bank_debit_autopay_is_posted_when_stripe_reports_success(
    world, autopay, fake_stripe, deliver
):
    from tests.payments.helpers import pi_event

    SavedPaymentMethod.objects.filter(pk=autopay.pk).update(method=Method.SEPA_DEBIT)
    fake_stripe.confirm_status = "processing"
    result = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert result.status == "processing"
    assert status_of(world.landlord, world.december) == "overdue"

    later = int(NOW.timestamp()) + 3 * 86_400
    deliver(pi_event(result.payment, "succeeded", method="sepa_debit", created=later))

    result.payment.refresh_from_db()
    assert result.payment.status == PaymentStatus.SUCCEEDED
    assert len(payment_transactions(result.payment)) == 1
    assert status_of(world.landlord, world.december) == "paid"
    again = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert again.status == "succeeded"
    books_ok(world.landlord)


def test_a_failed_bank_debit_autopay_is_declined_and_posts_nothing(
    world, autopay, fake_stripe, deliver
):
    from tests.payments.helpers import pi_event

    SavedPaymentMethod.objects.filter(pk=autopay.pk).update(method=Method.SEPA_DEBIT)
    fake_stripe.confirm_status = "processing"
    result = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)

    later = int(NOW.timestamp()) + 3 * 86_400
    error = {"code": "account_closed", "message": "The bank account has been closed."}
    deliver(
        pi_event(
            result.payment,
            "requires_payment_method",
            method="sepa_debit",
            error=error,
            created=later,
        )
    )

    again = autopay_charge(landlord=world.landlord, invoice=world.december, attempt=1, now=NOW)
    assert (again.status, again.failure_code, again.hard_decline) == (
        "declined",
        "account_closed",
        True,
    )
    assert again.message == "The bank account has been closed."
    assert payment_transactions(result.payment) == []


def test_credit_held_pays_first_and_the_card_is_charged_only_the_rest(world, autopay, fake_stripe):
    """The tenant paid ahead (credit 500.00) before January was billed; the credit sweep
    has not run yet when autopay comes: the credit pays first, the card the rest."""
    paid_by_transfer(world, 2 * RENT + 50_000)
    (january,) = bill(world.landlord, date(2027, 1, 1))
    assert balance_of(world.landlord, january) == RENT

    result = autopay_charge(landlord=world.landlord, invoice=january, attempt=1, now=NOW)

    assert result.status == "succeeded"
    assert result.payment.amount_minor == RENT - 50_000
    (call,) = [kw for name, kw in fake_stripe.calls if name == "payment_intent_create"]
    assert call["amount"] == RENT - 50_000
    assert balance_of(world.landlord, january) == 0
    assert tenant_credits(landlord=world.landlord, tenant=world.tenant) == {}
    books_ok(world.landlord)


def test_credit_that_covers_the_invoice_means_no_charge(world, autopay, fake_stripe):
    paid_by_transfer(world, 3 * RENT)
    (january,) = bill(world.landlord, date(2027, 1, 1))

    result = autopay_charge(landlord=world.landlord, invoice=january, attempt=1, now=NOW)

    assert (result.status, result.reason) == ("skipped", "nothing_due")
    assert fake_stripe.keys("payment_intent_create") == []
    assert balance_of(world.landlord, january) == 0
    assert not Payment.objects.filter(landlord=world.landlord, source="stripe").exists()
    books_ok(world.landlord)
