"""Bank debits from the portal with a fake Stripe and signed webhook events: SEPA
Direct Debit for a euro invoice (set up in the browser, confirmed by the server),
ACH for a dollar invoice (the PaymentIntent made here, linked and confirmed by
Stripe.js). Both stay `processing` for days, nothing is posted until Stripe reports
success, and a failure shows its reason to the tenant. Staff set whether partial
payments are allowed."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from invoices.selectors import invoice_balances
from ledger.models import LedgerTransaction
from payments.models import Method, Payment, PaymentSettings, PaymentStatus, SavedPaymentMethod
from tenants.models import AuditEvent
from tests.factories import MembershipFactory
from tests.payments.conftest import deliver as deliver
from tests.payments.helpers import books_ok
from tests.payments.helpers import pi_event as card_pi_event

JSON = {"HTTP_ACCEPT": "application/json"}
SEPA_MANDATE = "you authorise (A) Acme Lettings and Stripe"
INSUFFICIENT = "The customer's account has insufficient funds to cover this payment."


def later() -> int:
    # Stripe reports a debit's outcome days after it started: a later `created`.
    return int(time.time()) + 60


def pi_event(payment, status: str, **kwargs) -> dict:
    """A signed-payload PaymentIntent event for the payment, in its own currency."""
    event = card_pi_event(payment, status, **kwargs)
    event["data"]["object"]["currency"] = payment.currency.lower()
    return event


def posted(payment) -> list[LedgerTransaction]:
    return list(
        LedgerTransaction.objects.filter(
            landlord_id=payment.landlord_id, document_kind="payment", document_id=payment.pk
        )
    )


def open_on(renter, invoice) -> int:
    return invoice_balances(landlord=renter.landlord, invoices=[invoice])[invoice.pk]


def pay_page(client, invoice):
    response = client.get(reverse("portal:pay"), {"invoice": invoice.pk})
    assert response.status_code == 200
    return response


def start_bank_debit(client, renter, fake, method: str, **extra) -> dict:
    """Pay the renter's November invoice by bank debit, as the page's script does."""
    context = pay_page(client, renter.november).context
    data = {"key": context["key"], "invoice": renter.november.pk, "method": method, **extra}
    if method == Method.SEPA_DEBIT:
        # Stripe.js confirmSepaDebitSetup turned the IBAN into a payment method.
        fake.confirm_status = "processing"
        data["payment_method_id"] = fake.add_sepa()
    return client.post(reverse("portal:pay"), data, **JSON).json()


@pytest.fixture
def ada(portal_world):
    return portal_world.me


@pytest.fixture
def bo(client, portal_world):
    """Landlord B's tenant, billed in US dollars, logged in."""
    client.force_login(portal_world.other.user)
    return portal_world.other


@pytest.fixture(params=[Method.SEPA_DEBIT, Method.US_BANK_ACCOUNT])
def debit(request, client, portal_world, fake_stripe, deliver):
    """A bank debit of the November invoice, started and (ACH) confirmed by Stripe.js
    so that Stripe reports it processing: SEPA for Ada (EUR), ACH for Bo (USD)."""
    method = request.param
    renter = portal_world.me if method == Method.SEPA_DEBIT else portal_world.other
    client.force_login(renter.user)
    body = start_bank_debit(client, renter, fake_stripe, method)
    payment = Payment.objects.get(pk=body["id"])
    if method == Method.US_BANK_ACCOUNT:
        assert body["status"] == "requires_action"
        # confirmUsBankAccountPayment in the browser; Stripe tells us by webhook.
        response = deliver(pi_event(payment, "processing", method=method))
        assert response.status_code == 200
        payment.refresh_from_db()
    else:
        assert body["status"] == "processing"
    return renter, payment, body


# --- what the pay page offers ---------------------------------------------------------


def test_a_euro_invoice_offers_card_and_sepa_with_the_mandate(tenant_client, ada, fake_stripe):
    response = pay_page(tenant_client, ada.november)

    context = response.context
    assert context["options"].methods == [Method.CARD, Method.SEPA_DEBIT]
    assert context["sepa_setup_client_secret"].startswith("seti_")
    setups = [
        kw["payment_method_types"] for n, kw in fake_stripe.calls if n == "setup_intent_create"
    ]
    assert setups == [["card"], ["sepa_debit"]]
    page = response.content.decode()
    assert 'id="iban-element"' in page
    assert SEPA_MANDATE in page
    assert "US bank account" not in page


