"""Write actions: ending leases, charges, lease scoping, and the demo seed."""

from datetime import date
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from tenants import selectors, services
from tenants.models import (
    AuditEvent,
    Charge,
    ChargeFrequency,
    Landlord,
    Lease,
    LeaseStatus,
    Membership,
    Unit,
)
from tests.factories import ChargeFactory, LeaseFactory, TenantFactory, UnitFactory
from tests.tenants.helpers import snapshot

JAN, JUN, DEC = date(2026, 1, 1), date(2026, 6, 1), date(2026, 12, 1)


@pytest.fixture
def lease(landlord, other_landlord):
    return LeaseFactory(unit__property__landlord=landlord, start_date=JAN, end_date=None)


def end(lease, owner, end_date=JUN, reason="Tenant gave notice"):
    return services.lease_end(
        landlord=lease.landlord, lease=lease, end_date=end_date, reason=reason, actor=owner
    )


# --- lease_end -------------------------------------------------------------------------


def test_ending_a_lease_sets_its_end_date_and_status(lease, owner):
    end(lease, owner)

    lease.refresh_from_db()
    assert (lease.end_date, lease.status, lease.ended_reason) == (
        JUN,
        LeaseStatus.ENDED,
        "Tenant gave notice",
    )


def test_ending_a_lease_stops_its_open_ended_recurring_charges_at_the_end_date(lease, owner):
    rent = ChargeFactory(lease=lease, end_date=None)

    end(lease, owner)

    rent.refresh_from_db()
    assert rent.end_date == JUN


def test_ending_a_lease_cuts_recurring_charges_that_ran_past_the_end_date(lease, owner):
    parking = ChargeFactory(lease=lease, end_date=DEC)

    end(lease, owner)

    parking.refresh_from_db()
    assert parking.end_date == JUN


def test_ending_a_lease_leaves_charges_that_stopped_earlier_alone(lease, owner):
    pet = ChargeFactory(lease=lease, end_date=date(2026, 3, 1))

    end(lease, owner)

    pet.refresh_from_db()
    assert pet.end_date == date(2026, 3, 1)


def test_ending_a_lease_leaves_one_off_charges_alone(lease, owner):
    fee = ChargeFactory(
        lease=lease, frequency=ChargeFrequency.ONE_OFF, start_date=date(2026, 2, 10)
    )

    end(lease, owner)

    fee.refresh_from_db()
    assert fee.end_date is None


def test_ending_a_lease_does_not_touch_another_leases_charges(lease, owner):
    neighbour = ChargeFactory(lease=LeaseFactory(unit__property__landlord=lease.landlord))

    end(lease, owner)

    neighbour.refresh_from_db()
    assert neighbour.end_date is None


def test_ending_a_lease_writes_an_audit_event(lease, owner):
    end(lease, owner)

    event = AuditEvent.objects.get(action="lease.end")
    assert (event.landlord, event.actor, event.object_type, event.object_id) == (
        lease.landlord,
        owner,
        "Lease",
        str(lease.pk),
    )
    assert "2026-06-01" in event.summary


def test_ending_a_lease_twice_is_an_error(lease, owner):
    end(lease, owner)

    with pytest.raises(ValidationError, match="already ended"):
        end(lease, owner, end_date=date(2026, 5, 1))

    lease.refresh_from_db()
    assert lease.end_date == JUN


def test_ending_a_lease_on_or_before_its_start_is_an_end_date_error(lease, owner):
    with pytest.raises(ValidationError) as caught:
        end(lease, owner, end_date=JAN)

    assert "end_date" in caught.value.message_dict
    lease.refresh_from_db()
    assert lease.status == LeaseStatus.ACTIVE


def test_ending_a_fixed_term_lease_after_its_end_date_is_refused(landlord, owner, other_landlord):
    fixed = LeaseFactory(unit__property__landlord=landlord, start_date=JAN, end_date=JUN)

    with pytest.raises(ValidationError) as caught:
        end(fixed, owner, end_date=DEC)

    assert "end_date" in caught.value.message_dict


def test_ending_another_landlords_lease_is_refused_as_not_found(owner, landlord, other_landlord):
    theirs = Lease.objects.filter(landlord=other_landlord).first()

    with pytest.raises(ValidationError, match="Not found"):
        services.lease_end(landlord=landlord, lease=theirs, end_date=JUN, reason="x", actor=owner)

    theirs.refresh_from_db()
    assert theirs.status == LeaseStatus.ACTIVE


