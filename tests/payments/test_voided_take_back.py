"""Taking money back (refunds, chargebacks) from a card payment that paid invoices voided
since, here by a lease ended after billing (decision 0017): the void stays at zero, the
replacement the credit paid is owed again, two partial refunds end where one full refund
does, and nothing is taken back twice."""

import time
from datetime import UTC, date, datetime

import pytest

from invoices import services as invoice_services
from ledger.selectors import trial_balance
from payments import services
from payments.models import Method
from tests.payments import stripe_objects as so
from tests.payments.helpers import balance_of, books_ok, pi_event, start

pytestmark = pytest.mark.django_db
RENT = 120_000


@pytest.fixture(autouse=True)
def _today(time_machine):
    time_machine.move_to(datetime(2026, 12, 7, 12, tzinfo=UTC), tick=False)


def refunded(payment, refunds):
    charge = so.charge(
        id=payment.stripe_charge_id,
        amount=payment.amount_minor,
        payment_intent=payment.stripe_payment_intent_id,
        refunds=refunds,
    )
    return so.event("charge.refunded", charge)


def _setup(world, deliver):
    """A card payment of 2,400.00 pays November then December; the lease is ended
    on 16 November: November is voided and replaced (15 days), December is voided with
    nothing left. The credit left after the replacement is paid back."""
    payment = start(world, 2 * RENT)
    deliver(pi_event(payment, "succeeded", created=int(time.time()) - 600))
    payment.refresh_from_db()
    ended = invoice_services.lease_end_and_rebill(
        landlord=world.landlord,
        lease=world.lease,
        end_date=date(2026, 11, 16),
        reason="Moved out",
        actor=None,
    )
    (replacement,) = ended.replacements
    assert {i.pk for i in ended.voided} == {world.november.pk, world.december.pk}
    assert balance_of(world.landlord, replacement) == 0  # paid from November's credit
    held = services.tenant_credit_balance(
        landlord=world.landlord, tenant=world.tenant, currency="EUR"
    )
    services.tenant_credit_pay_back(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=held,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="",
        paid_on=date(2026, 12, 7),
        actor=None,
        idempotency_key="payback",
    )
    return payment, replacement


def test_one_full_refund_reopens_the_replacement(world, deliver):
    payment, replacement = _setup(world, deliver)
    deliver(
        refunded(
            payment, [so.refund(charge_id=payment.stripe_charge_id, amount=2 * RENT, id="re_all")]
        )
    )
    assert balance_of(world.landlord, replacement) == replacement.total_minor
    books_ok(world.landlord)


def test_two_half_refunds_reopen_the_replacement_as_one_full_refund_does(world, deliver):
    payment, replacement = _setup(world, deliver)
    charge = payment.stripe_charge_id
    first = so.refund(charge_id=charge, amount=RENT, id="re_1")
    second = so.refund(charge_id=charge, amount=RENT, id="re_2")
    deliver(refunded(payment, [first]))
    deliver(refunded(payment, [second, first]))
    assert trial_balance(landlord=world.landlord).is_balanced
    # The whole payment is taken back: November's part came from the credit that paid
    # the replacement, so the replacement is owed again, as with one full refund.
    assert balance_of(world.landlord, replacement) == replacement.total_minor


def dispute(payment, status, amount):
    obj = so.dispute(
        charge_id=payment.stripe_charge_id,
        payment_intent=payment.stripe_payment_intent_id,
        amount=amount,
        status=status,
        balance_transactions=None,
    )
    return so.event("charge.dispute.created", obj)


def test_a_fully_refunded_payment_has_nothing_left_to_take_back(world, deliver):
    from payments.models import Dispute
    from payments.services import _unwind_buckets

    payment, _replacement = _setup(world, deliver)
    charge = payment.stripe_charge_id
    first = so.refund(charge_id=charge, amount=RENT, id="re_1")
    second = so.refund(charge_id=charge, amount=RENT, id="re_2")
    deliver(refunded(payment, [first]))
    deliver(refunded(payment, [second, first]))
    payment.refresh_from_db()
    left = sum(b.remaining for b in _unwind_buckets(payment))
    # A chargeback on the refunded charge (cardholders do dispute refunded charges)
    # must not take the money from the tenant a second time.
    deliver(dispute(payment, "needs_response", 2 * RENT))
    held = Dispute.objects.filter(payment=payment, hold_id__isnull=False).exists()
    assert (left, held) == (0, False)


def test_control_without_a_void_the_same_dispute_takes_nothing(world, deliver):
    from payments.models import Dispute

    payment = start(world, 2 * RENT)
    deliver(pi_event(payment, "succeeded", created=int(time.time()) - 600))
    payment.refresh_from_db()
    charge = payment.stripe_charge_id
    first = so.refund(charge_id=charge, amount=RENT, id="re_1")
    second = so.refund(charge_id=charge, amount=RENT, id="re_2")
    deliver(refunded(payment, [first]))
    deliver(refunded(payment, [second, first]))
    deliver(dispute(payment, "needs_response", 2 * RENT))
    assert not Dispute.objects.filter(payment=payment, hold_id__isnull=False).exists()


def test_no_pay_back_of_credit_a_won_dispute_left_beside_an_unassigned_debt(world, deliver):
    """No void needed: 3 x rent pays November, December and (as credit) January. A
    chargeback takes it all back (January's share from the receivable without an
    invoice, as spent credit is); the dispute is won and the money comes back, the
    spent part as credit. The tenant's balance is settled (0): that credit is not paid
    out, or the tenant would owe 1,200.00 with nothing to show for it."""
    from django.core.exceptions import ValidationError

    from ledger.selectors import tenant_balance
    from tests.payments.conftest import bill

    payment = start(world, 3 * RENT)
    deliver(pi_event(payment, "succeeded", created=int(time.time()) - 600))
    payment.refresh_from_db()
    (january,) = bill(world.landlord, date(2027, 1, 1))
    services.tenant_credit_apply(landlord=world.landlord, tenant=world.tenant)
    assert balance_of(world.landlord, january) == 0
    deliver(dispute(payment, "needs_response", 3 * RENT))
    deliver(dispute(payment, "won", 3 * RENT))
    assert tenant_balance(landlord=world.landlord, tenant=world.tenant) == {"EUR": 0}
    offered = services.tenant_credit_balance(
        landlord=world.landlord, tenant=world.tenant, currency="EUR"
    )
    with pytest.raises(ValidationError):
        services.tenant_credit_pay_back(
            landlord=world.landlord,
            tenant=world.tenant,
            amount_minor=offered,
            currency="EUR",
            method=Method.BANK_TRANSFER,
            reference="",
            paid_on=date(2026, 12, 7),
            actor=None,
            idempotency_key="x",
        )
