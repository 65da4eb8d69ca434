"""A lease ended after it was billed (the tenant moved out and the landlord records it
later): what was billed for days the unit is no longer let is put right in the same
step. Issued invoices are voided and, where something is still owed, replaced by a new
numbered invoice; money paid moves to the replacement; drafts are cut. Landlord B's
rows are never touched. Decision 0017."""

from datetime import UTC, date, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.urls import reverse
from hypothesis import given
from hypothesis import strategies as st

from invoices import rules
from invoices import services as invoice_services
from invoices.models import Invoice, InvoiceLine, InvoiceState, Notification
from invoices.selectors import invoice_balances, invoice_status
from ledger.models import AccountCode
from ledger.selectors import trial_balance
from money.rounding import prorate_days, prorate_month
from payments.services import manual_payment_record
from tenants.models import AuditEvent, LeaseStatus
from tests.invoices.factories import PERIOD, bill_december, lease_with_charges, tax_rate

DEC = PERIOD
NOW = datetime(2026, 12, 20, 10, tzinfo=UTC)  # 11:00 in Berlin


def end(landlord, lease, end_date, owner, reason="Moved out"):
    return invoice_services.lease_end_and_rebill(
        landlord=landlord, lease=lease, end_date=end_date, reason=reason, actor=owner
    )


def balance(landlord, invoice):
    return invoice_balances(landlord=landlord, invoices=[invoice])[invoice.pk]


def pay_in_full(landlord, tenant, invoice, owner, *, method):
    """Staff record the 930.00 the tenant paid on `invoice` on 3 December."""
    return manual_payment_record(
        landlord=landlord,
        tenant=tenant,
        amount_minor=93_000,
        currency="EUR",
        method=method,
        reference="DEC",
        received_on=date(2026, 12, 3),
        actor=owner,
        invoice=invoice,
    )


@pytest.fixture
def now(time_machine):
    time_machine.move_to(NOW, tick=False)


@pytest.fixture
def theirs(other_landlord):
    """Landlord B's December, billed: nothing here may change it."""
    lease = lease_with_charges(landlord=other_landlord, renter="Bea Other", rent_minor=50_000)
    (invoice,) = [i for i in bill_december(landlord=other_landlord) if i.lease_id == lease.pk]
    return invoice


def b_untouched(other_landlord, invoice):
    invoice.refresh_from_db()
    assert invoice.state == InvoiceState.ISSUED
    assert Invoice.objects.filter(landlord=other_landlord, adjusts__isnull=False).count() == 0
    assert balance(other_landlord, invoice) == invoice.total_minor


def test_mid_month_end_voids_the_invoice_and_replaces_it_with_the_days_still_let(
    landlord, other_landlord, owner, theirs, now, django_capture_on_commit_callbacks
):
    tax_rate(landlord=landlord, kind="parking", rate_bp=1_900)
    lease = lease_with_charges(
        landlord=landlord,
        renter="Ann Mover",
        rent_minor=93_000,
        parking_minor=6_200,
        one_off=("Key replacement", 4_500),
    )
    (original,) = bill_december(landlord=landlord)
    assert original.total_minor == 93_000 + 6_200 + 1_178 + 4_500

    with django_capture_on_commit_callbacks(execute=True):
        ended = end(landlord, lease, date(2026, 12, 16), owner)

    original.refresh_from_db()
    (replacement,) = ended.replacements
    assert ended.voided == (original,)
    assert original.state == InvoiceState.VOID
    assert original.void_reason.startswith(f"Replaced by {replacement.number}")
    assert replacement.adjusts_id == original.pk
    assert (replacement.period_start, replacement.period_end) == (
        original.period_start,
        original.period_end,
    )
    # Numbered next in the series, dated today in Berlin, due after the lease's due days.
    assert int(replacement.number[-6:]) == int(original.number[-6:]) + 1
    assert (replacement.issue_date, replacement.due_date) == (
        date(2026, 12, 20),
        date(2026, 12, 25),
    )

    lines = {line.kind: line for line in InvoiceLine.objects.filter(invoice=replacement)}
    # 15 of December's 31 days; the one-off is owed whenever the lease ends.
    assert lines["rent"].amount_minor == prorate_month(
        93_000, month_start=DEC, covered_start=DEC, covered_end=date(2026, 12, 16)
    )
    assert (lines["rent"].service_start, lines["rent"].service_end) == (DEC, date(2026, 12, 16))
    assert lines["rent"].description == "Monthly rent (1–15 Dec, 15/31 days)"
    assert lines["parking"].amount_minor == prorate_days(6_200, days=31, covered_days=15)
    assert lines["parking"].tax_minor == round(lines["parking"].amount_minor * 0.19)
    assert lines["other"].amount_minor == 4_500
    assert replacement.total_minor == sum(
        line.amount_minor + line.tax_minor for line in lines.values()
    )

    # The ledger: the original nets to zero, the replacement is owed, the books balance.
    assert balance(landlord, original) == 0
    assert balance(landlord, replacement) == replacement.total_minor
    assert trial_balance(landlord=landlord).is_balanced
    status = invoice_status(
        invoice=replacement, balance_minor=replacement.total_minor, today=date(2026, 12, 20)
    )
    assert status == "open"

    # The tenant hears of the replacement; the lease is ended; the audit names both.
    assert Notification.objects.filter(invoice=replacement, kind="invoice_issued").count() == 1
    assert lease.__class__.objects.get(pk=lease.pk).status == LeaseStatus.ENDED
    assert AuditEvent.objects.filter(landlord=landlord, action="invoice.replace").count() == 1
    assert AuditEvent.objects.filter(landlord=landlord, action="invoice.void").count() == 1
    b_untouched(other_landlord, theirs)