def test_ending_a_draft_that_overlaps_another_lease_is_an_overlap_error(lease, owner):
    draft = LeaseFactory(unit=lease.unit, start_date=JAN, status=LeaseStatus.DRAFT)

    with pytest.raises(ValidationError) as caught:
        end(draft, owner)

    assert caught.value.message_dict == {"start_date": [services.OVERLAP_MESSAGE]}
    draft.refresh_from_db()
    assert draft.status == LeaseStatus.DRAFT


def test_an_ended_lease_frees_its_unit_from_the_end_date(lease, owner):
    end(lease, owner)

    successor = services.lease_save(
        landlord=lease.landlord,
        actor=owner,
        tenants=[TenantFactory(landlord=lease.landlord)],
        unit=lease.unit,
        start_date=JUN,
        currency="EUR",
    )

    assert successor.pk is not None


def test_a_lease_ended_with_a_future_date_keeps_its_unit_let_until_then(lease, owner):
    end(lease, owner)

    before, after = date(2026, 5, 31), JUN
    units = selectors.unit_list(landlord=lease.landlord, today=before)
    assert units.get(pk=lease.unit_id).occupied
    counts = selectors.dashboard_counts(landlord=lease.landlord, today=before)
    assert counts["vacant_units"] == 0
    units = selectors.unit_list(landlord=lease.landlord, today=after)
    assert not units.get(pk=lease.unit_id).occupied


# --- lease_save ------------------------------------------------------------------------


def test_saving_an_overlapping_lease_is_a_start_date_error(lease, owner):
    with pytest.raises(ValidationError) as caught:
        services.lease_save(
            landlord=lease.landlord,
            actor=owner,
            tenants=[TenantFactory(landlord=lease.landlord)],
            unit=lease.unit,
            start_date=JUN,
            currency="EUR",
        )

    assert caught.value.message_dict == {"start_date": [services.OVERLAP_MESSAGE]}
    assert Lease.objects.filter(unit=lease.unit).count() == 1


def test_saving_a_lease_on_another_landlords_unit_is_refused(landlord, owner, other_landlord):
    their_unit = Unit.objects.filter(landlord=other_landlord).first()
    before = snapshot()

    with pytest.raises(ValidationError) as caught:
        services.lease_save(
            landlord=landlord,
            actor=owner,
            tenants=[TenantFactory(landlord=landlord)],
            unit=their_unit,
            start_date=JUN,
            currency="EUR",
        )

    assert caught.value.message_dict == {"unit": ["Not found."]}
    assert Lease.objects.filter(unit=their_unit, landlord=landlord).count() == 0
    assert snapshot()["tenants.Lease"] == before["tenants.Lease"]


def test_saving_a_lease_for_another_landlords_tenant_is_refused(lease, owner, other_landlord):
    their_tenant = TenantFactory(landlord=other_landlord)

    with pytest.raises(ValidationError) as caught:
        services.lease_save(
            landlord=lease.landlord,
            actor=owner,
            tenants=[their_tenant],
            unit=UnitFactory(property=lease.unit.property),
            start_date=JUN,
            currency="EUR",
        )

    assert caught.value.message_dict == {"tenants": ["Not found."]}


def test_an_ended_lease_cannot_be_edited(lease, owner):
    end(lease, owner)
    lease.refresh_from_db()

    with pytest.raises(ValidationError, match="cannot be edited"):
        services.lease_save(
            landlord=lease.landlord,
            actor=owner,
            instance=lease,
            tenants=list(lease.tenants.all()),
            due_days=9,
        )


def test_saving_a_copy_loaded_before_the_lease_was_ended_does_not_revive_it(lease, owner):
    stale = Lease.objects.get(pk=lease.pk)
    end(lease, owner)

    with pytest.raises(ValidationError, match="cannot be edited"):
        services.lease_save(
            landlord=lease.landlord,
            actor=owner,
            instance=stale,
            tenants=list(lease.tenants.all()),
            due_days=9,
        )

    lease.refresh_from_db()
    assert (lease.status, lease.end_date) == (LeaseStatus.ENDED, JUN)


def test_changing_the_currency_of_a_lease_with_charges_is_a_currency_error(lease, owner):
    ChargeFactory(lease=lease)

    with pytest.raises(ValidationError) as caught:
        services.lease_save(
            landlord=lease.landlord,
            actor=owner,
            instance=lease,
            tenants=list(lease.tenants.all()),
            currency="USD",
        )

    assert list(caught.value.message_dict) == ["currency"]
    lease.refresh_from_db()
    assert lease.currency == "EUR"


def test_changing_the_currency_of_a_lease_without_charges_is_allowed(lease, owner):
    services.lease_save(
        landlord=lease.landlord,
        actor=owner,
        instance=lease,
        tenants=list(lease.tenants.all()),
        currency="USD",
    )

    lease.refresh_from_db()
    assert lease.currency == "USD"


