"""Fixtures for the foundation's guarantees: landlord A ("Acme") with a small portfolio
and landlord B ("Brightside") with a look-alike one, so a missing scope shows B's rows."""

from dataclasses import dataclass
from datetime import date

import pytest

from tenants.models import (
    AuditEvent,
    Charge,
    Lease,
    Membership,
    Property,
    StaffInvitation,
    Tenant,
    Unit,
)
from tests.factories import (
    ChargeFactory,
    LeaseFactory,
    MembershipFactory,
    PropertyFactory,
    StaffInvitationFactory,
    TenantFactory,
    UnitFactory,
)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    # PBKDF2 at full strength costs ~0.3 s per user; these tests create dozens.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Portfolio:
    property: Property
    unit: Unit
    vacant_unit: Unit
    tenant: Tenant
    lease: Lease
    charge: Charge
    membership: Membership
    invitation: StaffInvitation


def _portfolio(landlord, *, prefix: str, street: str, renter: str) -> Portfolio:
    prop = PropertyFactory(landlord=landlord, name=f"{prefix} Tower", address_line1=street)
    unit = UnitFactory(property=prop, name=f"{prefix} Flat 1")
    vacant = UnitFactory(property=prop, name=f"{prefix} Flat 2")
    tenant = TenantFactory(
        landlord=landlord, full_name=renter, email=f"{renter.split()[0].lower()}@example.test"
    )
    lease = LeaseFactory(unit=unit, tenants=[tenant], start_date=date(2026, 1, 1))
    charge = ChargeFactory(lease=lease, description=f"{prefix} rent")
    membership = MembershipFactory(
        landlord=landlord, role="manager", user__username=f"manager@{prefix.lower()}.test"
    )
    invitation = StaffInvitationFactory(
        landlord=landlord, email=f"invitee@{prefix.lower()}.test", invited_by=membership.user
    )
    AuditEvent.objects.create(landlord=landlord, action="test.seed", summary=f"{prefix} was seeded")
    return Portfolio(prop, unit, vacant, tenant, lease, charge, membership, invitation)


@pytest.fixture
def mine(landlord, owner) -> Portfolio:
    """Landlord A's portfolio (the logged-in owner's)."""
    return _portfolio(landlord, prefix="Acme", street="1 Acme Road", renter="Alice Acme")


@pytest.fixture
def theirs(other_landlord) -> Portfolio:
    """Landlord B's look-alike portfolio: every name says Brightside."""
    return _portfolio(
        other_landlord, prefix="Brightside", street="9 Brightside Road", renter="Bianca Brightside"
    )