def test_a_dollar_invoice_offers_card_and_ach_but_no_sepa(client, bo, fake_stripe):
    response = pay_page(client, bo.november)

    assert response.context["options"].methods == [Method.CARD, Method.US_BANK_ACCOUNT]
    assert response.context["sepa_setup_client_secret"] == ""
    page = response.content.decode()
    assert "US bank account (ACH)" in page
    assert "you authorize Brightside Homes to debit the bank account you link" in page
    assert "iban-element" not in page


def test_sepa_is_refused_for_a_dollar_invoice_with_an_error_on_the_method(client, bo, fake_stripe):
    context = pay_page(client, bo.november).context
    data = {
        "key": context["key"],
        "invoice": bo.november.pk,
        "method": Method.SEPA_DEBIT,
        "payment_method_id": fake_stripe.add_sepa(),
    }

    response = client.post(reverse("portal:pay"), data, **JSON)

    assert response.status_code == 400
    assert response.json() == {
        "status": "invalid",
        "errors": {"method": ["SEPA Direct Debit cannot pay in USD."]},
    }
    assert not Payment.objects.filter(tenant=bo.tenant, source="stripe").exists()
    assert fake_stripe.keys("payment_intent_create") == []


def test_ach_is_refused_for_a_euro_invoice(tenant_client, ada, fake_stripe):
    context = pay_page(tenant_client, ada.november).context
    data = {"key": context["key"], "invoice": ada.november.pk, "method": Method.US_BANK_ACCOUNT}

    response = tenant_client.post(reverse("portal:pay"), data, **JSON)

    assert response.status_code == 400
    assert response.json()["errors"] == {"method": ["US bank account (ACH) cannot pay in EUR."]}


# --- SEPA and ACH: processing, then succeeded or failed -----------------------------------


def test_an_ach_payment_is_made_for_stripe_js_to_link_and_confirm(client, bo, fake_stripe):
    body = start_bank_debit(client, bo, fake_stripe, Method.US_BANK_ACCOUNT)

    payment = Payment.objects.get(pk=body["id"])
    assert (body["status"], body["method"]) == ("requires_action", "us_bank_account")
    assert body["client_secret"].startswith(payment.stripe_payment_intent_id)
    (call,) = [kw for name, kw in fake_stripe.calls if name == "payment_intent_create"]
    assert call["payment_method_types"] == ["us_bank_account"]
    assert (call["confirm"], call["payment_method"]) == (False, None)
    assert (payment.method, payment.status) == (Method.US_BANK_ACCOUNT, "requires_payment")
    # The tenant closed Stripe's window and taps Pay again: the same intent to link.
    context_key = payment.idempotency_key
    again = client.post(
        reverse("portal:pay"),
        {"key": context_key, "invoice": bo.november.pk, "method": "us_bank_account"},
        **JSON,
    ).json()
    assert (again["id"], again["client_secret"]) == (payment.pk, body["client_secret"])
    assert len(fake_stripe.keys("payment_intent_create")) == 1


def test_a_bank_debit_is_processing_and_posts_nothing_until_the_bank_pays(client, debit):
    renter, payment, _body = debit

    assert payment.status == PaymentStatus.PROCESSING
    assert posted(payment) == []
    due = renter.november.total_minor - sum(
        p.amount_minor for p in renter.payments if p.invoice_id in (None, renter.november.pk)
    )
    assert open_on(renter, renter.november) == due
    detail = client.get(reverse("portal:payment_detail", args=[payment.pk])).content.decode()
    assert "Processing" in detail
    assert "Bank debits take a few business days" in detail
    home = client.get(reverse("portal:home")).content.decode()
    assert "is processing" in home
    assert "you do not need to pay it again" in home
    again = pay_page(client, renter.november).content.decode()
    assert "is processing" in again
    listing = client.get(reverse("portal:payments")).content.decode()
    assert 'class="badge processing"' in listing


def test_a_bank_debit_is_posted_when_stripe_reports_success(client, debit, deliver):
    renter, payment, _body = debit

    response = deliver(pi_event(payment, "succeeded", method=payment.method, created=later()))

    assert response.status_code == 200
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert len(posted(payment)) == 1
    detail = client.get(reverse("portal:payment_detail", args=[payment.pk])).content.decode()
    assert "Payment received" in detail
    assert "is processing" not in client.get(reverse("portal:home")).content.decode()
    books_ok(renter.landlord)


