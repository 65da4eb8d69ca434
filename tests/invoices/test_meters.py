"""Metered utilities: readings are recorded only counting up, and billed as usage × rate."""

from datetime import date
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from invoices import services
from invoices.models import BillingRun, BillingRunIssue, Invoice, MeterReading
from ledger.selectors import trial_balance
from tests.factories import ChargeFactory, LandlordFactory, LeaseFactory
from tests.invoices.factories import bill_december, lease_with_charges


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def record(lease, day, value, rate="215.5", meter="Cold water"):
    return services.meter_reading_record(
        landlord=lease.landlord,
        unit=lease.unit,
        meter=meter,
        reading_date=day,
        value=Decimal(value),
        rate_minor_per_unit=Decimal(rate),
        actor=None,
    )


def insert(lease, day, value, meter="Cold water"):
    return MeterReading.objects.create(
        landlord=lease.landlord,
        unit=lease.unit,
        meter=meter,
        reading_date=day,
        value=Decimal(value),
        rate_minor_per_unit=Decimal("100"),
    )


def test_usage_since_the_last_reading_is_billed_at_the_rate(landlord, other_landlord):
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    record(lease, date(2026, 11, 30), "100")
    record(lease, date(2026, 12, 15), "112.5")
    # Another landlord's unit, with readings that would change the numbers.
    other = lease_with_charges(landlord=other_landlord, renter="Bob Other")
    record(other, date(2026, 11, 30), "0")
    record(other, date(2026, 12, 15), "999")
    (invoice,) = bill_december(landlord=landlord)
    utility = invoice.lines.get(kind="utility")
    assert utility.amount_minor == 2_694  # 12.5 m³ × 215.5 cents, half-even
    assert "Cold water" in utility.description
    assert invoice.total_minor == 102_694
    assert trial_balance(landlord=landlord).totals == {"EUR": 0}


def test_a_meter_with_only_a_baseline_reading_bills_nothing(landlord):
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    record(lease, date(2026, 12, 1), "100")
    (invoice,) = bill_december(landlord=landlord)
    assert invoice.total_minor == 100_000


def test_a_reading_lower_than_the_previous_is_refused_on_value(landlord):
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter")
    record(lease, date(2026, 11, 30), "100")
    with pytest.raises(ValidationError) as refused:
        record(lease, date(2026, 12, 15), "99.5")
    message = " ".join(refused.value.message_dict["value"])
    assert "100.000" in message and "2026-11-30" in message
    assert MeterReading.objects.filter(landlord=landlord).count() == 1


def test_a_second_reading_on_the_same_day_is_refused_on_the_date(landlord):
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter")
    record(lease, date(2026, 11, 30), "100")
    with pytest.raises(ValidationError) as refused:
        record(lease, date(2026, 11, 30), "101")
    assert "reading_date" in refused.value.message_dict


def test_a_decreasing_pair_at_billing_is_an_error_for_that_lease_only(landlord):
    broken = lease_with_charges(landlord=landlord, renter="Ada Meter")
    fine = lease_with_charges(landlord=landlord, renter="Bea Fine")
    insert(broken, date(2026, 11, 30), "100")
    insert(broken, date(2026, 12, 15), "90")
    insert(fine, date(2026, 11, 30), "5")
    insert(fine, date(2026, 12, 15), "6")
    invoices = bill_december(landlord=landlord)
    run = BillingRun.objects.get(landlord=landlord)
    assert (run.invoices_created, run.failed) == (1, 1)
    assert [i.lease_id for i in invoices] == [fine.pk]
    issue = BillingRunIssue.objects.get(run=run, lease=broken)
    assert issue.kind == "error" and "lower than the previous reading" in issue.message
    assert not Invoice.objects.filter(lease=broken).exists()


