"""The dunning engine over 45 days of clock, moved hour by hour on the days that
matter: every notice, fee and payment attempt once, on the tenant's local day, inside
the sending window, and nothing after the invoice is settled, paused or disputed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dunning import services
from dunning.models import DunningStep, StepStatus, TenantDunning
from invoices.models import Channel, Invoice, InvoiceState, Notification, NotificationStatus
from invoices.selectors import invoice_balances
from invoices.services import invoice_void
from ledger.models import LedgerTransaction
from ledger.selectors import trial_balance
from payments.models import Dispute, DisputeStatus, Method, Payment
from payments.services import manual_payment_record
from tests.dunning.factories import (
    BERLIN,
    DUE,
    LOS_ANGELES,
    RENT,
    RecordingSmsBackend,
    autopay_on,
    daily,
    fee_invoices,
    hours,
    keys,
    notices,
    other_landlord_world,
    policy,
    renters,
    walk,
)
from tests.payments.helpers import books_ok

pytestmark = pytest.mark.django_db

POLICY_KEYS = [
    "due_notice+0",
    "escalate+21",
    "final_notice+14",
    "late_fee+5",
    "overdue_notice+1",
    "overdue_notice+7",
    "reminder-3",
]
FIRST, LAST = date(2026, 11, 30), date(2027, 1, 14)  # 45 days around the due date


def _hourly_on_step_days() -> list[datetime]:
    """Every hour of each step's day, through to 08:00 UTC of the next (where Los
    Angeles' local day ends); one tick in each tenant's window on the other days."""
    step_days = {DUE + timedelta(days=d) for d in (-3, 0, 1, 5, 7, 14, 21)}
    ticks = daily(FIRST, LAST, at=(12, 17))
    for day in step_days:
        start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        ticks += list(hours(start, start + timedelta(hours=32)))
    return ticks


def assert_in_window(renter, rows, *, at_hour: int | None = None):
    for row in rows:
        local = row.created_at.astimezone(renter.tz)
        assert 8 <= local.hour < 20, (row.kind, local)
        if at_hour is not None:
            assert local.hour == at_hour, (row.kind, local)


def test_45_days_every_step_once_on_the_tenants_local_day_inside_the_window(
    landlord, other_landlord, time_machine
):
    berlin, la = renters(landlord, BERLIN, LOS_ANGELES)
    other_invoice = other_landlord_world(other_landlord)
    walk(time_machine, _hourly_on_step_days(), landlord=landlord)

    for renter in (berlin, la):
        invoice = renter.invoice
        assert keys(invoice) == POLICY_KEYS
        for s in DunningStep.objects.filter(invoice=invoice):
            offset = int(s.key.split("+")[-1].split("-")[-1]) * (-1 if "-" in s.key else 1)
            assert s.scheduled_on == DUE + timedelta(days=offset)
            assert s.status == StepStatus.DONE, (s.key, s.detail)
            # Taken on its local day, at the first tick of the window (08:00 local).
            local = s.created_at.astimezone(renter.tz)
            assert (local.date(), local.hour) == (s.scheduled_on, 8), (s.key, local)
        rows = list(notices(invoice))
        assert [(n.kind, n.channel) for n in rows] == [
            ("dunning_reminder", Channel.EMAIL),
            ("dunning_due_notice", Channel.EMAIL),
            ("dunning_overdue_notice", Channel.EMAIL),  # email_then_sms: email first
            ("dunning_late_fee", Channel.EMAIL),
            ("dunning_overdue_notice", Channel.EMAIL),
            ("dunning_overdue_notice", Channel.SMS),
            ("dunning_final_notice", Channel.EMAIL),
            ("dunning_final_notice", Channel.SMS),
        ]
        assert_in_window(renter, rows, at_hour=8)
        assert len({n.dedupe_key for n in rows}) == len(rows)
        (fee,) = fee_invoices(invoice)
        assert (fee.total_minor, fee.issue_date) == (2_500, DUE + timedelta(days=5))
        state = TenantDunning.objects.get(tenant=renter.tenant)
        assert state.escalated_at.astimezone(renter.tz).date() == DUE + timedelta(days=21)

    # The Los Angeles tenant's steps come nine hours after the Berlin tenant's.
    first_b = DunningStep.objects.get(invoice=berlin.invoice, key="reminder-3").created_at
    first_la = DunningStep.objects.get(invoice=la.invoice, key="reminder-3").created_at
    assert first_la - first_b == timedelta(hours=9)
    assert not DunningStep.objects.filter(landlord=other_landlord).exists()
    assert not DunningStep.objects.filter(invoice=other_invoice).exists()
    books_ok(landlord)


def test_a_payment_on_day_6_stops_every_later_step(landlord, other_landlord, time_machine):
    (renter,) = renters(landlord, BERLIN)
    policy(landlord, daily_fee_minor=500, daily_fee_cap_minor=5_000, max_fee_minor=10_000)
    walk(time_machine, daily(date(2026, 12, 1), DUE + timedelta(days=6), at=(7, 12)))
    fees = list(fee_invoices(renter.invoice))
    assert [f.total_minor for f in fees] == [2_500, 500]  # late fee (+5), daily fee (+6)
    manual_payment_record(
        landlord=landlord,
        tenant=renter.tenant,
        amount_minor=RENT + 3_000,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="SEPA in",
        received_on=DUE + timedelta(days=6),
        actor=None,
    )
    taken = keys(renter.invoice)
    assert invoice_balances(landlord=landlord, invoices=[renter.invoice])[renter.invoice.pk] == 0
    walk(time_machine, daily(DUE + timedelta(days=6), DUE + timedelta(days=23), at=(7, 19)))
    assert keys(renter.invoice) == taken
    assert "overdue_notice+7" not in taken and "daily_fee@2026-12-12" in taken
    assert len(fee_invoices(renter.invoice)) == 2
    books_ok(landlord)


def test_a_hard_decline_asks_once_for_a_new_method_and_never_retries(
    landlord, other_landlord, time_machine, fake_stripe
):
    (renter,) = renters(landlord, BERLIN)
    autopay_on(renter)
    fake_stripe.decline = {"decline_code": "stolen_card", "message": "Your card was declined."}
    walk(time_machine, daily(DUE - timedelta(days=1), DUE + timedelta(days=9), at=(7, 12)))
    attempts = DunningStep.objects.filter(invoice=renter.invoice, action__in=["autopay", "retry"])
    assert [(s.key, s.scheduled_on, s.outcome) for s in attempts] == [
        ("autopay#1", DUE, "declined")
    ]
    (update,) = DunningStep.objects.filter(invoice=renter.invoice, key__startswith="update_")
    assert update.key == "update_method#1"
    (notice,) = notices(renter.invoice).filter(kind="dunning_update_method")
    assert "(declined by the bank)" in notice.body and "/portal/cards/" in notice.body
    assert "stolen" not in notice.body  # Stripe: do not tell the payer about fraud codes
    assert not notices(renter.invoice).filter(kind="dunning_payment_failed").exists()
    assert len(fake_stripe.keys("payment_intent_create")) == 1
    assert_in_window(renter, [notice])


def test_a_soft_decline_is_announced_and_retried_on_the_scheduled_day(
    landlord, other_landlord, time_machine, fake_stripe
):
    (renter,) = renters(landlord, LOS_ANGELES)
    autopay_on(renter)
    fake_stripe.decline = {"decline_code": "insufficient_funds"}
    start = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)  # 00:00 on the 6th in Los Angeles
    walk(time_machine, hours(start, start + timedelta(hours=30)))
    (attempt,) = DunningStep.objects.filter(invoice=renter.invoice, action="autopay")
    local = attempt.created_at.astimezone(renter.tz)
    assert (local.date(), local.hour) == (DUE, 8)  # 08:00 on the due day, Los Angeles time
    (failed,) = notices(renter.invoice).filter(kind="dunning_payment_failed")
    assert "insufficient funds" in failed.body and "7 Dec 2026" in failed.body
    assert_in_window(renter, [failed])
    assert not DunningStep.objects.filter(invoice=renter.invoice, action="retry").exists()

    fake_stripe.decline = None  # the tenant topped up the account
    walk(time_machine, hours(start + timedelta(hours=31), start + timedelta(hours=56)))
    walk(time_machine, daily(DUE + timedelta(days=3), DUE + timedelta(days=12), at=(17,)))
    (retry,) = DunningStep.objects.filter(invoice=renter.invoice, action="retry")
    assert (retry.key, retry.scheduled_on, retry.outcome) == (
        "retry#2",
        DUE + timedelta(1),
        "succeeded",
    )
    local = retry.created_at.astimezone(renter.tz)
    assert (local.date(), local.hour) == (DUE + timedelta(days=1), 8)
    assert fake_stripe.keys("payment_intent_create") == [
        f"autopay:{renter.invoice.pk}:1",
        f"autopay:{renter.invoice.pk}:2",
    ]
    # Paid by the retry: nothing after it (no overdue notice that morning, no fee).
    assert keys(renter.invoice) == [
        "autopay#1",
        "due_notice+0",
        "payment_failed#1",
        "reminder-3",  # superseded: the walk starts on the due day
        "retry#2",
    ]
    assert not notices(renter.invoice).filter(kind="dunning_overdue_notice").exists()
    assert not fee_invoices(renter.invoice).exists()
    books_ok(landlord)


def test_daily_fees_stop_at_their_cap_and_all_fees_at_the_legal_maximum(
    landlord, other_landlord, time_machine
):
    berlin, la = renters(landlord, BERLIN, LOS_ANGELES)
    policy(
        landlord,
        fee_flat_minor=2_500,
        daily_fee_minor=1_000,
        daily_fee_cap_minor=4_000,
        max_fee_minor=6_000,
    )
    walk(time_machine, daily(DUE + timedelta(days=4), DUE + timedelta(days=14), at=(7, 17)))
    for renter in (berlin, la):
        fees = list(fee_invoices(renter.invoice))
        # 25.00 flat, then 10.00 a day: 10 + 10 + 10 and 5 (the legal maximum), then none.
        assert [f.subtotal_minor for f in fees] == [2_500, 1_000, 1_000, 1_000, 500]
        assert [f.issue_date for f in fees] == [DUE + timedelta(days=d) for d in (5, 6, 7, 8, 9)]
        assert sum(f.subtotal_minor for f in fees) == 6_000
        skipped = DunningStep.objects.filter(
            invoice=renter.invoice, action="daily_fee", status=StepStatus.SKIPPED
        )
        assert skipped.exists()
        assert {s.detail for s in skipped} == {
            "Late fees on this invoice reached the legal maximum"
        }
    books_ok(landlord)


def test_daily_fees_never_pass_their_own_cap(landlord, other_landlord, time_machine):
    (renter,) = renters(landlord, BERLIN)
    policy(landlord, daily_fee_minor=700, daily_fee_cap_minor=2_000, max_fee_minor=0)
    walk(time_machine, daily(DUE + timedelta(days=5), DUE + timedelta(days=12), at=(9,)))
    daily_fees = [f.subtotal_minor for f in fee_invoices(renter.invoice)][1:]
    assert daily_fees == [700, 700, 600]


def test_a_paused_tenant_has_every_due_step_recorded_as_skipped_with_the_reason(
    landlord, other_landlord, time_machine
):
    (renter,) = renters(landlord, BERLIN)
    services.tenant_pause(landlord=landlord, tenant=renter.tenant, reason="Payment plan agreed")
    walk(time_machine, daily(date(2026, 12, 1), DUE + timedelta(days=22), at=(9,)))
    steps = DunningStep.objects.filter(invoice=renter.invoice)
    assert sorted(s.key for s in steps) == POLICY_KEYS
    assert {(s.status, s.detail) for s in steps} == {
        (StepStatus.SKIPPED, "Dunning paused: Payment plan agreed")
    }
    assert not notices(renter.invoice).exists()
    assert not fee_invoices(renter.invoice).exists()
    assert TenantDunning.objects.get(tenant=renter.tenant).escalated_at is None


def test_an_open_dispute_skips_the_steps(landlord, other_landlord, time_machine):
    (renter,) = renters(landlord, BERLIN)
    time_machine.move_to(datetime(2026, 12, 2, 9, tzinfo=UTC), tick=False)
    payment = manual_payment_record(
        landlord=landlord,
        tenant=renter.tenant,
        amount_minor=20_000,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="part",
        received_on=date(2026, 12, 2),
        actor=None,
    )
    Dispute.objects.create(
        landlord=landlord,
        payment=payment,
        stripe_dispute_id="dp_test_1",
        amount_minor=20_000,
        currency="EUR",
        status=DisputeStatus.NEEDS_RESPONSE,
    )
    walk(time_machine, daily(date(2026, 12, 2), DUE + timedelta(days=8), at=(7, 12)))
    steps = DunningStep.objects.filter(invoice=renter.invoice)
    assert steps.count() == 5
    assert {s.detail for s in steps} == {"A payment on this invoice is disputed"}
    assert not notices(renter.invoice).exists() and not fee_invoices(renter.invoice).exists()


def test_a_void_invoice_gets_nothing(landlord, other_landlord, time_machine):
    berlin, la = renters(landlord, BERLIN, LOS_ANGELES)
    invoice_void(invoice=berlin.invoice, reason="Issued in error", actor=None)
    walk(time_machine, daily(date(2026, 12, 1), DUE + timedelta(days=22), at=(7, 17)))
    assert not DunningStep.objects.filter(invoice=berlin.invoice).exists()
    assert not Notification.objects.filter(
        tenant=berlin.tenant, kind__startswith="dunning"
    ).exists()
    assert keys(la.invoice) == POLICY_KEYS


def test_an_invoice_voided_mid_way_stops(landlord, other_landlord, time_machine):
    (renter,) = renters(landlord, BERLIN)
    walk(time_machine, daily(date(2026, 12, 1), DUE + timedelta(days=2), at=(7, 12)))
    invoice_void(invoice=renter.invoice, reason="Tenant moved out", actor=None)
    walk(time_machine, daily(DUE + timedelta(days=3), DUE + timedelta(days=22), at=(9,)))
    assert keys(renter.invoice) == ["due_notice+0", "overdue_notice+1", "reminder-3"]


def _bounced_overdue_email(renter, time_machine, django_capture_on_commit_callbacks):
    # Day +1 overdue notice (email, then SMS) goes out at 08:00 local.
    with django_capture_on_commit_callbacks(execute=True):
        walk(time_machine, daily(DUE, DUE + timedelta(days=1), at=(7, 12, 17, 23)))
    return notices(renter.invoice).get(kind="dunning_overdue_notice", channel=Channel.EMAIL)


def test_a_bounced_email_falls_back_to_one_sms_inside_the_window(
    landlord, other_landlord, time_machine, django_capture_on_commit_callbacks, mailoutbox
):
    (renter,) = renters(landlord, BERLIN)
    email = _bounced_overdue_email(renter, time_machine, django_capture_on_commit_callbacks)
    assert email.status == NotificationStatus.SENT
    # The bounce report arrives at 21:30 local: outside the window, so the SMS waits.
    bounce_at = datetime(2026, 12, 7, 20, 30, tzinfo=UTC)
    time_machine.move_to(bounce_at, tick=False)
    services.notification_bounce_record(notification=email, reason="550 mailbox unknown")
    with django_capture_on_commit_callbacks(execute=True):
        walk(time_machine, hours(bounce_at, bounce_at + timedelta(hours=14)))
        walk(time_machine, daily(date(2026, 12, 9), date(2026, 12, 11), at=(7, 12)))
    (sms,) = notices(renter.invoice).filter(channel=Channel.SMS, kind="dunning_overdue_notice")
    assert sms.dedupe_key == email.dedupe_key.replace(":email", ":sms")
    assert sms.status == NotificationStatus.SENT
    local = sms.created_at.astimezone(renter.tz)
    assert (local.date(), local.hour) == (date(2026, 12, 8), 8)
    assert [to for to, _body in RecordingSmsBackend.sent] == [renter.tenant.phone]
    assert "overdue" in RecordingSmsBackend.sent[0][1]
    detail = DunningStep.objects.get(invoice=renter.invoice, key="overdue_notice+1").detail
    assert "email failed" in detail


def test_a_failing_email_falls_back_to_one_sms(
    landlord, other_landlord, time_machine, django_capture_on_commit_callbacks, settings
):
    settings.EMAIL_BACKEND = "tests.dunning.factories.FailingEmailBackend"
    (renter,) = renters(landlord, BERLIN)
    # The +1 overdue email goes at 08:00, fails six times (back-off 1 min to 6 h, the
    # hourly sweep retrying) and is given up at 20:00: the SMS goes at 08:00 next day.
    start = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    with django_capture_on_commit_callbacks(execute=True):
        walk(time_machine, hours(start, start + timedelta(hours=30)), sweep=True)
    email = notices(renter.invoice).get(kind="dunning_overdue_notice", channel=Channel.EMAIL)
    assert email.status == NotificationStatus.FAILED
    assert notices(renter.invoice).filter(channel=Channel.SMS).count() == 1
    assert len(RecordingSmsBackend.sent) == 1
    assert_in_window(renter, notices(renter.invoice))
    sms = notices(renter.invoice).get(channel=Channel.SMS)
    assert sms.created_at.astimezone(renter.tz).date() == date(2026, 12, 8)


def test_waiving_a_fee_reverses_it_and_the_books_balance(landlord, other_landlord, time_machine):
    (renter,) = renters(landlord, BERLIN)
    walk(time_machine, daily(DUE + timedelta(days=5), DUE + timedelta(days=5), at=(9,)))
    (fee,) = fee_invoices(renter.invoice)
    time_machine.move_to(datetime(2026, 12, 12, 10, tzinfo=UTC), tick=False)
    voided = services.late_fee_waive(
        landlord=landlord, fee_invoice=fee, reason="First time late", actor=None
    )
    assert voided.state == InvoiceState.VOID
    posting = LedgerTransaction.objects.get(idempotency_key=f"invoice:{fee.pk}:issue")
    (reversal,) = posting.reversals.all()
    assert sum(e.amount_minor for e in reversal.entries.all()) == 0
    assert trial_balance(landlord=landlord).is_balanced
    books_ok(landlord)
    waive = DunningStep.objects.get(invoice=renter.invoice, action="waive")
    assert waive.fee_invoice_id == fee.pk and "First time late" in waive.detail
    # The tenant owes the rent only again.
    assert invoice_balances(landlord=landlord, invoices=[renter.invoice])[renter.invoice.pk] == RENT
    assert Invoice.objects.get(pk=fee.pk).state == InvoiceState.VOID
    assert not Payment.objects.exists()


def test_an_older_notice_is_not_sent_after_a_newer_one_was_taken(
    landlord, other_landlord, time_machine
):
    """A tick that died after the day's newest notice (or a concurrent tick half-way
    through) leaves older notices untaken: they are superseded, never sent late."""
    (renter,) = renters(landlord, BERLIN)
    walk(time_machine, [datetime(2026, 12, 11, 5, tzinfo=UTC)])  # before the window
    DunningStep.objects.create(
        landlord=landlord,
        invoice=renter.invoice,
        tenant=renter.tenant,
        key="overdue_notice+1",
        action="overdue_notice",
        scheduled_on=DUE + timedelta(days=1),
        status=StepStatus.DONE,
    )
    walk(time_machine, [datetime(2026, 12, 11, 9, tzinfo=UTC)])
    skipped = DunningStep.objects.filter(invoice=renter.invoice, status=StepStatus.SKIPPED)
    assert sorted(s.key for s in skipped) == ["due_notice+0", "reminder-3"]
    assert [n.kind for n in notices(renter.invoice)] == ["dunning_late_fee"]
