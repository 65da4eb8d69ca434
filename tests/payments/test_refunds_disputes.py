import time

import pytest

from payments.models import Dispute, PaymentStatus, Refund
from tests.payments import stripe_objects as so
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


@pytest.fixture
def paid(world, deliver):
    """The December invoice paid by card (charge `ch_for_<pi>`)."""
    payment = start(world, RENT, invoice=world.december)
    deliver(pi_event(payment, "succeeded", created=int(time.time()) - 600))
    payment.refresh_from_db()
    assert status_of(world.landlord, world.december) == "paid"
    return payment


def refunded_event(payment, refunds, **kwargs):
    charge = so.charge(
        id=payment.stripe_charge_id or f"ch_for_{payment.stripe_payment_intent_id}",
        amount=payment.amount_minor,
        payment_intent=payment.stripe_payment_intent_id,
        refunds=refunds,
    )
    return so.event("charge.refunded", charge, **kwargs)


def dispute_event(payment, status, *, type_="charge.dispute.created", amount=RENT, **kwargs):
    obj = so.dispute(
        charge_id=payment.stripe_charge_id or f"ch_for_{payment.stripe_payment_intent_id}",
        payment_intent=payment.stripe_payment_intent_id,
        amount=amount,
        status=status,
        balance_transactions=kwargs.pop("balance_transactions", None),
    )
    return so.event(type_, obj, **kwargs)


def test_a_full_refund_reopens_the_invoice_and_takes_the_cash_back(world, paid, deliver):
    charge_id = paid.stripe_charge_id
    deliver(refunded_event(paid, [so.refund(charge_id=charge_id, amount=RENT, id="re_full")]))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.REFUNDED
    assert status_of(world.landlord, world.december) == "overdue"
    assert balances(world.landlord)["cash_in_transit"] == 0
    refund = Refund.objects.get(stripe_refund_id="re_full")
    assert refund.posting.idempotency_key == "refund:re_full"
    books_ok(world.landlord)


def test_partial_refunds_post_each_refund_once_however_often_delivered(world, paid, deliver):
    charge_id = paid.stripe_charge_id
    first = so.refund(charge_id=charge_id, amount=20_000, id="re_1")
    second = so.refund(charge_id=charge_id, amount=30_000, id="re_2")
    one = refunded_event(paid, [first])
    both = refunded_event(paid, [second, first])
    deliver(one)
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.PARTIALLY_REFUNDED
    deliver(both)
    deliver(both)
    deliver(one)
    assert Refund.objects.filter(payment=paid).count() == 2
    assert balance_of(world.landlord, world.december) == 50_000
    assert balances(world.landlord)["cash_in_transit"] == RENT - 50_000
    assert len(payment_transactions(paid)) == 3


def test_a_refund_that_arrives_before_the_success_converges(world, deliver):
    payment = start(world, RENT, invoice=world.december)
    charge_id = f"ch_for_{payment.stripe_payment_intent_id}"
    deliver(refunded_event(payment, [so.refund(charge_id=charge_id, amount=40_000, id="re_a")]))
    deliver(pi_event(payment, "succeeded"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert balance_of(world.landlord, world.december) == 40_000
    assert len(payment_transactions(payment)) == 2
    books_ok(world.landlord)


def test_a_failed_refund_is_reversed_and_stays_failed(world, paid, deliver):
    charge_id = paid.stripe_charge_id
    deliver(refunded_event(paid, [so.refund(charge_id=charge_id, amount=RENT, id="re_x")]))
    failed = so.refund(charge_id=charge_id, amount=RENT, id="re_x", status="failed")
    deliver(so.event("charge.refund.updated", failed))
    deliver(refunded_event(paid, [so.refund(charge_id=charge_id, amount=RENT, id="re_x")]))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.SUCCEEDED
    assert status_of(world.landlord, world.december) == "paid"
    assert Refund.objects.get(stripe_refund_id="re_x").status == "failed"


def test_refunding_an_overpayment_takes_the_tenant_credit_first(world, deliver):
    payment = start(world, 3 * RENT)
    deliver(pi_event(payment, "succeeded"))
    payment.refresh_from_db()
    charge_id = payment.stripe_charge_id
    deliver(refunded_event(payment, [so.refund(charge_id=charge_id, amount=RENT, id="re_over")]))
    assert balances(world.landlord)["tenant_credit"] == 0
    assert status_of(world.landlord, world.november) == "paid"
    assert status_of(world.landlord, world.december) == "paid"


def test_a_dispute_puts_the_amount_back_on_the_tenant_and_a_lost_one_keeps_it(world, paid, deliver):
    fee_txn = so.balance_transaction(id="txn_dispute_fee", fee=1500, currency="eur")
    deliver(dispute_event(paid, "needs_response", balance_transactions=[fee_txn]))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.DISPUTED
    assert status_of(world.landlord, world.december) == "overdue"
    assert balances(world.landlord)["cash_in_transit"] == -1500
    assert balances(world.landlord)["processor_fees"] == 1500

    deliver(dispute_event(paid, "lost", type_="charge.dispute.closed"))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.REVERSED
    assert status_of(world.landlord, world.december) == "overdue"
    dispute = Dispute.objects.get()
    assert dispute.hold.idempotency_key == "dispute:dp_test1:hold"
    assert dispute.release is None and dispute.closed_at is not None
    books_ok(world.landlord)


def test_a_won_dispute_releases_the_hold(world, paid, deliver):
    deliver(dispute_event(paid, "needs_response"))
    deliver(dispute_event(paid, "under_review", type_="charge.dispute.updated"))
    deliver(dispute_event(paid, "won", type_="charge.dispute.closed"))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.SUCCEEDED
    assert status_of(world.landlord, world.december) == "paid"
    assert balances(world.landlord)["cash_in_transit"] == RENT
    dispute = Dispute.objects.get()
    assert dispute.release.idempotency_key == "dispute:dp_test1:won"
    # An older "created" snapshot delivered late does not reopen it.
    deliver(dispute_event(paid, "needs_response"))
    assert status_of(world.landlord, world.december) == "paid"


def test_a_closed_dispute_delivered_before_its_creation_converges(world, paid, deliver):
    deliver(dispute_event(paid, "lost", type_="charge.dispute.closed"))
    deliver(dispute_event(paid, "needs_response"))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.REVERSED
    assert status_of(world.landlord, world.december) == "overdue"
    assert balances(world.landlord)["cash_in_transit"] == 0


def test_an_inquiry_takes_no_money(world, paid, deliver):
    deliver(dispute_event(paid, "warning_needs_response"))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.DISPUTED
    assert status_of(world.landlord, world.december) == "paid"
    deliver(dispute_event(paid, "warning_closed", type_="charge.dispute.closed"))
    paid.refresh_from_db()
    assert paid.status == PaymentStatus.SUCCEEDED
