"""Impossible leases and charges cannot be stored: PostgreSQL refuses them even when
the ORM bypasses every form, and the dashboard turns each bad input into an error on
the field that is wrong while saving nothing."""

from datetime import date

import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from tenants.models import AuditEvent, Charge, Lease, LeaseStatus, Tenant
from tests.factories import ChargeFactory, LeaseFactory, UnitFactory

JAN, FEB, MAR, APR = (date(2026, m, 1) for m in (1, 2, 3, 4))


def refused_by(constraint: str):
    """The database refuses the statement, naming the constraint that held."""
    return pytest.raises(IntegrityError, match=constraint)


@pytest.fixture
def unit(landlord, other_landlord):
    return UnitFactory(property__landlord=landlord)


@pytest.fixture
def lease(unit):
    return LeaseFactory(unit=unit, start_date=JAN, end_date=None)


# --- the database, bypassing forms and services ------------------------------------------


@pytest.mark.parametrize("amount", [0, -100])
def test_a_charge_amount_that_is_not_positive_is_refused_by_the_database(lease, amount):
    with refused_by("charge_amount_positive"), transaction.atomic():
        ChargeFactory(lease=lease, amount_minor=amount)


def test_a_charge_or_deposit_above_the_typed_maximum_is_refused_by_the_database(lease, unit):
    with refused_by("charge_amount_at_most_max"), transaction.atomic():
        ChargeFactory(lease=lease, amount_minor=10**12 + 1)
    with refused_by("lease_deposit_at_most_max"), transaction.atomic():
        LeaseFactory(unit=unit, start_date=date(2030, 1, 1), deposit_minor=10**12 + 1)
    ChargeFactory(lease=lease, amount_minor=10**12)  # the maximum itself is fine


def test_a_lease_ending_before_it_starts_is_refused_by_the_database(unit):
    with refused_by("lease_end_after_start"), transaction.atomic():
        LeaseFactory(unit=unit, start_date=FEB, end_date=JAN)


def test_a_lease_ending_the_day_it_starts_is_refused_by_the_database(unit):
    with refused_by("lease_end_after_start"), transaction.atomic():
        LeaseFactory(unit=unit, start_date=FEB, end_date=FEB)


def test_a_charge_ending_before_it_starts_is_refused_by_the_database(lease):
    with refused_by("charge_end_after_start"), transaction.atomic():
        ChargeFactory(lease=lease, start_date=MAR, end_date=FEB)


@pytest.mark.parametrize("day", [0, 29, 31])
def test_a_billing_day_outside_1_to_28_is_refused_by_the_database(unit, day):
    with refused_by("lease_billing_day_1_28"), transaction.atomic():
        LeaseFactory(unit=unit, billing_day=day)


@pytest.mark.parametrize("day", [1, 28])
def test_billing_days_1_and_28_are_stored(unit, day):
    assert LeaseFactory(unit=unit, billing_day=day).billing_day == day


@pytest.mark.parametrize("currency", ["eur", "E1R", "€€"])
def test_a_currency_not_shaped_like_an_iso_code_is_refused_by_the_database(lease, currency):
    with refused_by("charge_currency_iso"), transaction.atomic():
        ChargeFactory(lease=lease, currency=currency)


def test_a_lease_currency_not_shaped_like_an_iso_code_is_refused_by_the_database(unit):
    with refused_by("lease_currency_iso"), transaction.atomic():
        LeaseFactory(unit=unit, currency="usd")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (FEB, MAR),  # inside the open-ended lease
        (date(2025, 12, 1), FEB),  # straddles its start
        (date(2025, 6, 1), None),  # open-ended, starting earlier
        (APR, None),  # open-ended, starting later
    ],
)
def test_a_lease_overlapping_an_open_ended_one_is_refused_by_the_database(lease, start, end):
    with refused_by("lease_no_overlap_per_unit"), transaction.atomic():
        LeaseFactory(unit=lease.unit, start_date=start, end_date=end)


def test_a_lease_overlapping_a_closed_one_by_one_day_is_refused_by_the_database(unit):
    LeaseFactory(unit=unit, start_date=JAN, end_date=MAR)

    with refused_by("lease_no_overlap_per_unit"), transaction.atomic():
        LeaseFactory(unit=unit, start_date=date(2026, 2, 28), end_date=APR)


