"""Ticks that run at the same time (two beat workers, a re-delivered task) against
PostgreSQL, and a worker killed in the middle of a payment attempt."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from dunning.models import DunningPolicy, DunningStep, StepStatus
from dunning.services import STUCK_AFTER, dunning_tick
from invoices.models import Invoice, Notification
from invoices.selectors import invoice_balances
from payments import services as payment_services
from payments.models import Payment, PaymentStatus
from tests.dunning.factories import (
    BERLIN,
    DUE,
    LOS_ANGELES,
    autopay_on,
    fee_invoices,
    renters,
)
from tests.payments.helpers import books_ok, payment_transactions


def run_at_once(target, n: int = 2) -> list:
    """Run `target()` in n threads, each on its own database connection, released
    together by a barrier; returns their results (re-raises the first error)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = target()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_two_ticks_at_once_take_every_step_once(landlord, other_landlord):
    people = renters(landlord, BERLIN, LOS_ANGELES, BERLIN, LOS_ANGELES)
    assert not DunningPolicy.objects.exists()  # both ticks race to create the default
    totals: Counter = Counter()
    # Day +5 first (reminder, due and +1 notices fall due at once: latest sent, the
    # rest superseded; the late fee), then day +7 for both zones.
    for now in (
        datetime(2026, 12, 11, 9, 0, tzinfo=UTC),
        datetime(2026, 12, 11, 18, 0, tzinfo=UTC),
        datetime(2026, 12, 13, 9, 0, tzinfo=UTC),
        datetime(2026, 12, 13, 18, 0, tzinfo=UTC),
    ):
        for result in run_at_once(lambda now=now: dunning_tick(now=now, landlord=landlord), n=3):
            assert "error" not in result.counts, result.counts
            totals.update(result.counts)

    assert DunningPolicy.objects.filter(landlord=landlord, is_default=True).count() == 1
    assert totals["taken"] > 0  # the ticks did collide on claims
    for person in people:
        steps = DunningStep.objects.filter(invoice=person.invoice)
        assert sorted(s.key for s in steps) == [
            "due_notice+0",
            "late_fee+5",
            "overdue_notice+1",
            "overdue_notice+7",
            "reminder-3",
        ]
        assert len(fee_invoices(person.invoice)) == 1
        rows = Notification.objects.filter(invoice=person.invoice, kind__startswith="dunning")
        assert sorted(rows.values_list("kind", "channel")) == [
            ("dunning_late_fee", "email"),
            ("dunning_overdue_notice", "email"),
            ("dunning_overdue_notice", "email"),
            ("dunning_overdue_notice", "sms"),
        ]
    assert Invoice.objects.filter(landlord=landlord, kind="late_fee").count() == len(people)
    books_ok(landlord)


def _crash_after_stripe(monkeypatch):
    """The worker dies after Stripe took the charge, before our database knew."""

    def killed(**kwargs):
        raise SystemExit("worker killed")

    monkeypatch.setattr(payment_services, "_apply_payment_intent", killed)


@pytest.mark.django_db
def test_a_payment_attempt_left_pending_is_taken_over_with_the_same_attempt(
    landlord, other_landlord, fake_stripe, monkeypatch, time_machine
):
    (renter,) = renters(landlord, BERLIN)
    autopay_on(renter)
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    time_machine.move_to(now, tick=False)
    with monkeypatch.context() as patch:
        _crash_after_stripe(patch)
        with pytest.raises(SystemExit):
            dunning_tick(now=now)
    step = DunningStep.objects.get(invoice=renter.invoice, key="autopay#1")
    assert (step.status, step.attempt) == (StepStatus.PENDING, 1)
    payment = Payment.objects.get(idempotency_key=f"autopay:{renter.invoice.pk}:1")
    assert payment.status == PaymentStatus.REQUIRES_PAYMENT
    assert len(fake_stripe.intents) == 1  # Stripe charged

    # Not yet stuck: another tick leaves it alone.
    later = now + STUCK_AFTER - timedelta(minutes=1)
    time_machine.move_to(later, tick=False)
    dunning_tick(now=later)
    assert len(fake_stripe.keys("payment_intent_create")) == 1

    later = now + STUCK_AFTER + timedelta(minutes=1)
    time_machine.move_to(later, tick=False)
    result = dunning_tick(now=later)
    assert result.counts.get("succeeded") == 1
    step.refresh_from_db()
    assert (step.status, step.outcome, step.payment_id) == (
        StepStatus.DONE,
        "succeeded",
        payment.pk,
    )
    key = f"autopay:{renter.invoice.pk}:1"
    assert fake_stripe.keys("payment_intent_create") == [key, key]  # same attempt, same key
    assert len(fake_stripe.intents) == 1  # Stripe answered the first charge: no second
    assert Payment.objects.filter(tenant=renter.tenant).count() == 1
    assert len(payment_transactions(payment)) == 1
    assert invoice_balances(landlord=landlord, invoices=[renter.invoice])[renter.invoice.pk] == 0
    books_ok(landlord)


@pytest.mark.django_db(transaction=True)
def test_two_ticks_taking_over_a_stuck_attempt_charge_once(landlord, other_landlord, fake_stripe):
    (renter,) = renters(landlord, BERLIN)
    autopay_on(renter)
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    stuck = DunningStep.objects.create(
        landlord=landlord,
        invoice=renter.invoice,
        tenant=renter.tenant,
        key="autopay#1",
        action="autopay",
        scheduled_on=DUE,
        status=StepStatus.PENDING,
        attempt=1,
    )
    DunningStep.objects.filter(pk=stuck.pk).update(
        created_at=now - STUCK_AFTER * 2, updated_at=now - STUCK_AFTER * 2
    )
    calls = []
    real = payment_services.autopay_charge

    def counting(**kwargs):
        calls.append(kwargs["attempt"])
        return real(**kwargs)

    import dunning.services as engine

    engine_autopay = engine.autopay_charge
    engine.autopay_charge = counting
    try:
        run_at_once(lambda: dunning_tick(now=now, landlord=landlord), n=3)
    finally:
        engine.autopay_charge = engine_autopay
    assert calls == [1]
    stuck.refresh_from_db()
    assert (stuck.status, stuck.outcome) == (StepStatus.DONE, "succeeded")
    assert len(fake_stripe.keys("payment_intent_create")) == 1
    books_ok(landlord)
