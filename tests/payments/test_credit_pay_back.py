"""Paying a tenant's credit back (after they moved out, or overpaid): staff record the
transfer, cheque or cash they sent; the ledger moves it from the tenant's credit to the
bank. Never more than the credit left after open invoices are paid from it; a double
submit records once; another landlord's tenant is out of reach."""

from datetime import UTC, date, datetime

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from ledger.models import LedgerTransaction
from payments import selectors, services
from payments.models import Method
from tenants.models import AuditEvent
from tests.factories import MembershipFactory
from tests.payments.conftest import bill
from tests.payments.helpers import balance_of, books_ok

pytestmark = pytest.mark.django_db

RENT = 120_000


@pytest.fixture(autouse=True)
def _today(time_machine):
    time_machine.move_to(datetime(2026, 12, 7, 12, tzinfo=UTC), tick=False)


def overpay(world, amount):
    """Pay `amount` against the tenant's two open invoices (2 × 1,200.00)."""
    services.manual_payment_record(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=amount,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="Transfer",
        received_on=date(2026, 12, 2),
        actor=None,
    )


def pay_back(world, amount, *, key="k1", tenant=None, landlord=None, **kwargs):
    return services.tenant_credit_pay_back(
        landlord=landlord or world.landlord,
        tenant=tenant or world.tenant,
        amount_minor=amount,
        currency=kwargs.pop("currency", "EUR"),
        method=kwargs.pop("method", Method.BANK_TRANSFER),
        reference=kwargs.pop("reference", "SEPA back"),
        paid_on=kwargs.pop("paid_on", date(2026, 12, 6)),
        actor=None,
        idempotency_key=key,
    )


def credit(world, tenant=None, landlord=None):
    return selectors.tenant_credits(
        landlord=landlord or world.landlord, tenant=tenant or world.tenant
    ).get("EUR", 0)


def test_paying_back_moves_the_credit_to_the_bank_once(world):
    overpay(world, 2 * RENT + 43_000)
    assert credit(world) == 43_000
    other_credit = selectors.tenant_credits(landlord=world.other, tenant=world.other_tenant)

    posting = pay_back(world, 43_000)
    again = pay_back(world, 43_000)  # the same form submitted twice

    assert again.pk == posting.pk
    assert credit(world) == 0
    assert posting.effective_at == world.landlord.day_start(date(2026, 12, 6))
    amounts = sorted(
        (e.account.code, e.amount_minor) for e in posting.entries.select_related("account")
    )
    assert amounts == [("bank", -43_000), ("tenant_credit", 43_000)]
    assert "SEPA back" in posting.description
    assert AuditEvent.objects.filter(landlord=world.landlord, action="credit.pay_back").count() == 1
    books_ok(world.landlord)
    assert selectors.tenant_credits(landlord=world.other, tenant=world.other_tenant) == other_credit


def test_more_than_the_credit_is_refused_naming_the_amount_and_nothing_is_posted(world):
    overpay(world, 2 * RENT + 43_000)
    before = LedgerTransaction.objects.filter(landlord=world.landlord).count()

    with pytest.raises(ValidationError) as error:
        pay_back(world, 43_001)

    assert "amount_minor" in error.value.message_dict
    assert "€430.00" in error.value.message_dict["amount_minor"][0]
    assert LedgerTransaction.objects.filter(landlord=world.landlord).count() == before
    assert credit(world) == 43_000


def test_credit_pays_what_is_still_owed_before_any_is_paid_back(world):
    overpay(world, 2 * RENT + 43_000)
    # January is billed; the credit sweep has not run yet, so the credit still sits there.
    (january,) = bill(world.landlord, date(2027, 1, 1))
    held = services.tenant_credit_balance
    assert held(landlord=world.landlord, tenant=world.tenant, currency="EUR") == 43_000
    assert credit(world) == 0  # nothing to offer: the credit is needed for January

    with pytest.raises(ValidationError) as error:
        pay_back(world, 43_000)

    assert "no credit" in error.value.message_dict["amount_minor"][0]
    # The refusal rolled back the credit's use too: nothing half-written.
    assert held(landlord=world.landlord, tenant=world.tenant, currency="EUR") == 43_000
    assert balance_of(world.landlord, january) == RENT


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("amount_minor", {"amount": 0}),
        ("method", {"method": Method.CARD}),
        ("currency", {"currency": "XXZ"}),
        ("paid_on", {"paid_on": date(2026, 12, 8)}),
        ("paid_on", {"paid_on": date(2025, 12, 1)}),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(world, field, kwargs):
    overpay(world, 2 * RENT + 43_000)
    amount = kwargs.pop("amount", 10_000)
    with pytest.raises(ValidationError) as error:
        pay_back(world, amount, **kwargs)
    assert field in error.value.message_dict
    assert credit(world) == 43_000


def test_another_landlords_tenant_is_refused(world):
    overpay(world, 2 * RENT + 43_000)
    with pytest.raises(ValidationError):
        pay_back(world, 100, tenant=world.other_tenant)


def test_the_page_records_it_and_shows_an_empty_state_without_credit(client, world):
    client.force_login(MembershipFactory(landlord=world.landlord, role="owner").user)
    url = reverse("dashboard:tenant_credit_pay_back", args=[world.tenant.pk])

    assert "holds no credit" in client.get(url).content.decode()
    statement = reverse("dashboard:tenant_statement", args=[world.tenant.pk])
    assert url not in client.get(statement).content.decode()

    overpay(world, 2 * RENT + 43_000)
    assert url in client.get(statement).content.decode()
    form = client.get(url).context["form"]
    assert form.initial["amount"] == "430.00"
    fields = {
        "amount": "500.00",
        "currency": "EUR",
        "method": "bank_transfer",
        "reference": "",
        "paid_on": "2026-12-06",
        "token": form.initial["token"],
    }
    too_much = client.post(url, fields)
    assert too_much.status_code == 200
    assert "€430.00" in str(too_much.context["form"].errors["amount"])
    assert credit(world) == 43_000

    done = client.post(url, {**fields, "amount": "430.00"})
    assert done.status_code == 302 and done.url == statement
    assert credit(world) == 0
    # Another landlord's tenant is not found.
    other = reverse("dashboard:tenant_credit_pay_back", args=[world.other_tenant.pk])
    assert client.get(other).status_code == 404


def test_staff_without_money_rights_cannot_open_it(client, world):
    client.force_login(MembershipFactory(landlord=world.landlord, role="finance").user)
    url = reverse("dashboard:tenant_credit_pay_back", args=[world.tenant.pk])
    assert client.get(url).status_code == 403