def test_an_ended_lease_still_holds_the_unit_for_its_dates(unit):
    LeaseFactory(unit=unit, start_date=JAN, end_date=MAR, status=LeaseStatus.ENDED)

    with refused_by("lease_no_overlap_per_unit"), transaction.atomic():
        LeaseFactory(unit=unit, start_date=FEB, end_date=None)


def test_back_to_back_leases_are_allowed_because_ranges_are_half_open(unit):
    LeaseFactory(unit=unit, start_date=JAN, end_date=FEB)
    LeaseFactory(unit=unit, start_date=FEB, end_date=MAR)
    LeaseFactory(unit=unit, start_date=MAR, end_date=None)

    assert Lease.objects.filter(unit=unit).count() == 3


def test_a_lease_ending_the_day_an_open_ended_one_starts_is_allowed(lease):
    LeaseFactory(unit=lease.unit, start_date=date(2025, 1, 1), end_date=JAN)

    assert Lease.objects.filter(unit=lease.unit).count() == 2


def test_overlapping_leases_on_different_units_are_allowed(lease, landlord):
    LeaseFactory(unit=UnitFactory(property=lease.unit.property), start_date=JAN)

    assert Lease.objects.filter(landlord=landlord).count() == 2


@pytest.mark.parametrize("status", [LeaseStatus.DRAFT, LeaseStatus.CANCELLED])
def test_a_draft_or_cancelled_lease_does_not_block_the_unit(unit, status):
    LeaseFactory(unit=unit, start_date=JAN, status=status)

    LeaseFactory(unit=unit, start_date=JAN, status=LeaseStatus.ACTIVE)

    assert Lease.objects.filter(unit=unit).count() == 2


@pytest.mark.parametrize("status", [LeaseStatus.DRAFT, LeaseStatus.CANCELLED])
def test_a_draft_or_cancelled_lease_may_overlap_an_active_one(lease, status):
    LeaseFactory(unit=lease.unit, start_date=FEB, status=status)

    assert Lease.objects.filter(unit=lease.unit).count() == 2


def test_activating_a_draft_that_overlaps_an_active_lease_is_refused_by_the_database(lease):
    draft = LeaseFactory(unit=lease.unit, start_date=FEB, status=LeaseStatus.DRAFT)
    draft.status = LeaseStatus.ACTIVE

    with refused_by("lease_no_overlap_per_unit"), transaction.atomic():
        draft.save()


# --- the dashboard: a field error naming the problem, nothing saved ------------------------


def counts() -> dict[str, int]:
    return {
        "leases": Lease.objects.count(),
        "charges": Charge.objects.count(),
        "tenants": Tenant.objects.count(),
        "audit": AuditEvent.objects.count(),
    }


def post_lease(client, mine, **overrides):
    data = {
        "unit": mine.vacant_unit.pk,
        "tenants": [mine.tenant.pk],
        "start_date": "2026-03-01",
        "currency": "EUR",
        "billing_day": 1,
        "due_days": 0,
    }
    return client.post(reverse("dashboard:lease_create"), data | overrides)


def post_charge(client, mine, **overrides):
    data = {
        "kind": "parking",
        "frequency": "monthly",
        "start_date": "2026-02-01",
        "amount": "50.00",
    }
    return client.post(reverse("dashboard:charge_create", args=[mine.lease.pk]), data | overrides)


def assert_field_error(response, field: str, text: str) -> None:
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert field in errors, errors
    assert any(text in message for message in errors[field]), errors[field]
    assert text in response.content.decode()


def test_a_valid_lease_posted_to_the_dashboard_is_saved(staff_client, mine):
    before = counts()

    response = post_lease(staff_client, mine)

    assert response.status_code == 302
    assert counts()["leases"] == before["leases"] + 1


@pytest.mark.parametrize("amount", ["0", "0.00", "-5", "-0.01"])
def test_a_charge_amount_that_is_not_positive_is_an_amount_error(staff_client, mine, amount):
    before = counts()

    response = post_charge(staff_client, mine, amount=amount)

    assert_field_error(response, "amount", "Enter an amount greater than zero.")
    assert counts() == before


