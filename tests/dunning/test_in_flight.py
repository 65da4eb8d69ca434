"""Work that must wait for money already on its way, and days that are not back-charged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.utils import timezone

from dunning.models import DunningStep, StepStatus
from dunning.services import dunning_tick
from invoices.models import Invoice
from tests.dunning.factories import BERLIN, DUE, daily, policy, renters, walk


def test_no_fee_or_notice_while_another_ticks_autopay_charge_is_under_way(
    landlord, other_landlord, time_machine
):
    (renter,) = renters(landlord, BERLIN)
    walk(time_machine, daily(DUE - timedelta(days=3), DUE + timedelta(days=4), at=(9,)))
    taken = set(DunningStep.objects.filter(invoice=renter.invoice).values_list("key", flat=True))
    # Another worker claimed a payment attempt a minute ago and is calling Stripe.
    time_machine.move_to(datetime(2026, 12, 11, 8, 59, tzinfo=UTC), tick=False)
    DunningStep.objects.create(
        landlord=landlord,
        invoice=renter.invoice,
        tenant=renter.tenant,
        key="retry#2",
        action="retry",
        attempt=2,
        scheduled_on=DUE + timedelta(days=5),
        status=StepStatus.PENDING,
    )
    time_machine.move_to(datetime(2026, 12, 11, 9, 0, tzinfo=UTC), tick=False)

    result = dunning_tick(now=timezone.now())

    assert result.counts.get("waiting")
    keys = set(DunningStep.objects.filter(invoice=renter.invoice).values_list("key", flat=True))
    assert keys == taken | {"retry#2"}  # late_fee+5 waits for the charge's outcome
    assert not Invoice.objects.filter(adjusts=renter.invoice).exists()


def test_daily_fees_are_charged_on_the_day_not_back_charged_for_missed_days(
    landlord, other_landlord, time_machine
):
    (renter,) = renters(landlord, BERLIN)
    policy(landlord, daily_fee_minor=500, daily_fee_cap_minor=10_000, max_fee_minor=0)
    late_fee_day = DUE + timedelta(days=5)
    # Ticks on the late-fee day, then nothing for three days, then two days.
    ticks = daily(late_fee_day, late_fee_day, at=(9,))
    ticks += daily(late_fee_day + timedelta(days=4), late_fee_day + timedelta(days=5), at=(9,))
    walk(time_machine, ticks)

    fees = Invoice.objects.filter(adjusts=renter.invoice).order_by("issue_date")
    assert [(f.issue_date, f.subtotal_minor) for f in fees] == [
        (late_fee_day, 2_500),
        (late_fee_day + timedelta(days=4), 500),
        (late_fee_day + timedelta(days=5), 500),
    ]