def test_an_invoice_wholly_after_the_end_is_voided_with_nothing_to_replace_it(
    landlord, other_landlord, owner, theirs, now
):
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover")
    (december,) = bill_december(landlord=landlord)

    ended = end(landlord, lease, DEC, owner)

    december.refresh_from_db()
    assert ended.voided == (december,) and ended.replacements == ()
    assert december.state == InvoiceState.VOID
    assert "No days left to bill" in december.void_reason
    assert balance(landlord, december) == 0
    assert trial_balance(landlord=landlord).is_balanced
    b_untouched(other_landlord, theirs)


def test_an_end_after_everything_billed_changes_no_invoice(landlord, owner, now):
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover")
    (december,) = bill_december(landlord=landlord)

    ended = end(landlord, lease, date(2027, 1, 1), owner)

    december.refresh_from_db()
    assert (ended.voided, ended.replacements, ended.drafts_changed) == ((), (), 0)
    assert december.state == InvoiceState.ISSUED


def test_money_paid_on_the_voided_invoice_pays_the_replacement_and_the_rest_is_credit(
    landlord, other_landlord, owner, theirs, now
):
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover", rent_minor=93_000)
    (december,) = bill_december(landlord=landlord)
    tenant = lease.tenants.get()
    pay_in_full(landlord, tenant, december, owner, method="bank_transfer")

    (replacement,) = end(landlord, lease, date(2026, 12, 16), owner).replacements

    kept = prorate_month(93_000, month_start=DEC, covered_start=DEC, covered_end=date(2026, 12, 16))
    assert replacement.total_minor == kept
    assert balance(landlord, replacement) == 0
    assert invoice_status(invoice=replacement, balance_minor=0, today=date(2026, 12, 20)) == "paid"
    (credit,) = [
        line.balance
        for line in trial_balance(landlord=landlord).lines
        if line.code == AccountCode.TENANT_CREDIT
    ]
    assert credit == -(93_000 - kept)  # a liability: what the landlord now owes the tenant
    assert trial_balance(landlord=landlord).is_balanced
    b_untouched(other_landlord, theirs)


