"""Stripe delivers at least once and in any order: whatever the order and however
many times each event arrives, the books end the same."""

import random
import time
from datetime import date

import pytest

from payments.models import Method, Payment, PaymentStatus, StripeConnection, StripeEvent
from payments.services import tenant_credit_balance
from tests.payments import stripe_objects as so
from tests.payments.conftest import bill
from tests.payments.helpers import (
    balance_of,
    balances,
    books_ok,
    payment_transactions,
    pi_event,
    start,
    status_of,
)

pytestmark = pytest.mark.django_db

RENT = 120_000


def shuffled_with_duplicates(events, seed):
    rng = random.Random(seed)
    deliveries = [e for e in events for _ in range(rng.randint(1, 3))]
    rng.shuffle(deliveries)
    return deliveries


@pytest.mark.parametrize("seed", range(8))
def test_a_card_payments_life_converges_in_any_order(world, deliver, seed):
    StripeConnection.objects.create(landlord=world.landlord, account_id="acct_acme")
    payment = start(world, RENT, invoice=world.december)
    charge_id = f"ch_for_{payment.stripe_payment_intent_id}"
    t = int(time.time()) - 3600
    re1 = so.refund(charge_id=charge_id, amount=20_000, id="re_c1")
    re2 = so.refund(charge_id=charge_id, amount=10_000, id="re_c2")

    def refunded(refunds, created):
        obj = so.charge(
            id=charge_id,
            amount=RENT,
            payment_intent=payment.stripe_payment_intent_id,
            refunds=refunds,
        )
        return so.event("charge.refunded", obj, account="acct_acme", created=created)

    def disputed(status, type_, created):
        obj = so.dispute(
            charge_id=charge_id,
            payment_intent=payment.stripe_payment_intent_id,
            amount=90_000,
            status=status,
            id="dp_c1",
        )
        return so.event(type_, obj, account="acct_acme", created=created)

    payout = so.event(
        "payout.paid",
        so.payout(id="po_c1", amount=50_000, status="paid"),
        account="acct_acme",
        created=t + 60,
    )
    events = [
        pi_event(payment, "succeeded", created=t, account="acct_acme"),
        refunded([re1], t + 10),
        refunded([re2, re1], t + 20),
        disputed("needs_response", "charge.dispute.created", t + 30),
        disputed("under_review", "charge.dispute.updated", t + 40),
        disputed("won", "charge.dispute.closed", t + 50),
        payout,
    ]
    for event in shuffled_with_duplicates(events, seed):
        assert deliver(event).status_code == 200

    assert StripeEvent.objects.filter(status="processed").count() == len(events)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert balance_of(world.landlord, world.december) == 30_000
    assert status_of(world.landlord, world.november) == "overdue"
    got = balances(world.landlord)
    assert got["cash_in_transit"] == RENT - 30_000 - 50_000
    assert got["bank"] == 50_000
    assert got.get("tenant_credit", 0) == 0
    books_ok(world.landlord)


@pytest.mark.parametrize("seed", range(6))
def test_a_bank_debits_life_converges_in_any_order(world, deliver, seed):
    payment = start(world, RENT, invoice=world.december, method=Method.SEPA_DEBIT)
    t = int(time.time()) - 3600
    events = [
        pi_event(payment, "processing", created=t, method="sepa_debit"),
        pi_event(payment, "succeeded", created=t + 86400 // 24, method="sepa_debit"),
    ]
    for event in shuffled_with_duplicates(events, seed):
        deliver(event)
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert len(payment_transactions(payment)) == 1
    assert status_of(world.landlord, world.december) == "paid"


def test_a_won_dispute_does_not_push_an_invoice_below_zero_when_credit_paid_it(world, deliver):
    paid = start(world, RENT, invoice=world.december)
    deliver(pi_event(paid, "succeeded"))
    paid.refresh_from_db()
    charge_id = paid.stripe_charge_id

    def dispute(status, type_):
        obj = so.dispute(
            charge_id=charge_id,
            payment_intent=paid.stripe_payment_intent_id,
            amount=RENT,
            status=status,
        )
        return so.event(type_, obj)

    deliver(dispute("needs_response", "charge.dispute.created"))
    assert status_of(world.landlord, world.december) == "overdue"
    # Meanwhile the tenant overpays: November and the reopened December are paid.
    extra = start(world, 3 * RENT, key="portal-extra")
    deliver(pi_event(extra, "succeeded"))
    assert status_of(world.landlord, world.december) == "paid"
    assert (
        tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR") == RENT
    )

    deliver(dispute("won", "charge.dispute.closed"))
    assert balance_of(world.landlord, world.december) == 0
    assert balance_of(world.landlord, world.november) == 0
    assert (
        tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR")
        == 2 * RENT
    )
    books_ok(world.landlord)


def test_refunding_an_overpayment_whose_credit_was_spent_reopens_no_paid_invoice(world, deliver):
    payment = start(world, 3 * RENT)
    deliver(pi_event(payment, "succeeded"))
    payment.refresh_from_db()
    (january,) = bill(world.landlord, date(2027, 1, 1))
    from payments.services import tenant_credit_apply

    tenant_credit_apply(landlord=world.landlord, tenant=world.tenant)
    assert status_of(world.landlord, january) == "paid"

    refund = so.refund(charge_id=payment.stripe_charge_id, amount=3 * RENT, id="re_all")
    obj = so.charge(
        id=payment.stripe_charge_id,
        amount=3 * RENT,
        payment_intent=payment.stripe_payment_intent_id,
        refunds=[refund],
    )
    deliver(so.event("charge.refunded", obj))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REFUNDED
    assert status_of(world.landlord, world.november) == "overdue"
    assert status_of(world.landlord, world.december) == "overdue"
    # The credit the tenant spent on January is owed again, outside any invoice; the
    # credit account is never overdrawn.
    assert tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR") == 0
    got = balances(world.landlord)
    assert got["receivable"] == 3 * RENT
    assert got["tenant_credit"] == 0
    books_ok(world.landlord)


def test_credit_pays_an_invoice_a_refund_reopens(world, deliver):
    card = start(world, RENT, invoice=world.december)
    deliver(pi_event(card, "succeeded"))
    card.refresh_from_db()
    from payments.services import manual_payment_record

    manual_payment_record(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=2 * RENT,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="SEPA credit transfer",
        received_on=date(2026, 11, 20),
        actor=None,
    )
    assert (
        tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR") == RENT
    )
    refund = so.refund(charge_id=card.stripe_charge_id, amount=RENT, id="re_card")
    obj = so.charge(
        id=card.stripe_charge_id,
        amount=RENT,
        payment_intent=card.stripe_payment_intent_id,
        refunds=[refund],
    )
    deliver(so.event("charge.refunded", obj))
    assert status_of(world.landlord, world.december) == "paid"
    assert tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR") == 0
    assert Payment.objects.get(pk=card.pk).status == PaymentStatus.REFUNDED