def test_a_charge_amount_with_more_decimals_than_the_currency_is_an_amount_error(
    staff_client, mine
):
    before = counts()

    response = post_charge(staff_client, mine, amount="12.345")

    assert_field_error(response, "amount", "has more decimals than EUR allows")
    assert counts() == before


def test_a_charge_amount_that_is_not_a_number_is_an_amount_error(staff_client, mine):
    before = counts()

    response = post_charge(staff_client, mine, amount="12,5")

    assert_field_error(response, "amount", "is not an amount")
    assert counts() == before


def test_a_charge_ending_before_it_starts_is_an_end_date_error(staff_client, mine):
    before = counts()

    response = post_charge(staff_client, mine, start_date="2026-03-01", end_date="2026-02-01")

    assert_field_error(response, "end_date", "The end date must be after the start date.")
    assert counts() == before


def test_a_lease_ending_before_it_starts_is_an_end_date_error(staff_client, mine):
    before = counts()

    response = post_lease(staff_client, mine, start_date="2026-03-01", end_date="2026-02-01")

    assert_field_error(response, "end_date", "The end date must be after the start date.")
    assert counts() == before


def test_a_lease_overlapping_another_on_its_unit_is_a_start_date_error(staff_client, mine):
    before = counts()

    response = post_lease(staff_client, mine, unit=mine.unit.pk, start_date="2026-05-01")

    assert_field_error(response, "start_date", "This unit already has a lease for these dates.")
    assert counts() == before


def test_a_lease_in_an_unknown_currency_is_a_currency_error(staff_client, mine):
    before = counts()

    response = post_lease(staff_client, mine, currency="XYZ")

    assert_field_error(response, "currency", "XYZ is not a currency code we know")
    assert counts() == before


@pytest.mark.parametrize("day", ["0", "31"])
def test_a_billing_day_outside_1_to_28_is_a_billing_day_error(staff_client, mine, day):
    before = counts()

    response = post_lease(staff_client, mine, billing_day=day)

    assert_field_error(response, "billing_day", "between 1 and 28")
    assert counts() == before


def test_a_malformed_tenant_email_is_an_email_error(staff_client, mine):
    before = counts()

    response = staff_client.post(
        reverse("dashboard:tenant_create"),
        {"full_name": "Eve", "email": "eve@@example", "language": "en"},
    )

    assert_field_error(response, "email", "Enter a valid email address.")
    assert counts() == before


def test_a_phone_dunning_cannot_text_is_a_phone_error_and_an_old_one_stays_editable(
    staff_client, mine
):
    before = counts()
    response = staff_client.post(
        reverse("dashboard:tenant_create"),
        {"full_name": "Eve", "phone": "not a phone ###", "language": "en"},
    )
    assert_field_error(response, "phone", "Enter a phone number like +49 30 1234567")
    assert counts() == before

    # A number stored before the check: saving other fields keeps it as it is.
    tenant = mine.tenant
    Tenant.objects.filter(pk=tenant.pk).update(phone="ext. 12")
    response = staff_client.post(
        reverse("dashboard:tenant_edit", args=[tenant.pk]),
        {"full_name": "Renamed", "phone": "ext. 12", "language": "en"},
    )
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.full_name, tenant.phone) == ("Renamed", "ext. 12")


def test_a_charge_in_another_currency_than_its_lease_is_a_currency_error(staff_client, mine):
    before = counts()

    response = post_charge(staff_client, mine, currency="USD")

    assert_field_error(response, "currency", "This lease is billed in EUR; use EUR.")
    assert counts() == before


def test_a_duplicate_property_name_is_a_name_error(staff_client, mine):
    response = staff_client.post(
        reverse("dashboard:property_create"),
        {"name": mine.property.name, "address_line1": "3 Acme Road", "city": "Berlin"},
    )

    assert_field_error(response, "name", "You already have a property with this name.")


def test_a_property_name_used_by_another_landlord_is_allowed(staff_client, mine, theirs):
    response = staff_client.post(
        reverse("dashboard:property_create"),
        {"name": theirs.property.name, "address_line1": "3 Acme Road", "city": "Berlin"},
    )

    assert response.status_code == 302
