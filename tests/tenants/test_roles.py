"""What each staff role may do, written out as a table independent of ROLE_PERMISSIONS:
an allowed action answers 200/302 and changes its row; a forbidden one answers 403 and
changes nothing."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from tenants import services
from tenants.models import (
    Charge,
    Landlord,
    Lease,
    LeaseStatus,
    Membership,
    Property,
    StaffInvitation,
    Tenant,
    Unit,
)
from tests.factories import MembershipFactory

ROLES = ["owner", "manager", "finance", "viewer"]
EVERYONE = set(ROLES)
EDITORS = {"owner", "manager"}
OWNERS = {"owner"}


@dataclass(frozen=True)
class Action:
    name: str
    allowed: set[str]
    url: Callable  # (mine) -> str
    data: Callable | None = None  # (mine) -> POST data; None means GET
    state: Callable | None = None  # (mine) -> a value the action changes


def _lease_data(mine, **overrides):
    data = {
        "unit": mine.vacant_unit.pk,
        "tenants": [mine.tenant.pk],
        "start_date": "2026-03-01",
        "currency": "EUR",
        "billing_day": 1,
        "due_days": 0,
    }
    return data | overrides


ACTIONS = [
    Action("view home", EVERYONE, lambda m: reverse("dashboard:home")),
    Action("view property list", EVERYONE, lambda m: reverse("dashboard:property_list")),
    Action("view unit list", EVERYONE, lambda m: reverse("dashboard:unit_list")),
    Action("view tenant list", EVERYONE, lambda m: reverse("dashboard:tenant_list")),
    Action("view lease list", EVERYONE, lambda m: reverse("dashboard:lease_list")),
    Action(
        "view lease detail",
        EVERYONE,
        lambda m: reverse("dashboard:lease_detail", args=[m.lease.pk]),
    ),
    Action(
        "create property",
        EDITORS,
        lambda m: reverse("dashboard:property_create"),
        lambda m: {"name": "Acme Annex", "address_line1": "2 Acme Road", "city": "Berlin"},
        lambda m: Property.objects.filter(name="Acme Annex").count(),
    ),
    Action(
        "edit property",
        EDITORS,
        lambda m: reverse("dashboard:property_edit", args=[m.property.pk]),
        lambda m: {"name": "Acme Heights", "address_line1": "1 Acme Road", "city": "Berlin"},
        lambda m: Property.objects.get(pk=m.property.pk).name,
    ),
    Action(
        "create unit",
        EDITORS,
        lambda m: reverse("dashboard:unit_create"),
        lambda m: {"property": m.property.pk, "name": "Acme Flat 3"},
        lambda m: Unit.objects.filter(name="Acme Flat 3").count(),
    ),
    Action(
        "edit unit",
        EDITORS,
        lambda m: reverse("dashboard:unit_edit", args=[m.unit.pk]),
        lambda m: {"property": m.property.pk, "name": "Acme Flat 1", "bedrooms": 3},
        lambda m: Unit.objects.get(pk=m.unit.pk).bedrooms,
    ),
    Action(
        "create tenant",
        EDITORS,
        lambda m: reverse("dashboard:tenant_create"),
        lambda m: {"full_name": "Arthur Acme", "language": "en"},
        lambda m: Tenant.objects.filter(full_name="Arthur Acme").count(),
    ),
    Action(
        "edit tenant",
        EDITORS,
        lambda m: reverse("dashboard:tenant_edit", args=[m.tenant.pk]),
        lambda m: {"full_name": "Alice Acme", "phone": "+49 30 1234", "language": "en"},
        lambda m: Tenant.objects.get(pk=m.tenant.pk).phone,
    ),
    Action(
        "create lease",
        EDITORS,
        lambda m: reverse("dashboard:lease_create"),
        _lease_data,
        lambda m: Lease.objects.filter(unit=m.vacant_unit).count(),
    ),
    Action(
        "edit lease",
        EDITORS,
        lambda m: reverse("dashboard:lease_edit", args=[m.lease.pk]),
        lambda m: _lease_data(m, unit=m.unit.pk, start_date="2026-01-01", due_days=7),
        lambda m: Lease.objects.get(pk=m.lease.pk).due_days,
    ),
    Action(
        "end lease",
        EDITORS,
        lambda m: reverse("dashboard:lease_end", args=[m.lease.pk]),
        lambda m: {"end_date": "2026-06-01", "reason": "Tenant gave notice"},
        lambda m: Lease.objects.get(pk=m.lease.pk).status,
    ),
    Action(
        "add charge",
        EDITORS,
        lambda m: reverse("dashboard:charge_create", args=[m.lease.pk]),
        lambda m: {
            "kind": "parking",
            "frequency": "monthly",
            "start_date": "2026-01-01",
            "amount": "50.00",
        },
        lambda m: Charge.objects.filter(lease=m.lease).count(),
    ),
    Action("view staff page", OWNERS, lambda m: reverse("dashboard:staff")),
    Action(
        "invite staff",
        OWNERS,
        lambda m: reverse("dashboard:staff"),
        lambda m: {"email": "new.hire@example.test", "role": "viewer"},
        lambda m: StaffInvitation.objects.filter(email="new.hire@example.test").count(),
    ),
    Action(
        "revoke an invitation",
        OWNERS,
        lambda m: reverse("dashboard:invitation_revoke", args=[m.invitation.pk]),
        lambda m: {},
        lambda m: StaffInvitation.objects.get(pk=m.invitation.pk).revoked_at,
    ),
    Action(
        "change a staff role",
        OWNERS,
        lambda m: reverse("dashboard:membership_role", args=[m.membership.pk]),
        lambda m: {"role": "viewer"},
        lambda m: Membership.objects.get(pk=m.membership.pk).role,
    ),
    Action("view settings", OWNERS, lambda m: reverse("dashboard:settings")),
    Action(
        "change settings",
        OWNERS,
        lambda m: reverse("dashboard:settings"),
        lambda m: {
            "name": "Acme Lettings Ltd",
            "timezone": "Europe/Berlin",
            "default_currency": "EUR",
            "brand_color": "#123456",
        },
        lambda m: Landlord.objects.get(pk=m.lease.landlord_id).name,
    ),
    Action("view activity log", OWNERS, lambda m: reverse("dashboard:audit_list")),
]


@pytest.fixture
def as_role(client, landlord, mine):
    def login(role: str):
        client.force_login(MembershipFactory(landlord=landlord, role=role).user)
        return client

    return login


CASES = [(role, action) for action in ACTIONS for role in ROLES]


@pytest.mark.parametrize(
    ("role", "action"),
    [c for c in CASES if c[0] in c[1].allowed],
    ids=[f"{r}-may-{a.name}" for r, a in CASES if r in a.allowed],
)
def test_a_role_may_do_what_the_table_allows(as_role, mine, role, action):
    client = as_role(role)
    before = action.state(mine) if action.state else None

    if action.data is None:
        response = client.get(action.url(mine))
        assert response.status_code == 200
    else:
        response = client.post(action.url(mine), action.data(mine))
        assert response.status_code == 302, response.context and response.context.get("form")
        assert action.state(mine) != before


@pytest.mark.parametrize(
    ("role", "action"),
    [c for c in CASES if c[0] not in c[1].allowed],
    ids=[f"{r}-may-not-{a.name}" for r, a in CASES if r not in a.allowed],
)
def test_a_role_may_not_do_what_the_table_forbids(as_role, mine, role, action):
    client = as_role(role)
    before = action.state(mine) if action.state else None

    if action.data is None:
        response = client.get(action.url(mine))
    else:
        response = client.post(action.url(mine), action.data(mine))

    assert response.status_code == 403
    if action.state:
        assert action.state(mine) == before


@pytest.mark.parametrize("role", ["finance", "viewer"])
def test_a_role_without_edit_rights_cannot_even_open_the_lease_forms(as_role, mine, role):
    client = as_role(role)

    assert client.get(reverse("dashboard:lease_create")).status_code == 403
    assert client.get(reverse("dashboard:lease_edit", args=[mine.lease.pk])).status_code == 403
    assert client.get(reverse("dashboard:lease_end", args=[mine.lease.pk])).status_code == 403
    assert mine.lease.status == LeaseStatus.ACTIVE


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, mine):
    response = client.get(reverse("dashboard:lease_list"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_the_last_owner_cannot_be_demoted(landlord, owner):
    membership = Membership.objects.get(user=owner, landlord=landlord)

    with pytest.raises(ValidationError, match="at least one owner"):
        services.membership_set_role(
            landlord=landlord, membership=membership, role="manager", actor=owner
        )

    membership.refresh_from_db()
    assert membership.role == "owner"


def test_the_last_owner_demoting_themselves_through_the_staff_page_is_refused(
    staff_client, landlord, owner, mine
):
    membership = Membership.objects.get(user=owner, landlord=landlord)

    response = staff_client.post(
        reverse("dashboard:membership_role", args=[membership.pk]), {"role": "viewer"}, follow=True
    )

    assert "A landlord needs at least one owner." in response.content.decode()
    membership.refresh_from_db()
    assert membership.role == "owner"


def test_an_owner_can_be_demoted_while_another_owner_remains(landlord, owner, mine):
    second = MembershipFactory(landlord=landlord, role="owner")
    membership = Membership.objects.get(user=owner, landlord=landlord)

    services.membership_set_role(
        landlord=landlord, membership=membership, role="manager", actor=second.user
    )

    membership.refresh_from_db()
    assert membership.role == "manager"


def test_a_role_that_does_not_exist_is_refused(staff_client, mine):
    response = staff_client.post(
        reverse("dashboard:membership_role", args=[mine.membership.pk]), {"role": "admin"}
    )

    assert response.status_code == 302
    mine.membership.refresh_from_db()
    assert mine.membership.role == "manager"
