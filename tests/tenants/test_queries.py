"""List pages run a fixed number of queries, however many rows they show (no N+1)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tenants.models import AuditEvent
from tests.factories import (
    ChargeFactory,
    LeaseFactory,
    PropertyFactory,
    TenantFactory,
    UnitFactory,
    UserFactory,
)

MAX_QUERIES = 12
LIST_PAGES = [
    "dashboard:lease_list",
    "dashboard:unit_list",
    "dashboard:property_list",
    "dashboard:tenant_list",
    "dashboard:home",
    "dashboard:audit_list",
]


def portfolio(landlord, leases: int) -> None:
    """`leases` leases, each on its own unit, spread over a few properties, with two
    tenants, a charge and an audit event (by its own actor) each."""
    properties = PropertyFactory.create_batch(3, landlord=landlord)
    for n in range(leases):
        unit = UnitFactory(property=properties[n % 3])
        lease = LeaseFactory(unit=unit)
        lease.tenants.add(TenantFactory(landlord=landlord))
        ChargeFactory(lease=lease)
        AuditEvent.objects.create(
            landlord=landlord, actor=UserFactory(), action="lease.create", summary=str(lease)
        )


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("page", LIST_PAGES)
def test_a_list_page_with_30_leases_stays_under_the_query_budget(
    staff_client, landlord, page, django_assert_max_num_queries
):
    portfolio(landlord, 30)

    with django_assert_max_num_queries(MAX_QUERIES):
        response = staff_client.get(reverse(page))

    assert response.status_code == 200


@pytest.mark.parametrize("page", LIST_PAGES)
def test_a_list_page_runs_as_many_queries_for_30_leases_as_for_3(staff_client, landlord, page):
    portfolio(landlord, 3)
    few = queries_for(staff_client, reverse(page))

    portfolio(landlord, 27)
    many = queries_for(staff_client, reverse(page))

    assert many == few


def test_a_lease_search_with_30_matches_stays_under_the_query_budget(
    staff_client, landlord, django_assert_max_num_queries
):
    portfolio(landlord, 30)

    with django_assert_max_num_queries(MAX_QUERIES):
        response = staff_client.get(reverse("dashboard:lease_list"), {"q": "Renter"})

    assert len(response.context["page"].object_list) == 25


def test_a_property_page_with_30_units_stays_under_the_query_budget(
    staff_client, landlord, django_assert_max_num_queries
):
    prop = PropertyFactory(landlord=landlord)
    for _ in range(30):
        LeaseFactory(unit=UnitFactory(property=prop))

    with django_assert_max_num_queries(MAX_QUERIES):
        response = staff_client.get(reverse("dashboard:property_detail", args=[prop.pk]))

    assert response.status_code == 200