def test_a_failed_bank_debit_shows_the_reason_and_posts_nothing(client, debit, deliver):
    renter, payment, _body = debit
    open_before = open_on(renter, renter.november)
    error = {"code": "insufficient_funds", "message": INSUFFICIENT, "type": "card_error"}

    response = deliver(
        pi_event(
            payment,
            "requires_payment_method",
            method=payment.method,
            error=error,
            created=later(),
        ),
    )

    assert response.status_code == 200
    payment.refresh_from_db()
    assert (payment.status, payment.failure_code) == (PaymentStatus.FAILED, "insufficient_funds")
    assert posted(payment) == []
    assert open_on(renter, renter.november) == open_before
    detail = client.get(reverse("portal:payment_detail", args=[payment.pk])).content.decode()
    assert "Payment failed" in detail
    assert INSUFFICIENT.replace("'", "&#x27;") in detail
    assert "Your bank did not pay this debit" in detail
    listing = client.get(reverse("portal:payments")).content.decode()
    assert "Failed" in listing and INSUFFICIENT.replace("'", "&#x27;") in listing
    books_ok(renter.landlord)


def test_keeping_the_sepa_mandate_turns_on_autopay(tenant_client, ada, fake_stripe):
    body = start_bank_debit(tenant_client, ada, fake_stripe, Method.SEPA_DEBIT, save_card="on")

    assert body["status"] == "processing"
    saved = SavedPaymentMethod.objects.get(tenant=ada.tenant)
    assert (saved.method, saved.last4, saved.autopay) == (Method.SEPA_DEBIT, "3000", True)
    assert (
        "SEPA Direct Debit ····3000" in tenant_client.get(reverse("portal:home")).content.decode()
    )


# --- saving a bank account on the payment methods page ------------------------------------


def test_the_methods_page_adds_a_sepa_mandate_for_a_euro_landlord(tenant_client, ada, fake_stripe):
    page = tenant_client.get(reverse("portal:methods"))

    assert page.context["bank_method"] == Method.SEPA_DEBIT
    assert page.context["bank_setup_client_secret"].startswith("seti_")
    assert "By providing your payment information and confirming this mandate" in (
        page.content.decode()
    )
    pm = fake_stripe.add_sepa("DE89370400440532019999")
    tenant_client.post(reverse("portal:method_add"), {"payment_method_id": pm, "autopay": "on"})

    saved = SavedPaymentMethod.objects.get(tenant=ada.tenant)
    assert (saved.method, saved.last4, saved.autopay) == (Method.SEPA_DEBIT, "9999", True)


def test_the_methods_page_offers_ach_for_a_dollar_landlord(client, bo, fake_stripe):
    page = client.get(reverse("portal:methods"))

    assert page.context["bank_method"] == Method.US_BANK_ACCOUNT
    setups = [
        kw["payment_method_types"] for n, kw in fake_stripe.calls if n == "setup_intent_create"
    ]
    assert setups == [["card"], ["us_bank_account"]]
    assert "Add a US bank account (ACH)" in page.content.decode()


# --- the partial payment setting, edited by staff ------------------------------------------


def test_an_owner_turns_partial_payments_off_for_their_landlord_only(client, portal_world):
    owner = MembershipFactory(landlord=portal_world.me.landlord, role="owner").user
    client.force_login(owner)
    url = reverse("dashboard:payment_settings")

    page = client.get(url)
    assert page.status_code == 200
    assert page.context["form"].initial == {"allow_partial": True}
    response = client.post(url, {})

    assert response.status_code == 302
    settings_row = PaymentSettings.objects.get(landlord=portal_world.me.landlord)
    assert settings_row.allow_partial is False
    assert not PaymentSettings.objects.filter(landlord=portal_world.other.landlord).exists()
    assert AuditEvent.objects.filter(
        landlord=portal_world.me.landlord, action="payment_settings.update"
    ).exists()
    assert client.get(url).context["form"].initial == {"allow_partial": False}
    client.post(url, {"allow_partial": "on"})
    settings_row.refresh_from_db()
    assert settings_row.allow_partial is True


def test_a_manager_cannot_change_payment_settings(client, portal_world, staff_user):
    client.force_login(staff_user)

    response = client.post(reverse("dashboard:payment_settings"), {})

    assert response.status_code == 403
    assert not PaymentSettings.objects.exists()
