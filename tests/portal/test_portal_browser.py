"""The tenant portal in Chromium, against a real localstripe process and the live
server: staff invite a tenant, the tenant sets a password, pays an open invoice with
a test card in the Card Element (localstripe's stand-in Stripe.js), localstripe's
signed webhook arrives, and the invoice is paid in the portal and on the staff
invoice page with balanced ledger entries. A declined card shows the decline and
posts nothing. Screenshots (phone, 390x844) go to test-artifacts/portal-*.png.
"""

from __future__ import annotations

import re
from datetime import date

import pytest
from django.core import mail
from playwright.sync_api import Page, expect

from invoices.selectors import invoice_statuses
from ledger.models import LedgerTransaction
from ledger.selectors import ledger_verify, trial_balance
from payments import services as payment_services
from payments.models import EventStatus, Method, Payment, PaymentStatus, StripeEvent
from portal import services as portal_services
from tenants.models import Tenant
from tests.browser.conftest import (
    ARTIFACTS,
    DESKTOP,
    PHONE,
    TIMEOUT_MS,
    assert_no_horizontal_overflow,
)
from tests.browser.conftest import browser_type_launch_args as browser_type_launch_args
from tests.factories import PASSWORD, MembershipFactory
from tests.invoices.factories import emails_off, lease_with_charges
from tests.payments.conftest import DECEMBER, NOVEMBER, bill
from tests.payments.test_localstripe import wait_for

USES_LOCALSTRIPE = True
TENANT_PASSWORD = "sunny-balcony-window-42"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def shoot(page: Page, name: str) -> None:
    """A screenshot for a person to look at; nothing may stick out sideways."""
    assert_no_horizontal_overflow(page)
    ARTIFACTS.mkdir(exist_ok=True)
    height = page.evaluate("() => document.documentElement.scrollHeight")
    width = page.viewport_size["width"]
    page.screenshot(
        path=str(ARTIFACTS / f"portal-{name}.png"),
        full_page=True,
        clip={"x": 0, "y": 0, "width": width, "height": min(height, 2200)},
    )


def fill_card(page: Page, number: str) -> None:
    """Type a test card into the Card Element. localstripe's stand-in renders plain
    inputs (placeholders number / exp_month / exp_year / cvc / postal_code) where
    Stripe renders an iframe."""
    element = page.locator("#card-element")
    element.get_by_placeholder("number").fill(number)
    element.get_by_placeholder("exp_month").fill("12")
    element.get_by_placeholder("exp_year").fill("30")
    element.get_by_placeholder("cvc").fill("123")
    element.get_by_placeholder("postal_code").fill("10115")


@pytest.fixture
def scene(settings, stripe_env, localstripe_url, landlord, other_landlord):
    settings.STRIPE_JS_URL = f"{localstripe_url}/js.stripe.com/v3/"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_localstripe"
    emails_off(landlord=landlord)
    emails_off(landlord=other_landlord)
    lease = lease_with_charges(
        landlord=landlord,
        renter="Ada Tenant",
        email="ada@example.test",
        property_name="Linden Hof",
        parking_minor=8_000,
    )
    lease_with_charges(landlord=other_landlord, renter="Bo Other", property_name="Bo Towers")
    november, december = bill(landlord, NOVEMBER)[0], bill(landlord, DECEMBER)[0]
    bill(other_landlord, NOVEMBER)
    staff = MembershipFactory(landlord=landlord, role="manager").user
    mail.outbox.clear()
    return {
        "tenant": lease.tenants.get(),
        "november": november,
        "december": december,
        "staff": staff,
        "landlord": landlord,
    }


