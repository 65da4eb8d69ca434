"""Partial payments as a landlord setting (PaymentSettings) and the amount rules of
payment_intent_create: less than due refused on `amount` unless allowed, more than
due accepted and kept as tenant credit, up to one month's rent beyond what is owed."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from payments import services
from payments.models import Payment, PaymentSettings
from tenants.models import AuditEvent
from tests.factories import TenantFactory
from tests.payments.helpers import balance_of, pi_event, start

pytestmark = pytest.mark.django_db
RENT = 120_000


def test_partial_payments_are_allowed_until_staff_turn_them_off(world):
    assert services.payment_settings_get(landlord=world.landlord).allow_partial is True
    assert not PaymentSettings.objects.exists()  # reading writes nothing

    services.payment_settings_update(landlord=world.landlord, actor=None, allow_partial=False)

    assert services.payment_settings_get(landlord=world.landlord).allow_partial is False
    assert services.payment_settings_get(landlord=world.other).allow_partial is True
    (event,) = AuditEvent.objects.filter(action="payment_settings.update")
    assert (event.landlord, event.data) == (world.landlord, {"allow_partial": False})


def test_less_than_due_is_refused_with_an_error_on_the_amount(world):
    with pytest.raises(ValidationError) as refused:
        start(world, 50_000, invoice=world.december, allow_partial=False)

    assert refused.value.message_dict == {"amount": ["Pay the full amount due: €1,200.00."]}
    assert not Payment.objects.filter(landlord=world.landlord).exists()


def test_less_than_due_is_accepted_when_partial_payments_are_allowed(world, deliver):
    payment = start(world, 50_000, invoice=world.december, allow_partial=True)
    deliver(pi_event(payment, "succeeded"))

    assert balance_of(world.landlord, world.december) == RENT - 50_000


def test_more_than_due_is_accepted_without_partial_payments_and_becomes_credit(world, deliver):
    payment = start(world, 2 * RENT + 10_000, allow_partial=False)
    deliver(pi_event(payment, "succeeded"))

    payment.refresh_from_db()
    assert [(a.invoice_id, a.amount_minor) for a in payment.allocations.order_by("position")] == [
        (world.november.pk, RENT),
        (world.december.pk, RENT),
        (None, 10_000),
    ]
    assert (
        services.tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR")
        == 10_000
    )


def test_up_to_a_months_rent_beyond_what_is_owed_is_accepted_as_credit(world, deliver):
    # Owed: November and December. The largest rent invoice is one month's rent.
    payment = start(world, 3 * RENT, invoice=world.december, allow_partial=False)
    deliver(pi_event(payment, "succeeded"))

    assert (
        services.tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR")
        == RENT
    )


@pytest.mark.parametrize("invoice", [None, "december"])
def test_more_than_a_months_rent_beyond_what_is_owed_is_refused_and_nothing_is_written(
    world, fake_stripe, invoice
):
    with pytest.raises(ValidationError) as refused:
        start(world, 3 * RENT + 1, invoice=getattr(world, invoice) if invoice else None)

    assert refused.value.message_dict == {
        "amount": [
            "You can pay at most €3,600.00 now: what you owe plus one month's rent in advance."
        ]
    }
    assert not Payment.objects.filter(landlord=world.landlord).exists()
    assert fake_stripe.keys("payment_intent_create") == []


def test_the_limit_is_per_payment_so_a_tenant_in_credit_can_still_pay_a_month_ahead(world, deliver):
    deliver(pi_event(start(world, 3 * RENT, key="portal-ahead"), "succeeded"))

    with pytest.raises(ValidationError) as refused:
        start(world, RENT + 1, key="portal-more")
    start(world, RENT, key="portal-month")

    assert refused.value.message_dict == {
        "amount": [
            "You can pay at most €1,200.00 now: what you owe plus one month's rent in advance."
        ]
    }
    assert Payment.objects.filter(landlord=world.landlord).count() == 2


def test_a_tenant_never_billed_cannot_pay_ahead(world, fake_stripe):
    newcomer = TenantFactory(landlord=world.landlord, full_name="Nina New")

    with pytest.raises(ValidationError) as refused:
        services.payment_intent_create(
            landlord=world.landlord,
            tenant=newcomer,
            amount_minor=RENT,
            currency="EUR",
            idempotency_key="portal-new",
        )

    assert refused.value.message_dict == {"amount": ["There is nothing to pay in advance now."]}
    assert not Payment.objects.filter(tenant=newcomer).exists()
