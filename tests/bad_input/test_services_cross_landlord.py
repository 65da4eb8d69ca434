"""Services called with another landlord's objects must refuse and write nothing."""

import pytest
from django.core.exceptions import ObjectDoesNotExist, ValidationError

from dunning import services as dunning_services
from payments import services as payment_services
from payments.models import Method, SavedPaymentMethod
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_clearing_the_escalation_of_another_landlords_tenant_is_refused(world):
    # "Cleared the escalation of Bo Other" (B's tenant's name, B's tenant id).
    before = AuditEvent.objects.count()

    with pytest.raises((ValidationError, ObjectDoesNotExist)):
        dunning_services.escalation_clear(landlord=world.landlord, tenant=world.other_tenant)

    assert AuditEvent.objects.count() == before
    assert not AuditEvent.objects.filter(
        landlord=world.landlord, object_type="Tenant", object_id=str(world.other_tenant.pk)
    ).exists()


@pytest.mark.parametrize("turn_on", [True, False])
def test_setting_autopay_for_another_landlords_tenant_is_refused(world, turn_on):
    saved = SavedPaymentMethod.objects.create(
        landlord=world.other,
        tenant=world.other_tenant,
        stripe_payment_method_id="pm_b_card",
        method=Method.CARD,
        brand="visa",
        last4="4242",
    )
    before = AuditEvent.objects.count()

    with pytest.raises((ValidationError, ObjectDoesNotExist)):
        payment_services.autopay_set(
            landlord=world.landlord,
            tenant=world.other_tenant,
            saved_method=saved if turn_on else None,
            actor=None,
        )

    assert AuditEvent.objects.count() == before