def test_a_draft_waiting_for_review_is_cut_in_place_and_one_with_nothing_left_goes(
    landlord, owner, now
):
    from invoices.models import BillingRun, InvoiceSettings

    InvoiceSettings.objects.update_or_create(landlord=landlord, defaults={"review_drafts": True})
    cut = lease_with_charges(landlord=landlord, renter="Ann Mover", rent_minor=93_000)
    gone = lease_with_charges(landlord=landlord, renter="Ben Gone", rent_minor=80_000)
    drafts = bill_december(landlord=landlord)
    assert {d.state for d in drafts} == {InvoiceState.DRAFT}
    run = BillingRun.objects.get(landlord=landlord)
    created = run.invoices_created

    assert end(landlord, cut, date(2026, 12, 11), owner).drafts_changed == 1
    assert end(landlord, gone, DEC, owner).drafts_changed == 1

    draft = Invoice.objects.get(lease=cut)
    assert draft.state == InvoiceState.DRAFT and draft.number is None
    assert draft.total_minor == prorate_days(93_000, days=31, covered_days=10)
    assert not Invoice.objects.filter(lease=gone).exists()
    run.refresh_from_db()
    assert run.invoices_created == created - 1
    # Issuing the reviewed run issues what is left, at the cut amount.
    assert invoice_services.billing_run_issue(run=run, actor=owner) == 1
    draft.refresh_from_db()
    assert draft.state == InvoiceState.ISSUED
    assert balance(landlord, draft) == draft.total_minor


def test_a_bad_end_date_changes_nothing(landlord, owner, now):
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover")
    (december,) = bill_december(landlord=landlord)

    with pytest.raises(ValidationError) as error:
        end(landlord, lease, date(2025, 12, 1), owner)  # before the lease started
    assert "end_date" in error.value.message_dict

    december.refresh_from_db()
    assert december.state == InvoiceState.ISSUED
    assert lease.__class__.objects.get(pk=lease.pk).status == LeaseStatus.ACTIVE
    assert not Invoice.objects.filter(adjusts=december).exists()


def test_another_landlords_lease_cannot_be_ended(landlord, other_landlord, owner, theirs, now):
    with pytest.raises(ValidationError):
        end(landlord, theirs.lease, date(2026, 12, 16), owner)
    b_untouched(other_landlord, theirs)


def test_the_database_allows_one_replacement_per_invoice_and_keeps_the_run_key(
    landlord, owner, now
):
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover")
    (december,) = bill_december(landlord=landlord)
    (replacement,) = end(landlord, lease, date(2026, 12, 16), owner).replacements

    second = Invoice.objects.get(pk=replacement.pk)
    second.pk, second.number = None, "X-2"
    with pytest.raises(IntegrityError), transaction.atomic():
        second.save()
    original = Invoice.objects.get(pk=december.pk)
    original.pk, original.number = None, "X-3"
    with pytest.raises(IntegrityError), transaction.atomic():
        original.save()  # a second unreplacing invoice of the same lease and month


def test_the_lease_end_page_lists_the_invoices_and_reports_what_it_did(
    landlord, other_landlord, owner, staff_client, theirs, now
):
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover")
    (december,) = bill_december(landlord=landlord)
    url = reverse("dashboard:lease_end", args=[lease.pk])

    page = staff_client.get(url).content.decode()
    assert december.number in page
    assert reverse("dashboard:invoice_detail", args=[december.pk]) in page
    assert reverse("dashboard:invoice_detail", args=[theirs.pk]) not in page

    response = staff_client.post(
        url, {"end_date": "2026-12-16", "reason": "Moved out"}, follow=True
    )
    replacement = Invoice.objects.get(adjusts=december)
    text = response.content.decode()
    assert f"Voided {december.number}" in text and f"Issued {replacement.number}" in text

    detail = staff_client.get(reverse("dashboard:invoice_detail", args=[december.pk])).content
    assert replacement.number in detail.decode()
    detail = staff_client.get(reverse("dashboard:invoice_detail", args=[replacement.pk])).content
    assert "Replaces" in detail.decode() and december.number in detail.decode()
    # Another landlord's lease is not found.
    assert (
        staff_client.get(reverse("dashboard:lease_end", args=[theirs.lease_id])).status_code == 404
    )
    b_untouched(other_landlord, theirs)


# --- the rule ---------------------------------------------------------------------------


def _line(amount, start, end, charge_id=1, rate=0):
    return rules.LineDraft(
        charge_id=charge_id,
        kind="rent",
        description="Rent",
        quantity=1,
        unit_amount_minor=amount,
        amount_minor=amount,
        tax_rate_bp=rate,
        tax_minor=rules.tax(amount, rate),
        service_start=start,
        service_end=end,
    )