def test_the_unit_page_records_a_reading_and_shows_the_field_error(staff_client, landlord):
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter")
    url = reverse("dashboard:unit_meter_readings", args=[lease.unit.pk])
    form = {
        "meter": "Heat",
        "reading_date": "2026-11-30",
        "value": "10",
        "rate_minor_per_unit": "5",
    }
    assert staff_client.post(url, form).status_code == 302
    lower = staff_client.post(url, {**form, "reading_date": "2026-12-15", "value": "9"})
    assert lower.status_code == 200
    assert "lower than the previous reading" in " ".join(lower.context["form"].errors["value"])
    assert MeterReading.objects.filter(landlord=landlord).count() == 1


def test_another_landlords_unit_is_not_found(staff_client, other_landlord):
    lease = lease_with_charges(landlord=other_landlord, renter="Bob Other")
    url = reverse("dashboard:unit_meter_readings", args=[lease.unit.pk])
    assert staff_client.get(url).status_code == 404


def test_the_billing_section_lists_readings_and_finds_units(staff_client, landlord, other_landlord):
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", property_name="Lindenhof")
    record(lease, date(2026, 11, 30), "100")
    other = lease_with_charges(landlord=other_landlord, renter="Bob Other", property_name="Elmwood")
    record(other, date(2026, 11, 30), "7", meter="Secret meter")
    page = staff_client.get(reverse("dashboard:meter_reading_index"), {"q": "Linden"})
    assert page.status_code == 200
    content = page.content.decode()
    assert reverse("dashboard:unit_meter_readings", args=[lease.unit.pk]) in content
    assert "Secret meter" not in content and "Elmwood" not in content


def test_billing_with_readings_takes_the_same_queries_for_more_leases(landlord):
    def queries_to_bill(owner, count):
        for i in range(count):
            lease = lease_with_charges(landlord=owner, renter=f"Renter{i} Test")
            insert(lease, date(2026, 11, 30), "1")
            insert(lease, date(2026, 12, 15), "3")
        run, (chunk,) = services.billing_run_start(
            landlord=owner, period_start=date(2026, 12, 1), as_of=date(2026, 12, 31)
        )
        with CaptureQueriesContext(connection) as captured:
            result = services.billing_run_process_chunk(run_id=run.pk, lease_ids=chunk)
        assert result.created == count
        return len(captured)

    assert queries_to_bill(landlord, 2) == queries_to_bill(LandlordFactory(), 6)


def test_a_move_out_and_move_in_in_one_month_split_the_units_usage(landlord, other_landlord):
    # Ada leaves on 15 December, Bea moves in that day; the meter is read then.
    ada = lease_with_charges(landlord=landlord, renter="Ada Out")
    ada.end_date = date(2026, 12, 15)
    ada.save(update_fields=["end_date"])
    bea = LeaseFactory(unit=ada.unit, start_date=date(2026, 12, 15))
    ChargeFactory(lease=bea, amount_minor=120_000)
    insert(ada, date(2026, 11, 30), "100")
    insert(ada, date(2026, 12, 15), "110")
    insert(ada, date(2026, 12, 31), "125")
    other = lease_with_charges(landlord=other_landlord, renter="Bob Other")
    insert(other, date(2026, 11, 30), "0")
    insert(other, date(2026, 12, 31), "999")
    bill_december(landlord=landlord)
    usage = {
        lease.pk: list(
            Invoice.objects.get(lease=lease)
            .lines.filter(kind="utility")
            .values_list("amount_minor", flat=True)
        )
        for lease in (ada, bea)
    }
    # 10 units to Ada, 15 to Bea, at 100 cents: the 25 units are billed once.
    assert usage == {ada.pk: [1_000], bea.pk: [1_500]}


def _bill(landlord, month: date) -> Invoice:
    end = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    services.billing_run_execute(
        landlord=landlord, period_start=month, as_of=month, started_by="test", on_schedule=True
    )
    return Invoice.objects.get(landlord=landlord, period_start=month, period_end=end)


def _usage(invoice) -> list[tuple[int, int | None]]:
    return list(
        invoice.lines.filter(kind="utility").values_list("amount_minor", "meter_reading_id")
    )


