"""A payment attempt whose Stripe call never got through, taken over later: by then the
tenant may have paid another way, and the stale attempt must not charge them again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import stripe

from dunning.models import DunningStep, StepStatus
from dunning.services import STUCK_AFTER, dunning_tick
from payments import services as payment_services
from payments import stripe_client
from payments.models import Method, Payment, PaymentStatus
from tests.dunning.factories import BERLIN, autopay_on, other_landlord_world, renters
from tests.payments.helpers import books_ok

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def _renter_on_autopay(landlord, other_landlord):
    """Landlord A's one Berlin renter, autopay on, due on the 5th; landlord B alongside."""
    other_landlord_world(other_landlord)
    (renter,) = renters(landlord, BERLIN)
    autopay_on(renter)
    return renter


def _first_attempt_never_reaches_stripe(fake_stripe, monkeypatch, renter, now):
    real = fake_stripe.payment_intent_create

    def unreachable(**kwargs):
        raise stripe.APIConnectionError("Stripe could not be reached")

    monkeypatch.setattr(stripe_client, "payment_intent_create", unreachable)
    result = dunning_tick(now=now)
    monkeypatch.setattr(stripe_client, "payment_intent_create", real)
    assert result.counts.get("error") == 1
    step = DunningStep.objects.get(invoice=renter.invoice, key="autopay#1")
    assert step.status == StepStatus.PENDING
    return step


@pytest.mark.django_db
def test_a_stuck_autopay_attempt_waits_for_a_bank_debit_the_tenant_started_meanwhile(
    landlord, other_landlord, fake_stripe, monkeypatch, time_machine
):
    renter = _renter_on_autopay(landlord, other_landlord)
    now = NOW
    time_machine.move_to(now, tick=False)
    _first_attempt_never_reaches_stripe(fake_stripe, monkeypatch, renter, now)
    # The tenant pays the invoice from the portal by SEPA debit: days in `processing`.
    fake_stripe.confirm_status = "processing"
    debit, _secret = payment_services.payment_intent_create(
        landlord=landlord,
        tenant=renter.tenant,
        amount_minor=renter.invoice.total_minor,
        currency=renter.invoice.currency,
        idempotency_key="portal-sepa",
        invoice=renter.invoice,
        method=Method.SEPA_DEBIT,
        payment_method_id="pm_sepa_ok",
        confirm=True,
    )
    assert debit.status == PaymentStatus.PROCESSING
    fake_stripe.confirm_status = "succeeded"

    later = now + STUCK_AFTER + timedelta(minutes=1)
    time_machine.move_to(later, tick=False)
    dunning_tick(now=later)

    autopay = Payment.objects.get(idempotency_key=f"autopay:{renter.invoice.pk}:1")
    assert autopay.status == PaymentStatus.REQUIRES_PAYMENT  # not charged on top of the debit
    assert fake_stripe.keys("payment_intent_create") == [f"payment:{debit.pk}:intent"]
    books_ok(landlord)


@pytest.mark.django_db
def test_a_stuck_autopay_attempt_does_not_charge_its_old_amount_after_a_part_payment(
    landlord, other_landlord, fake_stripe, monkeypatch, time_machine
):
    renter = _renter_on_autopay(landlord, other_landlord)
    now = NOW
    time_machine.move_to(now, tick=False)
    step = _first_attempt_never_reaches_stripe(fake_stripe, monkeypatch, renter, now)
    # Staff record a cheque for most of the rent while the attempt is stuck.
    payment_services.manual_payment_record(
        landlord=landlord,
        tenant=renter.tenant,
        amount_minor=renter.invoice.total_minor - 10_000,
        currency=renter.invoice.currency,
        method=Method.CHEQUE,
        reference="cheque 17",
        received_on=now.date(),
        actor=None,
        invoice=renter.invoice,
    )

    later = now + STUCK_AFTER + timedelta(minutes=1)
    time_machine.move_to(later, tick=False)
    dunning_tick(now=later)

    # The stale attempt would charge the whole rent again; the tenant owes 100.00.
    assert fake_stripe.keys("payment_intent_create") == []
    step.refresh_from_db()
    assert step.status != StepStatus.PENDING
    books_ok(landlord)


@pytest.mark.django_db
def test_a_stuck_attempt_on_an_invoice_replaced_since_neither_blocks_nor_charges_the_old_rent(
    landlord, other_landlord, owner, fake_stripe, monkeypatch, time_machine
):
    from datetime import date

    from invoices import services as invoice_services

    renter = _renter_on_autopay(landlord, other_landlord)
    now = NOW
    time_machine.move_to(now, tick=False)
    step = _first_attempt_never_reaches_stripe(fake_stripe, monkeypatch, renter, now)
    # An hour later the landlord records that the tenant leaves on the 16th.
    time_machine.move_to(now + timedelta(minutes=10), tick=False)
    (replacement,) = invoice_services.lease_end_and_rebill(
        landlord=landlord,
        lease=renter.invoice.lease,
        end_date=date(2026, 12, 16),
        reason="Moved out",
        actor=owner,
    ).replacements

    later = now + STUCK_AFTER + timedelta(minutes=1)
    time_machine.move_to(later, tick=False)
    result = dunning_tick(now=later)

    assert "error" not in result.counts, result.counts
    # The void invoice's whole rent is not charged.
    assert fake_stripe.keys("payment_intent_create") == []
    step.refresh_from_db()
    assert step.status == StepStatus.SKIPPED
    # The replacement's dunning goes on (its notices are not blocked by the old claim).
    later = later + timedelta(days=2)
    time_machine.move_to(later, tick=False)
    result = dunning_tick(now=later)
    assert "error" not in result.counts, result.counts
    assert DunningStep.objects.filter(invoice=replacement).exists()
    books_ok(landlord)