@given(
    amount=st.integers(min_value=1, max_value=10**12),
    first=st.integers(min_value=1, max_value=28),
    days=st.integers(min_value=1, max_value=31),
    cut=st.integers(min_value=0, max_value=31),
    rate=st.integers(min_value=0, max_value=3_000),
)
def test_kept_and_credited_always_add_up_to_what_was_billed(amount, first, days, cut, rate):
    start = date(2026, 12, first)
    stop = date(2026, 12, min(first + days, 31)) if first + days <= 31 else date(2027, 1, 1)
    line = _line(amount, start, stop, rate=rate)
    end_date = date.fromordinal(start.toordinal() + cut)
    kept = rules.lines_after_lease_end([line], end_date=end_date, recurring={1: "Rent"})
    if end_date >= stop:
        assert kept is None
        return
    kept_amount = sum(k.amount_minor for k in kept)
    credited = amount - kept_amount
    assert 0 <= kept_amount <= amount and 0 <= credited <= amount
    for k in kept:
        assert k.service_start == start and k.service_end == end_date
        assert k.tax_minor == rules.tax(k.amount_minor, rate)


def test_one_off_and_metered_lines_are_kept_whole():
    one_off = _line(5_000, date(2026, 12, 10), date(2026, 12, 11), charge_id=7)
    metered = _line(3_000, date(2026, 11, 1), date(2026, 12, 1), charge_id=None)
    assert (
        rules.lines_after_lease_end([one_off, metered], end_date=DEC, recurring={1: "Rent"}) is None
    )


def test_a_payment_reversed_after_the_end_is_taken_from_credit_and_the_replacement(
    landlord, other_landlord, owner, theirs, now
):
    """The transfer that paid the original bounces after the move-out was recorded: the
    void original stays at zero, the credit it left is taken back, and the replacement
    that credit paid is owed again (so dunning chases it)."""
    from payments.services import payment_reverse, tenant_credit_balance

    lease = lease_with_charges(landlord=landlord, renter="Ann Mover", rent_minor=93_000)
    (december,) = bill_december(landlord=landlord)
    tenant = lease.tenants.get()
    payment = pay_in_full(landlord, tenant, december, owner, method="bank_transfer")
    (replacement,) = end(landlord, lease, date(2026, 12, 16), owner).replacements

    payment_reverse(payment=payment, reason="Transfer bounced", actor=owner)

    assert balance(landlord, december) == 0
    assert tenant_credit_balance(landlord=landlord, tenant=tenant, currency="EUR") == 0
    assert balance(landlord, replacement) == replacement.total_minor
    assert trial_balance(landlord=landlord).is_balanced
    b_untouched(other_landlord, theirs)


def test_a_payment_reversed_after_a_plain_void_takes_back_the_credit_not_the_void(
    landlord, owner, now
):
    from payments.services import payment_reverse, tenant_credit_balance

    lease = lease_with_charges(landlord=landlord, renter="Ann Mover", rent_minor=93_000)
    (december,) = bill_december(landlord=landlord)
    tenant = lease.tenants.get()
    payment = pay_in_full(landlord, tenant, december, owner, method="cash")
    invoice_services.invoice_void(invoice=december, reason="Billed in error", actor=owner)
    assert tenant_credit_balance(landlord=landlord, tenant=tenant, currency="EUR") == 93_000

    payment_reverse(payment=payment, reason="Counterfeit notes", actor=owner)

    assert balance(landlord, december) == 0
    assert tenant_credit_balance(landlord=landlord, tenant=tenant, currency="EUR") == 0
    assert trial_balance(landlord=landlord).is_balanced


def test_a_cut_line_keeps_the_label_it_was_billed_with():
    partial = rules.LineDraft(
        charge_id=1,
        kind="parking",
        description="Parking (P12) (10–31 Dec, 22/31 days)",
        quantity=1,
        unit_amount_minor=4_400,
        amount_minor=4_400,
        tax_rate_bp=0,
        tax_minor=0,
        service_start=date(2026, 12, 10),
        service_end=date(2027, 1, 1),
    )
    (kept,) = rules.lines_after_lease_end(
        [partial], end_date=date(2026, 12, 20), recurring={1: "Renamed since"}
    )
    assert kept.description == "Parking (P12) (10–19 Dec, 10/31 days)"
    assert kept.amount_minor == 2_000  # 4,400 over 22 days, 10 of them kept
