"""A new landlord signs up in the browser and lets their first unit."""

import re
from datetime import date

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PASSWORD_FACTORY, assert_styled, log_in
from tests.factories import LeaseFactory, MembershipFactory, TenantFactory, UnitFactory


def field(page: Page, label: str):
    """The form control whose label starts with `label` (labels of required fields end in "*")."""
    return page.get_by_label(re.compile(rf"^{re.escape(label)}\b"))


def save(page: Page) -> None:
    page.get_by_role("button", name="Save").click()


def test_sign_up_and_let_a_unit(app: Page):
    page = app
    page.goto("/accounts/signup/")
    assert_styled(page)
    field(page, "Company or landlord name").fill("Harbour Flats Ltd")
    field(page, "Your name").fill("Grace Holloway")
    field(page, "Email").fill("grace@harbour-flats.example")
    field(page, "Password").fill("tide-table-lighthouse-42")
    field(page, "Timezone").select_option("Europe/London")
    field(page, "Currency").fill("GBP")
    page.get_by_role("button", name="Create account").click()

    expect(page).to_have_url(re.compile(r"/app/$"))
    expect(page.get_by_role("status")).to_contain_text("Welcome to Rentledger, Harbour Flats Ltd")
    expect(page.get_by_role("heading", level=1)).to_have_text("Harbour Flats Ltd")
    expect(page.get_by_text("Time zone Europe/London · billing in GBP")).to_be_visible()

    # Property, from the empty-portfolio call to action.
    page.get_by_role("link", name="Add your first property").click()
    expect(page.get_by_role("heading", name="New property")).to_be_visible()
    field(page, "Name").fill("Quayside House")
    field(page, "Address line1").fill("3 Wharf Road")
    field(page, "City").fill("Bristol")
    field(page, "Postal code").fill("BS1 4RN")
    save(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Quayside House")
    expect(page.get_by_text("This property has no units yet.")).to_be_visible()

    # Unit, from the property page (the property is preselected).
    page.get_by_role("link", name="Add unit").click()
    expect(field(page, "Property")).to_have_value(re.compile(r"\d+"))
    field(page, "Name").fill("Flat 2A")
    field(page, "Bedrooms").fill("2")
    save(page)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Flat 2A")
    unit_url = page.url

    # Tenant, through the main navigation.
    page.get_by_role("navigation").get_by_role("link", name="Tenants").click()
    expect(page.get_by_role("heading", name="Tenants")).to_be_visible()
    page.get_by_role("link", name="New tenant").click()
    field(page, "Full name").fill("Omar Brennan")
    field(page, "Email").fill("omar@example.test")
    save(page)
    expect(page.get_by_role("heading", level=1)).to_have_text("Omar Brennan")

    # Lease, from the unit page (the unit is preselected).
    page.goto(unit_url)
    page.get_by_role("link", name="New lease").click()
    expect(page.get_by_role("heading", name="New lease")).to_be_visible()
    expect(field(page, "Unit")).to_have_value(re.compile(r"\d+"))
    expect(field(page, "Currency")).to_have_value("GBP")
    field(page, "Tenants").select_option(label="Omar Brennan")
    field(page, "Start date").fill("2026-03-15")
    field(page, "Billing day").fill("1")
    field(page, "Due days").fill("7")
    field(page, "Deposit").fill("1,900.00")
    save(page)
    expect(page.get_by_role("status")).to_have_text("Lease saved.")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Flat 2A")
    expect(page.get_by_text("No charges: this lease would not be billed.")).to_be_visible()
    expect(page.get_by_text("£1,900.00")).to_be_visible()

    # The monthly rent, on the lease page.
    page.get_by_role("link", name="Add charge").click()
    field(page, "Kind").select_option(label="Rent")
    field(page, "Description").fill("Monthly rent")
    field(page, "Frequency").select_option(label="Monthly")
    expect(field(page, "Start date")).to_have_value("2026-03-15")
    field(page, "Amount").fill("950.00")
    save(page)
    expect(page.get_by_role("status")).to_have_text("Charge saved.")
    charges = page.get_by_role("table")
    expect(charges).to_contain_text("Monthly rent")
    expect(charges).to_contain_text("£950.00")

    # The lease list shows the new lease.
    page.get_by_role("navigation").get_by_role("link", name="Leases").click()
    expect(page).to_have_url(re.compile(r"/app/leases/$"))
    rows = page.get_by_role("table").locator("tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Quayside House · Flat 2A")
    expect(rows.first).to_contain_text("Omar Brennan")
    expect(rows.first).to_contain_text("2026-03-15")
    expect(rows.first).to_contain_text("open-ended")


@pytest.fixture
def owner_with_unit(transactional_db):
    membership = MembershipFactory(landlord__name="Canal Lettings", landlord__slug="canal")
    unit = UnitFactory(
        property__landlord=membership.landlord, property__name="Lock Keeper's", name="Apt 1"
    )
    tenant = TenantFactory(landlord=membership.landlord, full_name="Ida Marsh")
    return membership.user, unit, tenant


def test_lease_ending_before_it_starts_is_refused(app: Page, owner_with_unit):
    page = app
    user, unit, tenant = owner_with_unit
    log_in(page, user.email, PASSWORD_FACTORY)

    page.goto("/app/leases/new/")
    field(page, "Unit").select_option(str(unit.pk))
    field(page, "Tenants").select_option(str(tenant.pk))
    field(page, "Start date").fill("2026-06-01")
    field(page, "End date").fill("2026-05-01")
    save(page)

    end_date = field(page, "End date")
    expect(end_date).to_have_value("2026-05-01")
    expect(end_date).to_have_attribute("aria-invalid", "true")
    # The message is shown next to the field and announced with it.
    expect(end_date).to_have_accessible_description(
        re.compile(r"The end date must be after the start date\.")
    )
    expect(page.locator(".field-errors")).to_have_count(1)
    expect(page.locator(".field-errors")).to_have_text("The end date must be after the start date.")
    # What was typed is kept.
    expect(field(page, "Start date")).to_have_value("2026-06-01")
    expect(field(page, "Tenants")).to_have_values([str(tenant.pk)])

    page.get_by_role("navigation").get_by_role("link", name="Leases").click()
    expect(page.get_by_text("No leases yet.")).to_be_visible()
    expect(page.get_by_role("table")).to_have_count(0)


def test_overlapping_lease_is_refused(app: Page, owner_with_unit):
    page = app
    user, unit, tenant = owner_with_unit
    LeaseFactory(unit=unit, start_date=date(2026, 1, 1), tenants=[tenant])
    log_in(page, user.email, PASSWORD_FACTORY)

    page.goto(f"/app/leases/new/?unit={unit.pk}&tenants={tenant.pk}")
    field(page, "Start date").fill("2026-09-01")
    save(page)

    expect(field(page, "Start date")).to_have_accessible_description(
        re.compile(r"This unit already has a lease for these dates\.")
    )
    page.get_by_role("navigation").get_by_role("link", name="Leases").click()
    expect(page.get_by_role("table").locator("tbody tr")).to_have_count(1)
