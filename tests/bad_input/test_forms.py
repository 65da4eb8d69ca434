"""Bad form input must be a clear error on the field it came from and write nothing."""

import pytest
from django.urls import reverse

from dunning.models import DunningPolicy
from tenants.models import Charge
from tests.factories import UnitFactory
from tests.tenants.helpers import snapshot

pytestmark = pytest.mark.django_db


def test_a_manual_payment_received_in_year_one_is_a_date_error_not_a_500(owner_client, world):
    # Landlord A is in Europe/Berlin: midnight of 0001-01-01 there is before datetime.min
    # in UTC, so hashing the ledger posting overflows (OverflowError → 500).
    before = snapshot()

    response = owner_client.post(
        reverse("dashboard:tenant_payment_record", args=[world.tenant.pk]),
        {
            "amount": "10.00",
            "currency": "EUR",
            "method": "cash",
            "received_on": "0001-01-01",
            "token": "adv-year-one",
        },
    )

    assert response.status_code == 200
    assert "received_on" in response.context["form"].errors
    assert snapshot() == before


def test_a_deposit_too_large_to_store_is_an_error_on_the_deposit_field(owner_client, world):
    # Django's own bigint bound was a form-wide error that did not name the field.
    unit = UnitFactory(property=world.lease.unit.property)
    before = snapshot()

    response = owner_client.post(
        reverse("dashboard:lease_create"),
        {
            "unit": unit.pk,
            "tenants": [world.tenant.pk],
            "start_date": "2027-03-01",
            "currency": "EUR",
            "billing_day": 1,
            "due_days": 0,
            "deposit": "99999999999999999999999",
        },
    )

    assert response.status_code == 200
    assert "deposit" in response.context["form"].errors
    assert snapshot() == before


def test_a_charge_amount_too_large_to_store_is_an_error_on_the_amount_field(owner_client, world):
    before = snapshot()

    response = owner_client.post(
        reverse("dashboard:charge_create", args=[world.lease.pk]),
        {
            "kind": "parking",
            "frequency": "monthly",
            "start_date": "2027-01-01",
            "amount": "99999999999999999999999",
        },
    )

    assert response.status_code == 200
    assert "amount" in response.context["form"].errors
    assert snapshot() == before


def test_a_charge_the_billing_run_could_not_total_is_refused_on_the_amount_field(
    owner_client, world
):
    # Saved, a charge of 2**63-1 minor units made the landlord's next run die with an
    # OverflowError and stay "running" with none of its leases billed.
    response = owner_client.post(
        reverse("dashboard:charge_create", args=[world.lease.pk]),
        {
            "kind": "parking",
            "frequency": "monthly",
            "start_date": "2027-01-01",
            "amount": "92233720368547758.07",
        },
    )
    assert response.status_code == 200
    assert response.context["form"].errors["amount"] == [
        "Enter an amount of at most 10,000,000,000.00 EUR."
    ]
    assert not Charge.objects.filter(lease=world.lease, kind="parking").exists()


def test_late_fee_tiers_larger_than_the_fee_limit_are_refused_on_the_tiers_field(
    owner_client, world
):
    # Saved, such a tier made every late-fee step fail in the hourly tick ("bigint out of
    # range"); flat, daily and cap amounts already stopped at dunning.forms.MAX_MINOR.
    from dunning.services import policy_default_get_or_create

    policy = policy_default_get_or_create(landlord=world.landlord)
    before = list(DunningPolicy.objects.filter(pk=policy.pk).values_list())
    data = {
        "name": policy.name,
        "send_window_start": "08:00",
        "send_window_end": "20:00",
        "fee_kind": "tiered",
        "fee_tiers": "0: 99999999999999999999999.00",
        "retry_days": "",
        "steps-TOTAL_FORMS": "1",
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "30",
        "steps-0-offset_days": "5",
        "steps-0-action": "late_fee",
        "steps-0-channels": "email",
        "save": "1",
    }

    response = owner_client.post(reverse("dashboard:dunning_policy_edit", args=[policy.pk]), data)

    assert response.status_code == 200
    assert "fee_tiers" in response.context["form"].errors
    assert list(DunningPolicy.objects.filter(pk=policy.pk).values_list()) == before


@pytest.mark.parametrize(
    ("field", "changes", "message"),
    [
        ("currency", {"currency": "USD"}, "This tenant is billed in EUR."),
        (
            "received_on",
            {"received_on": "1999-01-01"},
            "Enter a date from 2025-01-01 (a year before the first lease).",
        ),
    ],
)
def test_a_manual_payment_in_a_currency_or_on_a_day_outside_the_tenancy_is_refused(
    owner_client, world, field, changes, message
):
    # Accepted, a USD payment from a tenant billed in EUR became credit nothing could
    # use, and one dated 1999 posted into a year long reported.
    before = snapshot()
    response = owner_client.post(
        reverse("dashboard:tenant_payment_record", args=[world.tenant.pk]),
        {
            "amount": "100.00",
            "currency": "EUR",
            "method": "bank_transfer",
            "received_on": "2026-12-01",
            "token": f"bad-{field}",
        }
        | changes,
    )
    assert response.status_code == 200
    assert response.context["form"].errors[field] == [message]
    assert snapshot() == before
