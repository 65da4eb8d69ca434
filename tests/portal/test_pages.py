"""The portal's pages with data (and a neighbour and a second landlord present):
balance from the ledger, next due invoice, leases, invoices with derived status and
PDF, payments with honest states, profile; signing in and out."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.urls import reverse

from payments import services as payment_services
from payments.models import Method, Payment, PaymentStatus, Source
from portal import services as portal_services
from tenants.models import AuditEvent, Tenant
from tests.factories import PASSWORD, TenantFactory, UserFactory
from tests.payments.conftest import deliver as deliver
from tests.payments.helpers import pi_event


@pytest.fixture
def me(portal_world):
    return portal_world.me


def text(response) -> str:
    return response.content.decode()


def test_home_shows_the_balance_and_the_next_due_invoice_with_pay_now(tenant_client, me):
    page = text(tenant_client.get(reverse("portal:home")))

    assert "Hello, Ada Tenant" in page
    assert "€2,400.00" in page  # November + December, from the ledger
    assert f"Invoice {me.november.number}, due Nov. 6, 2026" in page
    assert f'href="/portal/pay/?invoice={me.november.pk}">Pay now' in page
    assert "Pay the whole balance (€2,400.00)" in page
    assert "No payments yet." in page


def test_home_shows_credit_in_the_tenants_favour(tenant_client, me):
    payment_services.manual_payment_record(
        landlord=me.landlord,
        tenant=me.tenant,
        amount_minor=250_000,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="Ada transfer",
        received_on=date(2026, 11, 20),
        actor=None,
    )

    page = text(tenant_client.get(reverse("portal:home")))

    assert "€100.00" in page
    assert "credit in your favour" in page
    assert "Pay now" not in page


def test_a_tenant_with_nothing_yet_sees_helpful_empty_pages(client, landlord, other_landlord):
    tenant = TenantFactory(landlord=landlord, full_name="Neva New")
    tenant.user = UserFactory(username="neva@example.test")
    tenant.save()
    client.force_login(tenant.user)

    home = text(client.get(reverse("portal:home")))
    leases = text(client.get(reverse("portal:leases")))
    invoices = text(client.get(reverse("portal:invoices")))
    payments = text(client.get(reverse("portal:payments")))

    assert "No invoices yet. When your landlord issues your first invoice" in home
    assert "No leases to show yet" in leases
    assert "Nothing to pay right now" in invoices
    assert "No payments yet. When you pay an invoice" in payments


def test_leases_show_unit_dates_and_charges(tenant_client, me):
    page = text(tenant_client.get(reverse("portal:leases")))

    assert "Linden Hof · Apt" in page
    assert "Jan. 1, 2026" in page
    assert "open-ended" in page
    assert "Monthly rent" in page
    assert "€1,200.00" in page


def test_invoices_are_split_into_to_pay_and_past_with_status_from_the_ledger(
    tenant_client, me, fake_stripe, time_machine
):
    # Before December's due date, so "open" does not turn "overdue" with the calendar.
    time_machine.move_to(datetime(2026, 11, 25, 12, 0, tzinfo=UTC), tick=False)
    payment_services.manual_payment_record(
        landlord=me.landlord,
        tenant=me.tenant,
        amount_minor=120_000,
        currency="EUR",
        method=Method.CASH,
        reference="",
        received_on=date(2026, 11, 20),
        actor=None,
        invoice=me.november,
    )

    response = tenant_client.get(reverse("portal:invoices"))

    to_pay, past = response.context["open_rows"], response.context["past_rows"]
    assert [(r.invoice, r.status) for r in to_pay] == [(me.december, "open")]
    assert [(r.invoice, r.status) for r in past] == [(me.november, "paid")]


def test_list_pages_use_a_fixed_number_of_queries(tenant_client, me, django_assert_max_num_queries):
    for _ in range(3):
        payment_services.manual_payment_record(
            landlord=me.landlord,
            tenant=me.tenant,
            amount_minor=1_000,
            currency="EUR",
            method=Method.CASH,
            reference="",
            received_on=date(2026, 11, 20),
            actor=None,
        )
    for name in ("home", "invoices", "payments", "leases"):
        with django_assert_max_num_queries(12):
            assert tenant_client.get(reverse(f"portal:{name}")).status_code == 200


def test_the_invoice_pdf_downloads(tenant_client, me):
    response = tenant_client.get(reverse("portal:invoice_pdf", args=[me.november.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert f'filename="{me.november.number}.pdf"' in response["Content-Disposition"]


def test_the_invoice_page_shows_lines_and_the_payments_towards_it(tenant_client, me):
    payment = payment_services.manual_payment_record(
        landlord=me.landlord,
        tenant=me.tenant,
        amount_minor=20_000,
        currency="EUR",
        method=Method.CHEQUE,
        reference="",
        received_on=date(2026, 11, 20),
        actor=None,
        invoice=me.november,
    )

    page = text(tenant_client.get(reverse("portal:invoice_detail", args=[me.november.pk])))

    assert "Partially paid" in page
    assert "€1,000.00" in page  # still open
    assert "Monthly rent" in page
    assert reverse("portal:payment_detail", args=[payment.pk]) in page


def test_the_invoice_page_shows_the_period_with_its_last_day_like_the_pdf(tenant_client, me):
    # Stored half-open, [1 Nov, 1 Dec); the tenant reads the last day it covers.
    assert (me.november.period_start, me.november.period_end) == (
        date(2026, 11, 1),
        date(2026, 12, 1),
    )

    page = text(tenant_client.get(reverse("portal:invoice_detail", args=[me.november.pk])))

    assert "<dt>Period</dt><dd>Nov. 1, 2026 – Nov. 30, 2026</dd>" in page
    assert "Dec. 1, 2026" not in page


def test_payments_show_processing_succeeded_and_failed_with_the_reason(tenant_client, me):
    common = {
        "landlord": me.landlord,
        "tenant": me.tenant,
        "currency": "EUR",
        "source": Source.STRIPE,
    }
    processing = Payment.objects.create(
        **common,
        amount_minor=120_000,
        method=Method.SEPA_DEBIT,
        status=PaymentStatus.PROCESSING,
        idempotency_key="t-1",
        stripe_payment_intent_id="pi_t1",
    )
    Payment.objects.create(
        **common,
        amount_minor=120_000,
        method=Method.CARD,
        status=PaymentStatus.FAILED,
        failure_message="Your card has expired.",
        idempotency_key="t-2",
    )
    # An attempt that never reached Stripe is not the tenant's business.
    Payment.objects.create(**common, amount_minor=5, method=Method.CARD, idempotency_key="t-3")

    page = text(tenant_client.get(reverse("portal:payments")))
    detail = text(tenant_client.get(reverse("portal:payment_detail", args=[processing.pk])))

    assert "Processing" in page
    assert "Failed" in page and "Your card has expired." in page
    assert "€0.05" not in page
    assert "Bank debits take a few business days" in detail
    assert 'data-poll-url="/portal/payments/' in detail


def test_a_receipt_shows_how_the_payment_was_applied(tenant_client, me):
    payment = payment_services.manual_payment_record(
        landlord=me.landlord,
        tenant=me.tenant,
        amount_minor=250_000,
        currency="EUR",
        method=Method.BANK_TRANSFER,
        reference="Ada transfer",
        received_on=date(2026, 11, 20),
        actor=None,
    )

    page = text(tenant_client.get(reverse("portal:payment_detail", args=[payment.pk])))

    assert "Payment received" in page
    assert f"Invoice {me.november.number}" in page
    assert "Credit for your next invoice" in page
    assert "€100.00" in page
    assert "Ada transfer" in page


def card_payment(me, *, key: str, amount_minor: int) -> Payment:
    """A card payment the tenant started (now, by the clock) that Stripe has not
    confirmed yet."""
    payment, _secret = payment_services.payment_intent_create(
        landlord=me.landlord,
        tenant=me.tenant,
        amount_minor=amount_minor,
        currency="EUR",
        idempotency_key=key,
        allow_partial=True,
    )
    return payment


def test_payments_show_the_day_the_money_arrived_not_the_day_the_row_was_made(
    tenant_client, me, fake_stripe, time_machine, deliver
):
    # A card payment started on 3 December that Stripe confirms at 23:30 UTC on
    # 8 December: already 9 December at the landlord's (Berlin).
    time_machine.move_to(datetime(2026, 12, 3, 9, 0, tzinfo=UTC), tick=False)
    card = card_payment(me, key="portal-late", amount_minor=30_000)
    started_only = text(tenant_client.get(reverse("portal:payments")))
    succeeded = datetime(2026, 12, 8, 23, 30, tzinfo=UTC)
    deliver(pi_event(card, "succeeded", created=int(succeeded.timestamp())))
    # Recorded on 10 December for cash received on 5 December.
    time_machine.move_to(datetime(2026, 12, 10, 10, 0, tzinfo=UTC), tick=False)
    cash = payment_services.manual_payment_record(
        landlord=me.landlord,
        tenant=me.tenant,
        amount_minor=20_000,
        currency="EUR",
        method=Method.CASH,
        reference="",
        received_on=date(2026, 12, 5),
        actor=None,
        invoice=me.november,
    )

    payments = text(tenant_client.get(reverse("portal:payments")))
    cash_receipt = text(tenant_client.get(reverse("portal:payment_detail", args=[cash.pk])))
    card_receipt = text(tenant_client.get(reverse("portal:payment_detail", args=[card.pk])))
    invoice = text(tenant_client.get(reverse("portal:invoice_detail", args=[me.november.pk])))

    assert "Dec. 3, 2026" in started_only  # not received yet: the day it was started
    assert "Dec. 9, 2026" in payments and "Dec. 5, 2026" in payments
    assert "Dec. 10, 2026" not in payments and "Dec. 3, 2026" not in payments
    assert "<dt>Received</dt><dd>Dec. 5, 2026</dd>" in cash_receipt
    assert "<dt>Received</dt><dd>Dec. 9, 2026</dd>" in card_receipt
    assert "<time>Dec. 5, 2026</time>" in invoice
    assert "<time>Dec. 9, 2026</time>" in invoice  # the card payment went to November
    assert "Dec. 10, 2026" not in invoice


def test_a_payment_not_received_yet_shows_the_local_day_it_was_started(
    tenant_client, me, fake_stripe, time_machine
):
    # 23:30 UTC on 3 December is 4 December in Berlin, the landlord's time zone.
    time_machine.move_to(datetime(2026, 12, 3, 23, 30, tzinfo=UTC), tick=False)
    payment = card_payment(me, key="portal-waiting", amount_minor=30_000)

    receipt = text(tenant_client.get(reverse("portal:payment_detail", args=[payment.pk])))

    assert "<dt>Started</dt><dd>Dec. 4, 2026</dd>" in receipt
    assert "<dt>Received</dt>" not in receipt


def test_the_profile_saves_contact_details_and_language_with_an_audit_record(tenant_client, me):
    response = tenant_client.post(
        reverse("portal:profile"),
        {"email": "ada.new@example.test", "phone": "+49 30 1234", "language": "de"},
    )

    assert response.status_code == 302
    tenant = Tenant.objects.get(pk=me.tenant.pk)
    assert (tenant.email, tenant.phone, tenant.language) == (
        "ada.new@example.test",
        "+49 30 1234",
        "de",
    )
    assert tenant.full_name == "Ada Tenant"
    event = AuditEvent.objects.get(action="portal.profile")
    assert event.actor == me.user
    assert set(event.data) == {"email", "phone", "language"}
    # The login stays what it was.
    me.user.refresh_from_db()
    assert me.user.username == "ada@example.test"


def test_the_profile_refuses_a_bad_email_and_changes_nothing(tenant_client, me):
    response = tenant_client.post(
        reverse("portal:profile"), {"email": "not-an-email", "phone": "", "language": "en"}
    )

    assert response.status_code == 200
    assert "Enter a valid email address." in text(response)
    assert Tenant.objects.get(pk=me.tenant.pk).email == "ada@example.test"
    assert not AuditEvent.objects.filter(action="portal.profile").exists()


@pytest.mark.parametrize("phone", ["not a phone ###", "12345", "+49 30 1234 abc", "+" + "1" * 21])
def test_the_profile_refuses_a_phone_sms_cannot_reach_and_changes_nothing(tenant_client, me, phone):
    response = tenant_client.post(
        reverse("portal:profile"),
        {"email": "ada.new@example.test", "phone": phone, "language": "en"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["phone"] == [
        "Enter a phone number like +49 30 1234567: digits, spaces, dashes and "
        "brackets, with an optional + in front."
    ]
    tenant = Tenant.objects.get(pk=me.tenant.pk)
    assert (tenant.email, tenant.phone) == ("ada@example.test", "")
    assert not AuditEvent.objects.filter(action="portal.profile").exists()


@pytest.mark.parametrize("phone", ["+49 (30) 123-4567", "030 1234567", "+1 212 555 0100"])
def test_the_profile_accepts_phones_as_people_write_them(tenant_client, me, phone):
    response = tenant_client.post(
        reverse("portal:profile"), {"email": "", "phone": phone, "language": "en"}
    )

    assert response.status_code == 302
    assert Tenant.objects.get(pk=me.tenant.pk).phone == phone


def test_the_profile_service_refuses_a_bad_phone_and_an_unsupported_language(me):
    with pytest.raises(ValidationError) as bad_phone:
        portal_services.tenant_profile_update(
            tenant=me.tenant, actor=me.user, phone="not a phone ###"
        )
    with pytest.raises(ValidationError) as french:
        portal_services.tenant_profile_update(tenant=me.tenant, actor=me.user, language="fr")

    assert set(bad_phone.value.message_dict) == {"phone"}
    assert set(french.value.message_dict) == {"language"}
    tenant = Tenant.objects.get(pk=me.tenant.pk)
    assert (tenant.phone, tenant.language) == ("", "en")


def test_the_profile_offers_only_the_languages_the_portal_speaks(tenant_client, me):
    form = tenant_client.get(reverse("portal:profile")).context["form"]
    refused = tenant_client.post(
        reverse("portal:profile"), {"email": "", "phone": "", "language": "fr"}
    )

    assert form.fields["language"].choices == [("en", "English"), ("de", "Deutsch")]
    assert "language" in refused.context["form"].errors
    assert Tenant.objects.get(pk=me.tenant.pk).language == "en"


def test_a_language_the_portal_lacks_shows_as_english_in_the_profile(tenant_client, me):
    # Staff may pick French on the dashboard; the portal shows such a tenant English.
    Tenant.objects.filter(pk=me.tenant.pk).update(language="fr")

    form = tenant_client.get(reverse("portal:profile")).context["form"]

    assert form["language"].value() == "en"


def test_saving_the_profile_keeps_a_staff_set_language_unless_the_tenant_changes_it(
    tenant_client, me
):
    Tenant.objects.filter(pk=me.tenant.pk).update(language="fr")
    url = reverse("portal:profile")

    tenant_client.post(url, {"email": "ada.new@example.test", "phone": "", "language": "en"})
    me.tenant.refresh_from_db()
    assert (me.tenant.email, me.tenant.language) == ("ada.new@example.test", "fr")

    tenant_client.post(url, {"email": "ada.new@example.test", "phone": "", "language": "de"})
    me.tenant.refresh_from_db()
    assert me.tenant.language == "de"


def test_the_portal_speaks_the_tenants_language(tenant_client, me):
    Tenant.objects.filter(pk=me.tenant.pk).update(language="de")

    page = text(tenant_client.get(reverse("portal:home")))

    assert '<html lang="de">' in page
    assert "Hallo, Ada Tenant" in page
    assert "2.400,00\xa0€" in page


# --- signing in -----------------------------------------------------------------------------


def test_a_tenant_logs_in_on_the_portal_login_page(client, me):
    page = client.get(reverse("portal:login"))
    assert "Tenant portal" in text(page)

    response = client.post(
        reverse("portal:login"), {"username": "ada@example.test", "password": PASSWORD}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:home")
    assert client.get(reverse("portal:home")).status_code == 200


def test_the_login_returns_to_the_page_asked_for(client, me):
    response = client.post(
        reverse("portal:login") + "?next=/portal/invoices/",
        {"username": "ada@example.test", "password": PASSWORD, "next": "/portal/invoices/"},
    )

    assert response["Location"] == "/portal/invoices/"


def test_a_staff_login_is_refused_on_the_portal_with_a_clear_message(client, staff_user):
    response = client.post(
        reverse("portal:login"), {"username": staff_user.username, "password": PASSWORD}
    )

    assert response.status_code == 200
    assert "This account has no tenant portal" in text(response)
    assert "_auth_user_id" not in client.session


def test_a_wrong_password_is_refused(client, me):
    response = client.post(
        reverse("portal:login"), {"username": "ada@example.test", "password": "nope"}
    )

    assert response.status_code == 200
    assert "Please enter a correct" in text(response)


def test_logging_out_returns_to_the_portal_login(tenant_client):
    response = tenant_client.post(reverse("portal:logout"))

    assert response["Location"] == reverse("portal:login")
    assert tenant_client.get(reverse("portal:home")).status_code == 302


def test_password_reset_mails_a_portal_link_that_sets_a_new_password(client, me):
    client.post(reverse("portal:password_reset"), {"email": "ada@example.test"})

    (message,) = mail.outbox
    link = re.search(r"http://testserver(/portal/password/reset/\S+/\S+/)", message.body)[1]
    form = client.get(link, follow=True)
    assert form.status_code == 200
    done = client.post(
        form.redirect_chain[-1][0] if form.redirect_chain else link,
        {"new_password1": "tulip-harbour-lantern-8", "new_password2": "tulip-harbour-lantern-8"},
    )

    assert done["Location"] == reverse("portal:password_reset_complete")
    me.user.refresh_from_db()
    assert me.user.check_password("tulip-harbour-lantern-8")


def test_long_lists_come_a_page_at_a_time_and_invoices_to_pay_are_always_listed(
    tenant_client, me, monkeypatch
):
    """Years of a tenancy: past invoices and payments are paged (here 1 a page), the
    invoices still to pay are on every page."""
    monkeypatch.setattr("portal.views.PORTAL_PAGE_SIZE", 1)
    # 30.00 in cash on three days, then the rest of November's rent.
    for day, amount, invoice in ((18, 1_000, None), (19, 1_000, None), (20, 1_000, None)) + (
        (21, 117_000, me.november),
    ):
        payment_services.manual_payment_record(
            landlord=me.landlord,
            tenant=me.tenant,
            amount_minor=amount,
            currency="EUR",
            method=Method.CASH,
            reference="",
            received_on=date(2026, 11, day),
            actor=None,
            invoice=invoice,
        )

    payments = tenant_client.get(reverse("portal:payments"))
    assert len(payments.context["page"].object_list) == 1
    assert "Page 1 of 4" in text(payments)
    last = tenant_client.get(reverse("portal:payments"), {"page": "4"})
    assert "Page 4 of 4" in text(last) and "?page=3" in text(last)
    assert tenant_client.get(reverse("portal:payments"), {"page": "x"}).status_code == 200

    invoices = tenant_client.get(reverse("portal:invoices"), {"page": "2"})
    assert [r.invoice for r in invoices.context["open_rows"]] == [me.december]
    assert [r.invoice for r in invoices.context["past_rows"]] == [me.november]
