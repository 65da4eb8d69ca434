import time

import pytest

from payments.models import EventStatus, Payout, PayoutItem, StripeConnection, StripeEvent
from tests.payments import stripe_objects as so
from tests.payments.helpers import balances, books_ok, pi_event, start

pytestmark = pytest.mark.django_db

RENT = 120_000


@pytest.fixture
def connected(world):
    StripeConnection.objects.create(landlord=world.landlord, account_id="acct_acme")
    StripeConnection.objects.create(landlord=world.other, account_id="acct_bright")
    return world


@pytest.fixture
def paid(connected, deliver):
    payment = start(connected, RENT, invoice=connected.december)
    deliver(pi_event(payment, "succeeded", account="acct_acme"))
    payment.refresh_from_db()
    return payment


def payout_event(status, *, amount=RENT, id="po_test1", created=None, account="acct_acme"):
    type_ = {"paid": "payout.paid", "failed": "payout.failed"}.get(status, "payout.updated")
    obj = so.payout(id=id, amount=amount, status=status)
    if status == "failed":
        obj.update(failure_code="account_closed", failure_message="The bank account is closed.")
    return so.event(type_, obj, account=account, created=created)


def test_a_paid_payout_moves_cash_in_transit_to_the_bank_and_lists_its_payments(
    connected, paid, deliver, fake_stripe
):
    fake_stripe.payout_txns["po_test1"] = [
        so.balance_transaction(
            id="txn_c1",
            type="charge",
            source=paid.stripe_charge_id,
            amount=RENT,
            fee=380,
            net=RENT - 380,
        ),
        so.balance_transaction(id="txn_po", type="payout", source="po_test1"),
    ]
    deliver(payout_event("paid", amount=RENT - 380))
    world = connected
    assert balances(world.landlord)["bank"] == RENT - 380
    assert balances(world.landlord)["cash_in_transit"] == 0
    payout = Payout.objects.get()
    assert payout.items_reconciled
    (item,) = PayoutItem.objects.all()
    assert (item.payment, item.fee_minor) == (paid, 380)
    paid.refresh_from_db()
    assert paid.fee_minor == 380  # unknown at success, filled in from the payout
    books_ok(world.landlord)


def test_a_fee_stated_in_another_currency_is_not_posted_as_the_payments(
    connected, paid, deliver, fake_stripe
):
    """Stripe states fees in the settlement currency: a USD fee on a EUR payment is not
    booked as EUR; the fee stays unknown and the books stay right."""
    fake_stripe.payout_txns["po_test1"] = [
        so.balance_transaction(
            id="txn_c1",
            type="charge",
            source=paid.stripe_charge_id,
            amount=130_000,
            fee=410,
            net=130_000 - 410,
            currency="usd",
        ),
    ]
    deliver(payout_event("paid"))
    paid.refresh_from_db()
    assert paid.fee_minor is None and paid.fee_posting is None
    assert balances(connected.landlord).get("processor_fees", 0) == 0
    (item,) = PayoutItem.objects.all()
    assert item.fee_minor == 410  # what Stripe said, kept on the payout's item
    books_ok(connected.landlord)


def test_a_payout_whose_items_cannot_be_listed_is_still_posted(connected, paid, deliver):
    deliver(payout_event("paid"))
    payout = Payout.objects.get()
    assert payout.posting is not None
    assert not payout.items_reconciled
    assert balances(connected.landlord)["bank"] == RENT


def test_a_payout_that_fails_after_it_was_paid_is_reversed(connected, paid, deliver):
    now = int(time.time())
    deliver(payout_event("paid", created=now - 60))
    deliver(payout_event("failed", created=now))
    deliver(payout_event("paid", created=now - 60))
    payout = Payout.objects.get()
    assert payout.status == "failed"
    assert payout.failure_code == "account_closed"
    assert payout.reversal.reverses_id == payout.posting_id
    assert balances(connected.landlord)["bank"] == 0
    assert balances(connected.landlord)["cash_in_transit"] == RENT


def test_a_payout_that_failed_before_it_was_paid_posts_nothing(connected, paid, deliver):
    deliver(payout_event("failed"))
    assert Payout.objects.get().posting is None
    assert "bank" not in balances(connected.landlord)


def test_a_payout_of_an_unknown_account_is_unmatched(connected, deliver):
    event = payout_event("paid", account=None)
    deliver(event)
    assert StripeEvent.objects.get(event_id=event["id"]).status == EventStatus.UNMATCHED
    assert not Payout.objects.exists()
