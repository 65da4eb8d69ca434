"""The main pages on a phone and a desktop: styled, nothing overflowing sideways, the phone
menu usable, and a screenshot of each in test-artifacts/ for a human to look at."""

import io
import re

from django.core.management import call_command
from django.db.models import Count
from django.utils import timezone
from playwright.sync_api import Page, expect

from invoices.services import billing_run_execute
from tenants.models import Landlord, Lease
from tests.browser.conftest import assert_no_horizontal_overflow, assert_styled, log_in

OWNER = "owner@spree-living.example"


def shoot(page: Page, artifacts, name: str) -> None:
    assert_styled(page)
    assert_no_horizontal_overflow(page)
    height = page.evaluate("() => document.documentElement.scrollHeight")
    width = page.viewport_size["width"]
    page.screenshot(
        path=str(artifacts / f"{name}.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": width, "height": min(height, 1800)},
    )


def login_error(page: Page, artifacts, name: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(OWNER)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_label("Password")).to_have_accessible_description("This field is required.")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("enter a correct")
    shoot(page, artifacts, name)


def test_pages_fit_phone_and_desktop(app: Page, open_phone, artifacts):
    call_command("seed_demo", no_billing=True, stdout=io.StringIO())
    # One month billed, so the monthly summary shows its table rather than its empty state.
    spree = Landlord.objects.get(slug="spree-living")
    today = timezone.localdate(timezone.now(), spree.tz)
    billing_run_execute(
        landlord=spree,
        period_start=today.replace(day=1),
        as_of=today,
        started_by="test",
        on_schedule=True,
    )
    desktop = app
    login_error(desktop, artifacts, "login-error-desktop")
    log_in(desktop, OWNER)
    phone = open_phone(storage_state=desktop.context.storage_state())
    login_error(open_phone(), artifacts, "login-error-phone")

    # The phone menu opens and closes (and is a real, focusable control).
    phone.goto("/app/")
    nav = phone.get_by_role("navigation").first
    expect(nav).to_be_hidden()
    phone.get_by_label("Menu").click()
    expect(nav.get_by_role("link", name="Leases")).to_be_visible()
    shoot(phone, artifacts, "nav-open-phone")
    phone.get_by_label("Menu").click()
    expect(nav).to_be_hidden()
    expect(desktop.get_by_role("navigation").first).to_be_visible()

    # The lease with the most charges: the widest charges table.
    lease = (
        Lease.objects.filter(landlord__slug="spree-living", status="active")
        .annotate(n=Count("charges"))
        .order_by("-n", "pk")
        .first()
    )
    pages = [
        ("/app/", "home"),
        (f"/app/leases/{lease.pk}/", "lease-detail"),
        ("/app/arrears/", "arrears"),
        ("/app/dunning/", "dunning-policies"),
        ("/app/dunning/policies/new/", "dunning-policy-form"),
        ("/app/dunning/messages/overdue_notice/de/", "dunning-message-form"),
        ("/app/reports/rent-roll/", "rent-roll"),
        ("/app/reports/monthly/", "monthly-summary"),
        (f"/app/leases/{lease.pk}/end/", "lease-end"),
    ]
    for page, device in ((phone, "phone"), (desktop, "desktop")):
        for path, name in pages:
            page.goto(path)
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            shoot(page, artifacts, f"{name}-{device}")

        page.goto("/app/leases/new/")
        page.get_by_label(re.compile("^Start date")).fill("2026-06-01")
        page.get_by_label(re.compile("^End date")).fill("2026-05-01")
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".field-errors")).to_have_count(3)
        shoot(page, artifacts, f"lease-form-errors-{device}")
