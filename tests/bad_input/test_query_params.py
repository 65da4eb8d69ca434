"""Garbage query parameters must be a clear 400 (or an empty/ignored filter), never a 500."""

import pytest
from django.urls import reverse

from tests.tenants.helpers import snapshot

pytestmark = pytest.mark.django_db

# Every dashboard list/export with a free-text search box (`q`).
SEARCH_PAGES = [
    "property_list",
    "unit_list",
    "tenant_list",
    "lease_list",
    "meter_reading_index",
    "invoice_list",
    "invoice_list_csv",
    "payment_list",
    "payment_list_csv",
    "arrears",
]


@pytest.mark.parametrize("name", SEARCH_PAGES)
def test_a_search_containing_a_nul_character_is_not_a_server_error(owner_client, name):
    # ?q=%00 reached PostgreSQL ("text fields cannot contain NUL"): a 500.
    response = owner_client.get(reverse(f"dashboard:{name}"), {"q": "a\x00b"})

    assert response.status_code == 400
    assert response.content.decode() == "q: Contains a NUL character.\n"


def test_the_portal_pay_page_with_a_nul_currency_is_not_a_server_error(client, world):
    from tests.factories import UserFactory

    user = UserFactory(username="ada.portal@example.test")
    world.tenant.user = user
    world.tenant.save(update_fields=["user"])
    client.raise_request_exception = False
    client.force_login(user)

    response = client.get(reverse("portal:pay"), {"currency": "\x00"})

    assert response.status_code in (200, 302, 400)


def test_the_billing_run_preview_for_december_9999_is_a_month_error_not_a_500(owner_client):
    # BillingMonthForm accepts any YYYY-MM; the preview computes the month after it.
    response = owner_client.get(reverse("dashboard:billingrun_start"), {"month": "9999-12"})

    assert response.status_code in (200, 400)
    assert "month" in response.context["form"].errors


def test_starting_a_billing_run_for_december_9999_is_a_month_error_and_writes_nothing(
    owner_client,
):
    before = snapshot()

    response = owner_client.post(reverse("dashboard:billingrun_start"), {"month": "9999-12"})

    assert response.status_code in (200, 400)
    assert "month" in response.context["form"].errors
    assert snapshot() == before


@pytest.mark.parametrize("currency", ["\x00", "E\x00R", "ZZZ"])
def test_paying_in_the_portal_with_a_forged_currency_is_refused_and_writes_nothing(
    client, world, currency
):
    # The pay page's POST read `currency` straight into the balance query: a NUL
    # reached PostgreSQL ("text fields cannot contain NUL"), a 500.
    from tests.factories import UserFactory

    user = UserFactory(username="ada.portal@example.test")
    world.tenant.user = user
    world.tenant.save(update_fields=["user"])
    client.raise_request_exception = False
    client.force_login(user)
    before = snapshot()

    response = client.post(
        reverse("portal:pay"),
        {"key": "k" * 20, "currency": currency, "method": "card", "payment_method_id": "pm_x"},
        HTTP_ACCEPT="application/json",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == {"__all__": ["Unknown currency."]}
    assert snapshot() == before