def test_a_reading_entered_after_its_month_was_billed_is_billed_next_month(landlord):
    """Billed on the 1st; the meter read on 30 November is typed in after the December
    run: its usage is on January's invoice, not lost between the two months."""
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    insert(lease, date(2026, 10, 31), "100")
    november = _bill(landlord, date(2026, 11, 1))  # nothing read in November yet
    assert _usage(november) == []
    late = insert(lease, date(2026, 11, 30), "112.5")
    december = _bill(landlord, date(2026, 12, 1))
    assert _usage(december) == [(1_250, late.pk)]  # 12.5 units since 31 October
    insert(lease, date(2026, 12, 31), "120")
    january = _bill(landlord, date(2027, 1, 1))
    # From the reading December billed up to: 7.5 units, never the 12.5 again.
    assert [amount for amount, _reading in _usage(january)] == [750]


def test_a_void_invoice_gives_its_usage_back_to_the_next_bill(landlord):
    from invoices.services import invoice_void

    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    insert(lease, date(2026, 11, 30), "100")
    insert(lease, date(2026, 12, 15), "110")
    (december,) = bill_december(landlord=landlord)
    assert [a for a, _r in _usage(december)] == [1_000]
    invoice_void(invoice=december, reason="Wrong rent", actor=None)
    insert(lease, date(2026, 12, 31), "115")
    january = _bill(landlord, date(2027, 1, 1))
    assert [a for a, _r in _usage(january)] == [1_500]  # 100 → 115: nothing lost


def test_usage_billed_before_lines_recorded_their_reading_is_not_billed_again(landlord):
    """Metered lines written before migration 0009 have no reading id; the migration
    finds the reading each billed up to, or every meter would look never billed and
    its whole history since move-in would be billed once more."""
    import importlib

    from invoices.models import InvoiceLine

    backfill = importlib.import_module("invoices.migrations.0010_line_meter_reading_backfill")
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    insert(lease, date(2026, 11, 30), "100")
    insert(lease, date(2026, 12, 15), "110")
    insert(lease, date(2026, 12, 20), "110", meter="Heat")
    insert(lease, date(2026, 12, 10), "7", meter="Heat")
    (december,) = bill_december(landlord=landlord)
    assert sorted(a for a, _r in _usage(december)) == [1_000, 10_300]
    billed = dict(InvoiceLine.objects.filter(kind="utility").values_list("pk", "meter_reading_id"))
    InvoiceLine.objects.update(meter_reading_id=None)  # as written before 0009
    with connection.cursor() as cursor:
        cursor.execute(backfill.BACKFILL_SQL)
    assert (
        dict(InvoiceLine.objects.filter(kind="utility").values_list("pk", "meter_reading_id"))
        == billed
    )
    insert(lease, date(2026, 12, 31), "115")
    january = _bill(landlord, date(2027, 1, 1))
    assert [a for a, _r in _usage(january)] == [500]  # 110 → 115 only


def test_usage_up_to_the_move_out_reading_is_billed_after_the_lease_ended(landlord):
    """Billed on the 1st, in arrears: the December invoice billed up to 30 November.
    Ada moves out on 15 December, read that day; January's run bills her those 10
    units on a final invoice, as it would a one-off charge never billed."""
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    insert(lease, date(2026, 10, 31), "90")
    insert(lease, date(2026, 11, 30), "100")
    december = _bill(landlord, date(2026, 12, 1))
    assert [a for a, _r in _usage(december)] == [1_000]
    lease.end_date = date(2026, 12, 15)
    lease.save(update_fields=["end_date"])
    moved_out = insert(lease, date(2026, 12, 15), "110")
    january = _bill(landlord, date(2027, 1, 1))
    assert _usage(january) == [(1_000, moved_out.pk)]
    assert january.total_minor == 1_000  # no rent: the lease ended in December


