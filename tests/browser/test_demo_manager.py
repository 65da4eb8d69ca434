"""The demo portfolio seen by Spree Living's manager: only Spree's leases, on desktop and phone."""

import io

import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from tenants.models import Landlord, Lease, Property
from tests.browser.conftest import assert_no_horizontal_overflow, assert_styled, log_in

MANAGER = "manager@spree-living.example"


@pytest.fixture
def demo(transactional_db):
    call_command("seed_demo", no_billing=True, stdout=io.StringIO())
    spree = Landlord.objects.get(slug="spree-living")
    hudson = Landlord.objects.get(slug="hudson-homes")
    return spree, hudson


def test_manager_sees_only_their_landlords_leases(app: Page, demo, open_phone, artifacts):
    spree, hudson = demo
    spree_leases = Lease.objects.filter(landlord=spree).order_by("-start_date", "-pk")
    newest = spree_leases.select_related("unit__property").first()
    hudson_properties = list(
        Property.objects.filter(landlord=hudson).values_list("name", flat=True)
    )
    assert hudson_properties and spree_leases.count() > 25

    page = app
    log_in(page, MANAGER)
    expect(page.locator(".account")).to_contain_text("Spree Living GmbH")
    expect(page.locator(".account")).to_contain_text("Manager")

    page.get_by_role("navigation").get_by_role("link", name="Leases").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Leases")
    assert_styled(page)
    rows = page.get_by_role("table").locator("tbody tr")
    expect(rows).to_have_count(25)
    expect(rows.first).to_contain_text(f"{newest.unit.property.name} · {newest.unit.name}")
    expect(page.get_by_role("navigation", name="Pages")).to_contain_text(
        f"Page 1 of 2 · {spree_leases.count()} in all"
    )
    # Seeded leases of each of Spree's buildings are listed, Hudson's are not.
    table = page.get_by_role("table")
    expect(table).to_contain_text("Kastanienallee 12")
    for name in hudson_properties:
        expect(table).not_to_contain_text(name)
    expect(page.get_by_text("Hudson Homes")).to_have_count(0)

    page.screenshot(path=str(artifacts / "lease-list-manager.png"))

    # Searching for Hudson's building finds nothing; their lease pages are a 404.
    page.get_by_role("searchbox", name="Search").fill(hudson_properties[0])
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No lease matches.")).to_be_visible()
    hudson_lease = Lease.objects.filter(landlord=hudson).first()
    response = page.goto(f"/app/leases/{hudson_lease.pk}/")
    assert response.status == 404

    # Page two holds the rest; the ended leases are there too.
    page.goto("/app/leases/?page=2")
    expect(rows).to_have_count(spree_leases.count() - 25)
    page.goto("/app/leases/?status=ended")
    expect(rows).to_have_count(spree_leases.filter(status="ended").count())
    expect(rows.first.get_by_text("Ended")).to_be_visible()

    # The same list on a phone, with the session of the desktop browser.
    phone = open_phone(storage_state=page.context.storage_state())
    phone.goto("/app/leases/")
    expect(phone.get_by_role("heading", level=1)).to_have_text("Leases")
    expect(phone.get_by_role("table").locator("tbody tr")).to_have_count(25)
    assert_no_horizontal_overflow(phone)
    phone.screenshot(path=str(artifacts / "lease-list-phone.png"))