# --- charge_save -----------------------------------------------------------------------


def test_a_charge_in_another_currency_than_its_lease_is_refused(lease, owner):
    with pytest.raises(ValidationError) as caught:
        services.charge_save(
            landlord=lease.landlord,
            actor=owner,
            lease=lease,
            kind="rent",
            amount_minor=100_00,
            currency="USD",
            start_date=JAN,
        )

    assert caught.value.message_dict == {"currency": ["This lease is billed in EUR; use EUR."]}
    assert not Charge.objects.filter(lease=lease).exists()


def test_a_charge_without_a_currency_takes_the_leases(lease, owner):
    charge = services.charge_save(
        landlord=lease.landlord,
        actor=owner,
        lease=lease,
        kind="rent",
        amount_minor=100_00,
        start_date=JAN,
    )

    assert charge.currency == "EUR"


def test_a_charge_starting_before_its_lease_is_refused(lease, owner):
    with pytest.raises(ValidationError) as caught:
        services.charge_save(
            landlord=lease.landlord,
            actor=owner,
            lease=lease,
            kind="rent",
            amount_minor=100_00,
            start_date=date(2025, 12, 1),
        )

    assert "start_date" in caught.value.message_dict


def test_a_charge_with_a_zero_amount_is_refused_with_a_message(lease, owner):
    with pytest.raises(ValidationError) as caught:
        services.charge_save(
            landlord=lease.landlord,
            actor=owner,
            lease=lease,
            kind="rent",
            amount_minor=0,
            start_date=JAN,
        )

    assert caught.value.message_dict == {"amount_minor": ["The amount must be greater than zero."]}


def test_a_charge_on_another_landlords_lease_is_refused(landlord, owner, other_landlord):
    theirs = Lease.objects.filter(landlord=other_landlord).first()

    with pytest.raises(ValidationError, match="Not found"):
        services.charge_save(
            landlord=landlord,
            actor=owner,
            lease=theirs,
            kind="rent",
            amount_minor=100_00,
            start_date=JAN,
        )

    assert not Charge.objects.filter(lease=theirs).exists()


# --- seed_demo ---------------------------------------------------------------------------


@pytest.fixture
def seed(settings, tmp_path, other_landlord):
    settings.BASE_DIR = tmp_path  # the command writes .data/run/demo-logins.txt

    def run(*args):
        call_command("seed_demo", *args, stdout=StringIO())

    return run


@pytest.fixture
def demo(seed):
    seed("--no-billing")
    return Landlord.objects.filter(slug__in=["spree-living", "hudson-homes"])


def row_counts() -> dict[str, int]:
    return {label: len(rows) for label, rows in snapshot().items()}


def test_seeding_the_demo_twice_creates_nothing_the_second_time(seed):
    seed()
    first = row_counts()

    seed()

    assert row_counts() == first


def test_the_demo_has_two_landlords_in_different_time_zones_and_currencies(demo):
    assert demo.count() == 2
    assert len({landlord.timezone for landlord in demo}) == 2
    assert len({landlord.default_currency for landlord in demo}) == 2


def test_the_demo_has_a_mid_month_move_in(demo):
    starts = Lease.objects.filter(landlord__in=demo).values_list("start_date", flat=True)

    assert [start for start in starts if start.day != 1]


def test_the_demo_has_an_ended_lease(demo):
    assert Lease.objects.filter(landlord__in=demo, status=LeaseStatus.ENDED).exists()


def test_the_demo_has_a_vacant_unit(demo):
    today = date(2026, 11, 15)
    for landlord in demo:
        assert selectors.dashboard_counts(landlord=landlord, today=today)["vacant_units"] > 0


def test_the_demo_has_one_login_per_role_for_each_landlord(demo):
    for landlord in demo:
        roles = sorted(Membership.objects.filter(landlord=landlord).values_list("role", flat=True))
        assert roles == ["finance", "manager", "owner", "viewer"]


def test_the_demo_logins_can_log_in(demo, client):
    from demo.portfolio import DEMO_PASSWORD

    assert client.login(username="viewer@hudson-homes.example", password=DEMO_PASSWORD)


def test_a_charge_cannot_be_added_to_an_ended_lease(lease, owner):
    services.lease_end(
        landlord=lease.landlord, lease=lease, end_date=date(2026, 6, 1), reason="moved", actor=owner
    )
    with pytest.raises(ValidationError, match="ended or cancelled lease"):
        services.charge_save(
            landlord=lease.landlord,
            actor=owner,
            lease=lease,
            kind="parking",
            amount_minor=5_000,
            frequency="monthly",
            start_date=date(2026, 2, 1),
        )
    assert not lease.charges.filter(kind="parking").exists()
