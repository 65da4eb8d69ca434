"""A bank debit in flight: dunning waits instead of chasing a tenant who has paid, and
picks up where it should if the bank returns the debit."""

from __future__ import annotations

from datetime import timedelta

from dunning.models import DunningStep, StepStatus
from invoices.models import Invoice
from payments.models import Method, Payment, PaymentStatus, Source
from tests.dunning.factories import BERLIN, DUE, daily, renters, walk


def _debit_in_flight(renter) -> Payment:
    return Payment.objects.create(
        landlord=renter.invoice.landlord,
        tenant=renter.tenant,
        invoice=renter.invoice,
        amount_minor=renter.invoice.total_minor,
        currency=renter.invoice.currency,
        method=Method.SEPA_DEBIT,
        source=Source.STRIPE,
        status=PaymentStatus.PROCESSING,
        idempotency_key="portal-sepa-1",
        stripe_payment_intent_id="pi_sepa_in_flight",
    )


def test_steps_wait_while_a_debit_processes_and_resume_when_it_fails(
    landlord, other_landlord, time_machine
):
    (renter,) = renters(landlord, BERLIN)
    walk(time_machine, daily(DUE - timedelta(days=3), DUE, at=(9,)))
    debit = _debit_in_flight(renter)

    counts = walk(time_machine, daily(DUE + timedelta(days=1), DUE + timedelta(days=9), at=(9,)))

    keys = set(DunningStep.objects.filter(invoice=renter.invoice).values_list("key", flat=True))
    assert keys == {"reminder-3", "due_notice+0"}  # nothing after the debit was submitted
    assert counts["waiting"] > 0
    assert not Invoice.objects.filter(adjusts=renter.invoice).exists()  # no late fee

    # The bank returns the debit on day 9: the next tick takes what is due, once.
    Payment.objects.filter(pk=debit.pk).update(
        status=PaymentStatus.FAILED, failure_code="insufficient_funds"
    )
    walk(time_machine, daily(DUE + timedelta(days=10), DUE + timedelta(days=10), at=(9, 12)))

    steps = {s.key: s.status for s in DunningStep.objects.filter(invoice=renter.invoice)}
    assert steps["overdue_notice+7"] == StepStatus.DONE
    assert steps["overdue_notice+1"] == StepStatus.SKIPPED  # superseded, not sent late
    assert steps["late_fee+5"] == StepStatus.DONE
    assert Invoice.objects.filter(adjusts=renter.invoice).count() == 1