def test_a_tenant_is_invited_pays_by_card_and_a_declined_card_posts_nothing(
    browser, live_server, scene
):
    tenant, november, december = scene["tenant"], scene["november"], scene["december"]
    landlord = scene["landlord"]
    desktop = browser.new_context(base_url=live_server.url, locale="en-GB", **DESKTOP)
    phone = browser.new_context(base_url=live_server.url, locale="en-GB", **PHONE)
    for context in (desktop, phone):
        context.set_default_timeout(TIMEOUT_MS)
    try:
        # Staff invite the tenant from the tenant page.
        staff = desktop.new_page()
        staff.goto("/accounts/login/")
        staff.get_by_label("Email").fill(scene["staff"].email)
        staff.get_by_label("Password").fill(PASSWORD)
        staff.get_by_role("button", name="Log in").click()
        expect(staff).to_have_url(re.compile(r"/app/$"))
        staff.goto(f"/app/tenants/{tenant.pk}/")
        staff.get_by_role("button", name="Invite to portal").click()
        expect(staff.get_by_role("status")).to_contain_text("Portal invitation sent to ada@")
        expect(staff.get_by_text("Portal invitation sent", exact=True)).to_be_visible()
        staff.screenshot(path=str(ARTIFACTS / "portal-staff-tenant-invited-desktop.png"))
        (message,) = mail.outbox
        assert message.to == ["ada@example.test"]
        link = re.search(r"http://\S+/portal/invite/\S+/", message.body)[0]

        # The tenant accepts on their phone and lands on the portal's home page.
        page = phone.new_page()
        page.goto(link)
        expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Ada Tenant")
        shoot(page, "invitation-phone")
        page.get_by_label("Choose a password").fill(TENANT_PASSWORD)
        page.get_by_label("Password again").fill(TENANT_PASSWORD)
        page.get_by_role("button", name="Set password and open portal").click()
        expect(page).to_have_url(re.compile(r"/portal/$"))
        expect(page.get_by_role("status")).to_contain_text("Welcome, Ada Tenant")
        expect(page.locator(".balance-card")).to_contain_text("€2,560.00")
        expect(page.locator(".next-due")).to_contain_text(november.number)
        shoot(page, "welcome-phone")

        # Log out and in again through the portal's own login page.
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(re.compile(r"/portal/login/$"))
        page.get_by_label("Email").fill("ada@example.test")
        page.get_by_label("Password").fill(TENANT_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/portal/$"))

        # Pay the overdue November invoice with a card that works.
        page.locator(".next-due").get_by_role("link", name="Pay now").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Pay invoice {november.number}")
        expect(page.get_by_label(re.compile("^Amount to pay"))).to_have_value("1280.00")
        expect(page.locator("#card-element input")).to_have_count(5)
        fill_card(page, "4242424242424242")
        shoot(page, "pay-phone")
        page.get_by_role("button", name="Pay now").click()
        expect(page).to_have_url(re.compile(r"/portal/payments/\d+/$"))
        expect(page.locator("#payment-status")).to_contain_text("Payment received")
        shoot(page, "paid-phone")
        payment = Payment.objects.get(tenant=tenant, invoice=november)
        assert payment.status == PaymentStatus.SUCCEEDED
        assert payment.amount_minor == 128_000

        # localstripe's signed webhook reaches the live server and finds it posted.
        assert wait_for(
            lambda: StripeEvent.objects.filter(
                type="payment_intent.succeeded", status=EventStatus.PROCESSED
            ).exists()
        ), list(StripeEvent.objects.values_list("type", "status", "error"))
        postings = LedgerTransaction.objects.filter(
            landlord=landlord, document_kind="payment", document_id=payment.pk
        )
        assert postings.count() == 1
        assert sum(e.amount_minor for e in postings.get().entries.all()) == 0

        page.goto(f"/portal/invoices/{november.pk}/")
        expect(page.get_by_role("heading", level=1)).to_contain_text("Paid")
        expect(page.get_by_text("Paid. Thank you!")).to_be_visible()
        shoot(page, "invoice-paid-phone")

        # The staff invoice page agrees, with the payment's balanced entries.
        staff.goto(f"/app/invoices/{november.pk}/")
        expect(staff.get_by_role("heading", level=1)).to_contain_text("Paid")
        expect(staff.get_by_text(f"Payment {payment.pk} (Card)")).to_be_visible()
        expect(staff.get_by_text("Cr receivable €1,280.00")).to_have_count(1)
        expect(staff.get_by_text("Dr cash_in_transit €1,280.00")).to_be_visible()
        staff.screenshot(
            path=str(ARTIFACTS / "portal-staff-invoice-paid-desktop.png"), full_page=True
        )

        # December with a card that is declined: the reason, and nothing posted.
        page.goto("/portal/invoices/")
        page.get_by_role("row", name=re.compile(december.number)).get_by_role(
            "link", name="Pay"
        ).click()
        fill_card(page, "4000000000000341")
        page.get_by_role("button", name="Pay now").click()
        errors = page.locator("#pay-errors")
        expect(errors).to_contain_text("Payment failed: Your card was declined.")
        expect(errors).to_contain_text("Nothing was charged")
        expect(page.get_by_role("button", name="Pay now")).to_be_enabled()
        shoot(page, "declined-phone")
        declined = Payment.objects.get(tenant=tenant, invoice=december)
        assert declined.status == PaymentStatus.FAILED
        assert not LedgerTransaction.objects.filter(
            landlord=landlord, document_kind="payment", document_id=declined.pk
        ).exists()

        page.goto("/portal/payments/")
        expect(page.get_by_role("row", name=re.compile("Failed"))).to_contain_text(
            "Your card was declined."
        )
        shoot(page, "payments-phone")
        statuses = invoice_statuses(
            landlord=landlord, invoices=[november, december], today=december.issue_date
        )
        assert statuses == {november.pk: "paid", december.pk: "open"}

        # Then with a card whose bank wants 3-D Secure: localstripe's Stripe.js shows
        # its challenge when the card is set up and again for the payment.
        page.goto(f"/portal/pay/?invoice={december.pk}")
        fill_card(page, "4000000000003220")
        page.get_by_role("button", name="Pay now").click()
        page.get_by_role("button", name="Complete authentication").click()
        expect(page.locator("#pay-progress")).to_contain_text("Confirm the payment with your bank")
        shoot(page, "3ds-phone")
        page.get_by_role("button", name="Complete authentication").click()
        expect(page).to_have_url(re.compile(r"/portal/payments/\d+/$"))
        expect(page.locator("#payment-status")).to_contain_text("Payment received")
        statuses = invoice_statuses(
            landlord=landlord, invoices=[november, december], today=december.issue_date
        )
        assert statuses == {november.pk: "paid", december.pk: "paid"}
        assert trial_balance(landlord=landlord).is_balanced
        assert ledger_verify(landlord=landlord).ok
    finally:
        desktop.close()
        phone.close()


def test_every_portal_page_fits_a_phone_and_a_desktop(browser, live_server, scene):
    tenant, landlord = scene["tenant"], scene["landlord"]
    _invitation, token = portal_services.tenant_invitation_create(
        tenant=tenant, email=tenant.email, invited_by=scene["staff"]
    )
    portal_services.tenant_invitation_accept(token=token, password=TENANT_PASSWORD)
    payment_services.manual_payment_record(
        landlord=landlord,
        tenant=tenant,
        amount_minor=50_000,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="Transfer November",
        received_on=date(2026, 11, 20),
        actor=None,
        invoice=scene["november"],
    )
    pages = [
        ("/portal/", "home"),
        ("/portal/invoices/", "invoices"),
        (f"/portal/invoices/{scene['november'].pk}/", "invoice"),
        ("/portal/leases/", "leases"),
        ("/portal/payments/", "payment-list"),
        (f"/portal/payments/{Payment.objects.get(tenant=tenant).pk}/", "receipt"),
        ("/portal/cards/", "cards"),
        ("/portal/profile/", "profile"),
    ]
    for device, options in (("phone", PHONE), ("desktop", DESKTOP)):
        context = browser.new_context(base_url=live_server.url, locale="en-GB", **options)
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            page.goto("/portal/login/")
            shoot(page, f"login-{device}")
            page.get_by_label("Email").fill(tenant.email)
            page.get_by_label("Password").fill(TENANT_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page).to_have_url(re.compile(r"/portal/$"))
            for path, name in pages:
                page.goto(path)
                expect(page.get_by_role("heading", level=1)).to_be_visible()
                expect(page.locator("header.portal-top")).to_have_css(
                    "background-color", "rgb(31, 78, 121)"
                )
                # Every navigation link is on screen (none cut off at the edge).
                for link in page.locator(".portal-nav a").all():
                    box = link.bounding_box()
                    assert box["x"] >= 0
                    assert box["x"] + box["width"] <= page.viewport_size["width"], name
                # Tables and cards stay inside the content column.
                column = page.locator("main").bounding_box()
                for table in page.locator("main table").all():
                    box = table.bounding_box()
                    assert box["x"] + box["width"] <= column["x"] + column["width"] + 1, name
                shoot(page, f"{name}-{device}")
        finally:
            context.close()

    # In German, the tenant's language (longer words: the navigation still fits).
    Tenant.objects.filter(pk=tenant.pk).update(language="de")
    context = browser.new_context(base_url=live_server.url, locale="en-GB", **PHONE)
    try:
        page = context.new_page()
        page.goto("/portal/login/")
        page.get_by_label("Email").fill(tenant.email)
        page.get_by_label("Password").fill(TENANT_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", level=1)).to_have_text("Hallo, Ada Tenant")
        expect(page.locator(".next-due")).to_contain_text("Jetzt zahlen")
        for link in page.locator(".portal-nav a").all():
            box = link.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= page.viewport_size["width"]
        shoot(page, "home-de-phone")
        page.goto(f"/portal/pay/?invoice={scene['november'].pk}")
        expect(page.get_by_role("button", name="Jetzt zahlen")).to_be_visible()
        shoot(page, "pay-de-phone")
    finally:
        context.close()


def test_a_tenant_pays_by_sepa_direct_debit_and_sees_processing_then_the_result(
    browser, live_server, scene
):
    """SEPA from the pay page with localstripe's stand-in Stripe.js (no IBAN Element
    there: the page falls back to a plain IBAN input, still sent to Stripe only). A
    debit the bank returns shows processing, then the failure with its reason and
    nothing posted; a good IBAN is paid (localstripe settles at once)."""
    tenant, november, december = scene["tenant"], scene["november"], scene["december"]
    landlord = scene["landlord"]
    _invitation, token = portal_services.tenant_invitation_create(
        tenant=tenant, email=tenant.email, invited_by=scene["staff"]
    )
    portal_services.tenant_invitation_accept(token=token, password=TENANT_PASSWORD)
    context = browser.new_context(base_url=live_server.url, locale="en-GB", **PHONE)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto("/portal/login/")
        page.get_by_label("Email").fill(tenant.email)
        page.get_by_label("Password").fill(TENANT_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(r"/portal/$"))

        page.goto(f"/portal/pay/?invoice={november.pk}")
        expect(page.locator("#sepa-mandate")).to_be_hidden()
        page.get_by_label("SEPA Direct Debit").check()
        expect(page.locator("#card-element")).to_be_hidden()
        expect(page.locator("#sepa-mandate")).to_contain_text(
            "you authorise (A) Acme Lettings and Stripe"
        )
        expect(page.get_by_label("Account holder")).to_have_value("Ada Tenant")
        page.locator("#iban-input").fill("DE62 3704 0044 0532 0130 01")
        shoot(page, "sepa-phone")
        page.get_by_role("button", name="Pay now").click()
        expect(page).to_have_url(re.compile(r"/portal/payments/\d+/$"))
        status = page.locator("#payment-status")
        expect(status).to_contain_text(re.compile("Processing|Payment failed"))
        if "Processing" in status.inner_text():
            expect(status).to_contain_text("Bank debits take a few business days")
            shoot(page, "sepa-processing-phone")
        # localstripe returns this IBAN's debit; the page reloads with the result.
        expect(status).to_contain_text("Payment failed", timeout=20_000)
        expect(status).to_contain_text("Your card was declined.")  # localstripe's words
        expect(status).to_contain_text("Your bank did not pay this debit")
        shoot(page, "sepa-failed-phone")
        failed = Payment.objects.get(tenant=tenant, invoice=november)
        assert (failed.method, failed.status) == (Method.SEPA_DEBIT, PaymentStatus.FAILED)
        assert not LedgerTransaction.objects.filter(
            landlord=landlord, document_kind="payment", document_id=failed.pk
        ).exists()

        page.goto(f"/portal/pay/?invoice={december.pk}")
        page.get_by_label("SEPA Direct Debit").check()
        page.locator("#iban-input").fill("DE89370400440532013000")
        page.get_by_role("button", name="Pay now").click()
        expect(page).to_have_url(re.compile(r"/portal/payments/\d+/$"))
        expect(page.locator("#payment-status")).to_contain_text("Payment received", timeout=20_000)
        paid = Payment.objects.get(tenant=tenant, invoice=december)
        assert paid.method == Method.SEPA_DEBIT
        assert invoice_statuses(
            landlord=landlord, invoices=[november, december], today=december.issue_date
        ) == {november.pk: "overdue", december.pk: "paid"}
        assert ledger_verify(landlord=landlord).ok
    finally:
        context.close()
