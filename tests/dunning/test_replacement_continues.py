"""A rent invoice that replaces a voided one (its lease ended after billing, invoices
decision 0017) carries on the original's dunning: nothing already sent is sent again
and the late fees for the month's rent stay within the policy's legal maximum."""

from datetime import UTC, date, datetime, timedelta

from dunning.models import DunningStep
from invoices import services as invoice_services
from invoices.models import Invoice
from tests.dunning.factories import BERLIN, DUE, daily, policy, renters, walk


def test_a_replacement_continues_the_originals_dunning_within_the_fee_cap(
    landlord, other_landlord, owner, time_machine
):
    (renter,) = renters(landlord, BERLIN)
    policy(landlord, fee_flat_minor=5_000, max_fee_minor=5_000)
    # Unpaid: the late fee (the legal maximum) is charged on day +5.
    walk(time_machine, daily(DUE, DUE + timedelta(days=5), at=(9,)))
    lease = renter.invoice.lease
    assert sum(f.subtotal_minor for f in Invoice.objects.filter(lease=lease, kind="late_fee")) == (
        5_000
    )
    taken_on_original = set(
        DunningStep.objects.filter(invoice=renter.invoice).values_list("key", flat=True)
    )

    # 20 December: the landlord records that the tenant left on the 15th.
    time_machine.move_to(datetime(2026, 12, 20, 10, tzinfo=UTC), tick=False)
    (replacement,) = invoice_services.lease_end_and_rebill(
        landlord=landlord,
        lease=lease,
        end_date=date(2026, 12, 16),
        reason="Moved out",
        actor=owner,
    ).replacements
    walk(time_machine, daily(date(2026, 12, 20), date(2027, 1, 5), at=(9,)))

    fees = Invoice.objects.filter(lease=lease, kind="late_fee")
    assert sum(f.subtotal_minor for f in fees) <= 5_000
    again = (
        set(DunningStep.objects.filter(invoice=replacement).values_list("key", flat=True))
        & taken_on_original
    )
    assert again == set()
    # Steps the original never reached still come, on the replacement's own days.
    assert DunningStep.objects.filter(invoice=replacement).exists()
    assert not Invoice.objects.filter(landlord=other_landlord, kind="late_fee").exists()