def test_an_ended_lease_whose_usage_was_all_billed_is_not_billed_again(landlord):
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    insert(lease, date(2026, 11, 30), "100")
    insert(lease, date(2026, 12, 15), "110")
    lease.end_date = date(2026, 12, 15)
    lease.save(update_fields=["end_date"])
    december = _bill(landlord, date(2026, 12, 1))
    assert [a for a, _r in _usage(december)] == [1_000]
    services.billing_run_execute(
        landlord=landlord,
        period_start=date(2027, 1, 1),
        as_of=date(2027, 1, 1),
        started_by="test",
        on_schedule=True,
    )
    run = BillingRun.objects.get(landlord=landlord, period_start=date(2027, 1, 1))
    assert (run.leases_due, run.invoices_created) == (0, 0)


def test_a_move_out_reading_is_billed_when_the_new_tenants_chunk_runs_first(landlord):
    """Ada moved out on 15 December, Bea in; January's run bills both from the
    changeover reading. In two chunks, Bea's billed first: Ada's 10 units are still hers."""
    ada = lease_with_charges(landlord=landlord, renter="Ada Out", rent_minor=100_000)
    insert(ada, date(2026, 11, 30), "100")
    ada.end_date = date(2026, 12, 15)
    ada.save(update_fields=["end_date"])
    _bill(landlord, date(2026, 12, 1))
    bea = LeaseFactory(unit=ada.unit, start_date=date(2026, 12, 15))
    ChargeFactory(lease=bea, amount_minor=120_000)
    insert(ada, date(2026, 12, 15), "110")
    insert(ada, date(2026, 12, 31), "125")
    run, chunks = services.billing_run_start(
        landlord=landlord, period_start=date(2027, 1, 1), as_of=date(2027, 1, 1), chunk_size=1
    )
    assert sorted(chunks) == sorted([[ada.pk], [bea.pk]])
    for lease in (bea, ada):
        services.billing_run_process_chunk(run_id=run.pk, lease_ids=[lease.pk])
    usage = {
        lease.pk: list(
            Invoice.objects.get(lease=lease, period_start=date(2027, 1, 1))
            .lines.filter(kind="utility")
            .values_list("amount_minor", flat=True)
        )
        for lease in (ada, bea)
    }
    assert usage == {ada.pk: [1_000], bea.pk: [1_500]}


def test_usage_up_to_a_reading_priced_at_zero_is_not_billed_again_at_a_later_rate(landlord):
    """Water was included in the rent (readings at rate 0) until December's reading,
    priced at 100: January bills December's 10 units, not the meter's whole history
    since it was first read at the new rate."""
    lease = lease_with_charges(landlord=landlord, renter="Ada Meter", rent_minor=100_000)
    record(lease, date(2026, 10, 31), "100", rate="0")
    record(lease, date(2026, 11, 30), "150", rate="0")
    december = _bill(landlord, date(2026, 12, 1))
    assert _usage(december) == []  # 50 units at 0: nothing to bill
    record(lease, date(2026, 12, 31), "160", rate="100")
    january = _bill(landlord, date(2027, 1, 1))
    assert [a for a, _r in _usage(january)] == [1_000]  # 150 → 160


def test_an_ended_lease_that_used_nothing_is_not_picked_up_every_month(landlord):
    """The unit's meter went up while it stood empty, before Bea moved in (read then);
    she used nothing. Her ended lease has no usage to bill: no run takes it on again."""
    bea = lease_with_charges(landlord=landlord, renter="Bea Empty", rent_minor=100_000)
    bea.start_date, bea.end_date = date(2026, 12, 1), date(2026, 12, 20)
    bea.save(update_fields=["start_date", "end_date"])
    insert(bea, date(2026, 11, 1), "100")  # read while empty
    insert(bea, date(2026, 12, 1), "110")  # move-in
    insert(bea, date(2026, 12, 20), "110")  # move-out
    _bill(landlord, date(2026, 12, 1))
    for month in (date(2027, 1, 1), date(2027, 2, 1)):
        services.billing_run_execute(
            landlord=landlord, period_start=month, as_of=month, started_by="test", on_schedule=True
        )
        run = BillingRun.objects.get(landlord=landlord, period_start=month)
        assert (run.leases_due, run.skipped) == (0, 0)
