"""factory-boy factories. Every landlord-owned factory derives its landlord from its
parent so that objects built for landlord B never silently attach to landlord A."""

from datetime import date, timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from tenants.models import (
    Charge,
    ChargeFrequency,
    ChargeKind,
    Landlord,
    Lease,
    LeaseStatus,
    Membership,
    Property,
    Role,
    StaffInvitation,
    Tenant,
    Unit,
)

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}@example.test")
    email = factory.SelfAttribute("username")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class LandlordFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Landlord

    name = factory.Sequence(lambda n: f"Landlord {n}")
    slug = factory.Sequence(lambda n: f"landlord-{n}")
    timezone = "Europe/Berlin"
    default_currency = "EUR"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    landlord = factory.SubFactory(LandlordFactory)
    role = Role.OWNER


class StaffInvitationFactory(factory.django.DjangoModelFactory):
    """A pending invitation (its token is unknown: only the hash is stored)."""

    class Meta:
        model = StaffInvitation

    landlord = factory.SubFactory(LandlordFactory)
    email = factory.Sequence(lambda n: f"invitee{n}@example.test")
    role = Role.VIEWER
    token_hash = factory.Sequence(lambda n: f"{n:064x}")
    invited_by = factory.SubFactory(UserFactory)
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=7))


class PropertyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Property

    landlord = factory.SubFactory(LandlordFactory)
    name = factory.Sequence(lambda n: f"Property {n}")
    address_line1 = factory.Sequence(lambda n: f"{n} Main Street")
    city = "Berlin"


class UnitFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Unit

    property = factory.SubFactory(PropertyFactory)
    landlord = factory.SelfAttribute("property.landlord")
    name = factory.Sequence(lambda n: f"Apt {n}")


class TenantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tenant

    landlord = factory.SubFactory(LandlordFactory)
    full_name = factory.Sequence(lambda n: f"Renter {n}")
    email = factory.Sequence(lambda n: f"renter{n}@example.test")


class LeaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lease
        skip_postgeneration_save = True

    unit = factory.SubFactory(UnitFactory)
    landlord = factory.SelfAttribute("unit.landlord")
    start_date = date(2026, 1, 1)
    end_date = None
    currency = factory.SelfAttribute("landlord.default_currency")
    billing_day = 1
    status = LeaseStatus.ACTIVE

    @factory.post_generation
    def tenants(obj, create, extracted, **kwargs):
        if not create:
            return
        obj.tenants.set(
            extracted if extracted is not None else [TenantFactory(landlord=obj.landlord)]
        )


class ChargeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Charge

    lease = factory.SubFactory(LeaseFactory)
    landlord = factory.SelfAttribute("lease.landlord")
    kind = ChargeKind.RENT
    amount_minor = 120000
    currency = factory.SelfAttribute("lease.currency")
    frequency = ChargeFrequency.MONTHLY
    start_date = factory.SelfAttribute("lease.start_date")
