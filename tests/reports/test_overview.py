"""The overview (/app/): how this month's rent stands (billed, collected, open, past
due, from the ledger), the latest billing run and arrears; landlord B's money never
counts; before billing it says so."""

from datetime import UTC, date, datetime

import pytest
from django.urls import reverse

from invoices.selectors import period_collection
from invoices.services import invoice_void
from payments.services import manual_payment_record
from tests.factories import MembershipFactory
from tests.invoices.factories import PERIOD, bill_december, lease_with_charges


@pytest.fixture(autouse=True)
def _today(time_machine):
    time_machine.move_to(datetime(2026, 12, 20, 11, tzinfo=UTC), tick=False)


@pytest.fixture
def owner(client, landlord):
    client.force_login(MembershipFactory(landlord=landlord, role="owner").user)
    return client


def _pay(landlord, lease, amount):
    manual_payment_record(
        landlord=landlord,
        tenant=lease.tenants.get(),
        amount_minor=amount,
        currency="EUR",
        method="bank_transfer",
        reference="",
        received_on=date(2026, 12, 3),
        actor=None,
    )


@pytest.fixture
def december(landlord, other_landlord):
    """Acme: Ada (1,200.00, paid), Bob (900.00, 400.00 paid), Cy (700.00, voided).
    Landlord B billed December too."""
    ada = lease_with_charges(landlord=landlord, renter="Ada Lovelace")
    bob = lease_with_charges(landlord=landlord, renter="Bob Builder", rent_minor=90_000)
    lease_with_charges(landlord=landlord, renter="Cy Void", rent_minor=70_000)
    invoices = bill_december(landlord=landlord)
    invoice_void(invoice=invoices[2], reason="Billed in error", actor=None)
    _pay(landlord, ada, 120_000)
    _pay(landlord, bob, 40_000)
    lease_with_charges(landlord=other_landlord, renter="Bianca Other")
    bill_december(landlord=other_landlord)


def test_the_months_collection_comes_from_the_ledger(december, landlord):
    [eur] = period_collection(landlord=landlord, period_start=PERIOD, today=date(2026, 12, 20))
    assert (eur.currency, eur.invoices) == ("EUR", 2)
    assert eur.billed_minor == 210_000
    assert eur.open_minor == 50_000
    assert eur.past_due_minor == 50_000  # due on 6 December
    assert eur.collected_minor == 160_000 and eur.collected_percent == 76
    [before_due] = period_collection(
        landlord=landlord, period_start=PERIOD, today=date(2026, 12, 6)
    )
    assert before_due.past_due_minor == 0


def test_the_overview_shows_rent_run_and_arrears(december, owner):
    body = owner.get(reverse("dashboard:home")).content.decode()
    assert "Rent for December 2026" in body
    assert "€1,600.00</strong> collected of €2,100.00 billed on 2 invoices (76 %)" in body
    assert "€500.00 past due" in body
    assert "Latest billing run" in body
    assert "owed by 1 tenant" in body
    assert "USD" not in body and "Bianca" not in body
    assert f"{reverse('dashboard:invoice_list')}?period=2026-12" in body


def test_before_billing_the_overview_says_so(landlord, other_landlord, owner):
    lease_with_charges(landlord=landlord, renter="Ada Lovelace")
    lease_with_charges(landlord=other_landlord, renter="Bianca Other")
    bill_december(landlord=other_landlord)
    body = owner.get(reverse("dashboard:home")).content.decode()
    assert "Not billed yet." in body
    assert "Nobody owes anything" in body
    assert "Latest billing run" not in body


def test_a_new_landlord_sees_the_set_up_steps_not_money(landlord, other_landlord, owner):
    body = owner.get(reverse("dashboard:home")).content.decode()
    assert "Let's set up your portfolio" in body
    assert "Rent for" not in body
