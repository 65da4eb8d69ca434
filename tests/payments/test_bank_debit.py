"""Bank debits against a real localstripe process, through the payments services the
portal calls, plus the ACH path localstripe cannot run (signed events in Stripe's
shapes instead).

What localstripe does with SEPA Direct Debit (1.15, read from its source): a
SetupIntent confirmed with an IBAN (what Stripe.js confirmSepaDebitSetup sends) gives
a `sepa_debit` payment method; a PaymentIntent confirmed with it *succeeds at once*
(its webhook follows half a second later), except IBAN DE62370400440532013001, which
stays `processing` and then fails. Real Stripe keeps every SEPA debit `processing` for
days; the processing → succeeded path is covered with signed events in
tests/portal/test_bank_debit.py. localstripe has no `us_bank_account` payment methods
or SetupIntents (a SetupIntent for it is a 400); it accepts `payment_method_types` on
a PaymentIntent but ignores it, so the unconfirmed intent our server makes for ACH
is created there as a plain one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from payments import services
from payments.models import EventStatus, Method, Payment, PaymentStatus, StripeEvent
from tests.payments import stripe_objects as so
from tests.payments.helpers import books_ok, metadata, payment_transactions, status_of
from tests.payments.test_localstripe import localstripe_url as localstripe_url
from tests.payments.test_localstripe import stripe_env as stripe_env
from tests.payments.test_localstripe import wait_for

USES_LOCALSTRIPE = True
RENT = 120_000
GOOD_IBAN = "DE89370400440532013000"
# localstripe's IBAN whose debits fail after `processing` (its stand-in for a return).
FAILING_IBAN = "DE62370400440532013001"

pytestmark = pytest.mark.django_db(transaction=True)


def sepa_mandate(world, browser, iban: str) -> str:
    """The tenant accepts the SEPA mandate for `iban`: the SetupIntent our server made,
    confirmed the way Stripe.js `confirmSepaDebitSetup` does it; the payment method."""
    secret = services.setup_intent_create(
        landlord=world.landlord,
        tenant=world.tenant,
        idempotency_key=f"setup-sepa-{iban}",
        method=Method.SEPA_DEBIT,
    )
    confirmed = browser.v1.setup_intents.confirm(
        secret.split("_secret_")[0],
        params={
            "payment_method_data": {
                "type": "sepa_debit",
                "sepa_debit": {"iban": iban},
                "billing_details": {"name": "Ada Tenant", "email": "ada@example.test"},
            }
        },
    )
    assert confirmed.status == "succeeded"
    return confirmed.payment_method


def sepa_pay(world, pm: str, key: str, invoice=None) -> Payment:
    payment, _secret = services.payment_intent_create(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=RENT,
        currency="EUR",
        invoice=invoice or world.november,
        idempotency_key=key,
        method=Method.SEPA_DEBIT,
        payment_method_id=pm,
        confirm=True,
    )
    return payment


def test_a_sepa_debit_through_localstripe_is_posted_once_with_its_webhook(world, stripe_env):
    pm = sepa_mandate(world, stripe_env, GOOD_IBAN)

    payment = sepa_pay(world, pm, "portal-sepa-1")

    assert payment.method == Method.SEPA_DEBIT
    intent = stripe_env.v1.payment_intents.retrieve(payment.stripe_payment_intent_id)
    assert intent.payment_method == pm
    assert wait_for(
        lambda: StripeEvent.objects.filter(
            type="payment_intent.succeeded", status=EventStatus.PROCESSED
        ).exists()
    ), list(StripeEvent.objects.values_list("type", "status", "error"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert len(payment_transactions(payment)) == 1
    assert status_of(world.landlord, world.november) == "paid"
    books_ok(world.landlord)


def test_a_returned_sepa_debit_is_processing_then_failed_and_posts_nothing(world, stripe_env):
    pm = sepa_mandate(world, stripe_env, FAILING_IBAN)

    payment = sepa_pay(world, pm, "portal-sepa-2")

    assert payment.status == PaymentStatus.PROCESSING
    assert payment_transactions(payment) == []
    assert status_of(world.landlord, world.november) == "overdue"
    assert wait_for(lambda: Payment.objects.get(pk=payment.pk).status == PaymentStatus.FAILED), (
        list(StripeEvent.objects.values_list("type", "status", "error"))
    )
    payment.refresh_from_db()
    # localstripe words every failure like a card decline.
    assert payment.failure_message == "Your card was declined."
    assert payment_transactions(payment) == []
    assert status_of(world.landlord, world.november) == "overdue"
    books_ok(world.landlord)


def test_a_saved_sepa_mandate_pays_by_autopay_off_session(world, stripe_env):
    pm = sepa_mandate(world, stripe_env, GOOD_IBAN)
    saved = services.payment_method_save(
        landlord=world.landlord, tenant=world.tenant, payment_method_id=pm, autopay=True, actor=None
    )
    assert (saved.method, saved.last4, saved.autopay) == (Method.SEPA_DEBIT, "3000", True)

    now = datetime.now(UTC)
    result = services.autopay_charge(
        landlord=world.landlord, invoice=world.november, attempt=1, now=now
    )

    assert result.status in ("succeeded", "processing"), result
    assert result.payment.method == Method.SEPA_DEBIT
    assert wait_for(lambda: Payment.objects.get(pk=result.payment.pk).status == "succeeded")
    assert len(payment_transactions(result.payment)) == 1
    again = services.autopay_charge(
        landlord=world.landlord, invoice=world.november, attempt=1, now=now
    )
    assert (again.status, again.payment.pk) == ("succeeded", result.payment.pk)


def test_a_saved_sepa_mandate_that_bounces_is_a_processing_autopay_then_failed(world, stripe_env):
    pm = sepa_mandate(world, stripe_env, FAILING_IBAN)
    services.payment_method_save(
        landlord=world.landlord, tenant=world.tenant, payment_method_id=pm, autopay=True, actor=None
    )

    result = services.autopay_charge(
        landlord=world.landlord, invoice=world.november, attempt=1, now=datetime.now(UTC)
    )

    assert result.status == "processing"
    assert wait_for(lambda: Payment.objects.get(pk=result.payment.pk).status == "failed")
    assert payment_transactions(result.payment) == []


def test_sepa_for_a_dollar_invoice_is_refused_on_the_method(world, stripe_env):
    other_invoice = world.other_invoices[0]
    with pytest.raises(ValidationError) as refused:
        services.payment_intent_create(
            landlord=world.other,
            tenant=world.other_tenant,
            amount_minor=10_000,
            currency="USD",
            invoice=other_invoice,
            idempotency_key="portal-usd-sepa",
            method=Method.SEPA_DEBIT,
        )
    assert refused.value.message_dict == {"method": ["SEPA Direct Debit cannot pay in USD."]}
    assert not Payment.objects.filter(landlord=world.other, source="stripe").exists()


def test_an_ach_payment_intent_is_made_at_localstripe_and_posted_on_stripes_success(
    world, stripe_env, client, django_capture_on_commit_callbacks
):
    """Our half of ACH runs at localstripe (the unconfirmed PaymentIntent); Stripe.js's
    half (collectBankAccountForPayment, confirmUsBankAccountPayment) does not exist
    there, so Stripe's reports come as signed events in Stripe's documented shape."""
    from django.urls import reverse

    from tests.payments.test_localstripe import SECRET

    invoice = world.other_invoices[0]
    due = services.invoice_balances(landlord=world.other, invoices=[invoice])[invoice.pk]
    payment, secret = services.payment_intent_create(
        landlord=world.other,
        tenant=world.other_tenant,
        amount_minor=due,
        currency="USD",
        invoice=invoice,
        idempotency_key="portal-ach-1",
        method=Method.US_BANK_ACCOUNT,
    )
    intent = stripe_env.v1.payment_intents.retrieve(payment.stripe_payment_intent_id)
    assert intent.status == "requires_payment_method"
    assert secret == intent.client_secret
    assert payment.status == PaymentStatus.REQUIRES_PAYMENT

    def report(status: str, created: int) -> None:
        pi = so.payment_intent(
            id=payment.stripe_payment_intent_id,
            amount=due,
            currency="usd",
            status=status,
            metadata=metadata(payment),
            latest_charge="ch_ach_test" if status == "succeeded" else None,
            method="us_bank_account",
        )
        type_ = {"processing": "payment_intent.processing"}.get(status, "payment_intent.succeeded")
        raw = json.dumps(so.event(type_, pi, created=created)).encode()
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                reverse("stripe-webhook"),
                data=raw,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=so.sign(raw, secret=SECRET),
            )
        assert response.status_code == 200

    now = int(datetime.now(UTC).timestamp())
    report("processing", now)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING
    assert payment_transactions(payment) == []

    report("succeeded", now + 3 * 86_400)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert len(payment_transactions(payment)) == 1
    assert services.invoice_balances(landlord=world.other, invoices=[invoice])[invoice.pk] == 0
    books_ok(world.other)
