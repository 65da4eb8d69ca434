"""Paying back credit, the edges: one form token used again (another currency, another
tenant, another amount), the ledger's text in English whatever the staff's language,
two submits at once, credit in two currencies."""

import threading
from datetime import UTC, date, datetime

import pytest
from django.core.exceptions import ValidationError
from django.db import connections
from django.urls import reverse
from django.utils import translation

from ledger.models import LedgerTransaction
from payments import selectors, services
from payments.models import Method
from tests.factories import LeaseFactory, MembershipFactory, PropertyFactory, UnitFactory

RENT = 120_000


@pytest.fixture(autouse=True)
def _today(time_machine):
    time_machine.move_to(datetime(2026, 12, 7, 12, tzinfo=UTC), tick=False)


def pay(world, amount, currency="EUR"):
    services.manual_payment_record(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=amount,
        currency=currency,
        method=Method.BANK_TRANSFER,
        reference="in",
        received_on=date(2026, 12, 2),
        actor=None,
    )


def two_currencies(world):
    """430.00 EUR of credit (overpaid) and 300.00 USD (a USD lease's deposit, say)."""
    unit = UnitFactory(property=PropertyFactory(landlord=world.landlord))
    LeaseFactory(unit=unit, tenants=[world.tenant], currency="USD")
    pay(world, 2 * RENT + 43_000)
    pay(world, 30_000, "USD")
    assert selectors.tenant_credits(landlord=world.landlord, tenant=world.tenant) == {
        "EUR": 43_000,
        "USD": 30_000,
    }


@pytest.mark.django_db
def test_the_same_form_token_sent_again_for_the_other_currency_records_that_one_too(client, world):
    """Pay back the EUR, press Back (the same form, the same hidden token), choose USD
    and submit: that is a second pay-back, and it is recorded."""
    two_currencies(world)
    client.force_login(MembershipFactory(landlord=world.landlord, role="owner").user)
    url = reverse("dashboard:tenant_credit_pay_back", args=[world.tenant.pk])
    token = client.get(url).context["form"].initial["token"]
    fields = {"method": "bank_transfer", "reference": "", "paid_on": "2026-12-06", "token": token}
    assert client.post(url, {**fields, "amount": "430.00", "currency": "EUR"}).status_code == 302

    usd = client.post(url, {**fields, "amount": "300.00", "currency": "USD"})

    assert usd.status_code == 302
    assert selectors.tenant_credits(landlord=world.landlord, tenant=world.tenant) == {}
    # The same EUR submit again records nothing more; another amount is refused.
    assert client.post(url, {**fields, "amount": "430.00", "currency": "EUR"}).status_code == 302
    other_amount = client.post(url, {**fields, "amount": "1.00", "currency": "EUR"})
    assert "already used" in other_amount.content.decode()


@pytest.mark.django_db
def test_a_key_used_again_for_another_tenant_is_that_tenants_own_request(world):
    from tests.invoices.factories import lease_with_charges

    pay(world, 2 * RENT + 43_000)
    other = lease_with_charges(landlord=world.landlord, renter="Cy Second").tenants.get()
    services.tenant_credit_pay_back(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=43_000,
        currency="EUR",
        method=Method.CASH,
        reference="",
        paid_on=date(2026, 12, 6),
        actor=None,
        idempotency_key="k",
    )
    with pytest.raises(ValidationError):
        services.tenant_credit_pay_back(
            landlord=world.landlord,
            tenant=other,
            amount_minor=1,
            currency="EUR",
            method=Method.CASH,
            reference="",
            paid_on=date(2026, 12, 6),
            actor=None,
            idempotency_key="k",
        )
    assert LedgerTransaction.objects.filter(idempotency_key__endswith=":k").count() == 1


@pytest.mark.django_db
def test_the_ledger_description_is_english_in_a_german_request(world):
    pay(world, 2 * RENT + 43_000)
    with translation.override("de"):
        posting = services.tenant_credit_pay_back(
            landlord=world.landlord,
            tenant=world.tenant,
            amount_minor=43_000,
            currency="EUR",
            method=Method.BANK_TRANSFER,
            reference="",
            actor=None,
            paid_on=date(2026, 12, 6),
            idempotency_key="de",
        )
    assert posting.description == "Credit paid back to Ada Tenant by bank transfer"


@pytest.mark.django_db(transaction=True)
def test_two_submits_of_one_form_at_once_record_once(world, time_machine):
    pay(world, 2 * RENT + 43_000)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def submit():
        try:
            barrier.wait(5)
            results.append(
                services.tenant_credit_pay_back(
                    landlord=world.landlord,
                    tenant=world.tenant,
                    amount_minor=43_000,
                    currency="EUR",
                    method=Method.CASH,
                    reference="",
                    actor=None,
                    paid_on=date(2026, 12, 6),
                    idempotency_key="race",
                ).pk
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(set(results)) == 1
    key = f"credit-payback:{world.tenant.pk}:EUR:race"
    assert LedgerTransaction.objects.filter(idempotency_key=key).count() == 1


@pytest.mark.django_db
def test_the_ledger_description_is_english_when_staff_browse_in_german(client, world):
    pay(world, 2 * RENT + 43_000)
    client.force_login(MembershipFactory(landlord=world.landlord, role="owner").user)
    url = reverse("dashboard:tenant_credit_pay_back", args=[world.tenant.pk])
    token = client.get(url).context["form"].initial["token"]
    response = client.post(
        url,
        {
            "amount": "430.00",
            "currency": "EUR",
            "method": "bank_transfer",
            "reference": "",
            "paid_on": "2026-12-06",
            "token": token,
        },
        HTTP_ACCEPT_LANGUAGE="de",
    )
    assert response.status_code == 302
    posting = LedgerTransaction.objects.get(
        idempotency_key=f"credit-payback:{world.tenant.pk}:EUR:staff-form:{token}"
    )
    assert posting.description == "Credit paid back to Ada Tenant by bank transfer"
