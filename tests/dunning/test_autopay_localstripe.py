"""Dunning's autopay end to end against a real localstripe: a declining card, the
"payment failed" notice, a new card saved the portal's way, the retry on its day, the
signed webhook localstripe sends, and no dunning after the rent is paid.

No time-machine here: localstripe signs its webhooks with the real clock and the
endpoint refuses stale signatures, so the engine gets `now` passed in instead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dunning.models import DunningStep, StepStatus
from dunning.services import dunning_tick
from invoices.selectors import invoice_balances
from payments import services
from payments.models import EventStatus, Payment, PaymentStatus, StripeEvent
from tests.dunning.factories import BERLIN, DUE, RENT, fee_invoices, keys, notices, renters
from tests.payments.helpers import books_ok, payment_transactions
from tests.payments.test_localstripe import (  # noqa: F401  (fixtures)
    card,
    localstripe_url,
    stripe_env,
    wait_for,
)

USES_LOCALSTRIPE = True
pytestmark = pytest.mark.django_db(transaction=True)

DUE_DAY = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)  # 10:00 in Berlin


def save_card(browser, renter, number: str, key: str):
    """What the portal's "add a card" page does: a SetupIntent confirmed by Stripe.js
    (confirmCardSetup), then the method saved for autopay."""
    secret = services.setup_intent_create(
        landlord=renter.tenant.landlord, tenant=renter.tenant, idempotency_key=key
    )
    confirmed = browser.v1.setup_intents.confirm(
        secret.split("_secret_")[0], params={"payment_method": card(browser, number)}
    )
    return services.payment_method_save(
        landlord=renter.tenant.landlord,
        tenant=renter.tenant,
        payment_method_id=confirmed.payment_method,
        autopay=True,
        actor=None,
    )


def test_a_declined_autopay_is_retried_with_the_new_card_and_dunning_stops(
    landlord,
    other_landlord,
    stripe_env,  # noqa: F811  (the fixture imported above)
):
    (renter,) = renters(landlord, BERLIN)
    # 4000000000000341 saves fine and declines when charged.
    save_card(stripe_env, renter, "4000000000000341", "setup-declining")

    result = dunning_tick(now=DUE_DAY, landlord=landlord)
    assert "error" not in result.counts, result.counts
    first = DunningStep.objects.get(invoice=renter.invoice, key="autopay#1")
    assert (first.status, first.outcome) == (StepStatus.DONE, "declined")
    assert first.payment.status == PaymentStatus.FAILED
    assert first.payment.failure_code == "card_declined"
    (failed,) = notices(renter.invoice).filter(kind="dunning_payment_failed")
    assert "7 Dec 2026" in failed.body  # the retry date (retry_days 1, 3, 5, 7)
    assert payment_transactions(first.payment) == []

    # Nothing more that day however often the beat runs.
    for hour in range(1, 10):
        dunning_tick(now=DUE_DAY + timedelta(hours=hour), landlord=landlord)
    assert not DunningStep.objects.filter(invoice=renter.invoice, action="retry").exists()

    new = save_card(stripe_env, renter, "4242424242424242", "setup-working")
    assert (new.autopay, new.last4) == (True, "4242")

    retry_at = DUE_DAY + timedelta(days=1)
    result = dunning_tick(now=retry_at, landlord=landlord)
    assert result.counts.get("succeeded") == 1, result.counts
    retry = DunningStep.objects.get(invoice=renter.invoice, key="retry#2")
    assert (retry.scheduled_on, retry.outcome) == (DUE + timedelta(days=1), "succeeded")
    payment = retry.payment
    assert payment.stripe_payment_method_id == new.stripe_payment_method_id
    assert invoice_balances(landlord=landlord, invoices=[renter.invoice])[renter.invoice.pk] == 0

    # localstripe's signed webhook arrives and finds the payment already posted.
    assert wait_for(
        lambda: StripeEvent.objects.filter(
            type="payment_intent.succeeded",
            status=EventStatus.PROCESSED,
            raw_body__contains=payment.stripe_payment_intent_id,
        ).exists()
    ), list(StripeEvent.objects.values_list("type", "status", "error"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert len(payment_transactions(payment)) == 1
    assert Payment.objects.filter(tenant=renter.tenant, status=PaymentStatus.SUCCEEDED).count() == 1

    taken = keys(renter.invoice)
    for day in range(2, 25):
        dunning_tick(now=DUE_DAY + timedelta(days=day), landlord=landlord)
    assert keys(renter.invoice) == taken
    assert "overdue_notice+1" not in taken  # the retry paid before the day's notice
    assert not fee_invoices(renter.invoice).exists()
    assert not notices(renter.invoice).filter(kind="dunning_overdue_notice").exists()
    assert payment.amount_minor == RENT
    books_ok(landlord)
