"""The pay view against a real localstripe process: the page's SetupIntent is
confirmed with a card the way Stripe.js `confirmCardSetup` does it, the view
confirms the PaymentIntent server-side, and localstripe's signed webhook reaches the
live server (fixtures shared with tests/payments/test_localstripe.py)."""

from __future__ import annotations

import threading

import pytest
import requests
import stripe
from django.db import connection
from django.test import Client
from django.urls import reverse

from invoices.selectors import invoice_balances
from ledger.models import LedgerTransaction
from payments.models import EventStatus, Payment, PaymentStatus, SavedPaymentMethod, StripeEvent
from tests.payments.helpers import books_ok
from tests.payments.test_localstripe import card, wait_for

USES_LOCALSTRIPE = True
JSON = {"HTTP_ACCEPT": "application/json"}

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def me(portal_world):
    return portal_world.me


def set_up_card(browser: stripe.StripeClient, setup_secret: str, number: str) -> str:
    """What Stripe.js `confirmCardSetup(secret, {payment_method: {card}})` does: the
    SetupIntent confirmed with the typed card; returns the payment method id."""
    setup_id = setup_secret.split("_secret_")[0]
    confirmed = browser.v1.setup_intents.confirm(
        setup_id, params={"payment_method": card(browser, number)}
    )
    return confirmed.payment_method


def pay_page(client, **params) -> dict:
    response = client.get(reverse("portal:pay"), params)
    assert response.status_code == 200
    return response.context


def pay(client, context, pm: str, **extra):
    data = {"key": context["key"], "payment_method_id": pm, **extra}
    if context["invoice"] is not None:
        data["invoice"] = context["invoice"].pk
    else:
        data["currency"] = context["currency"]
    return client.post(reverse("portal:pay"), data, **JSON)


def posted(payment) -> list[LedgerTransaction]:
    return list(
        LedgerTransaction.objects.filter(
            landlord_id=payment.landlord_id, document_kind="payment", document_id=payment.pk
        )
    )


def test_a_card_payment_is_confirmed_server_side_and_its_webhook_arrives(
    tenant_client, me, stripe_env
):
    context = pay_page(tenant_client, invoice=me.november.pk)
    pm = set_up_card(stripe_env, context["setup_client_secret"], "4242424242424242")

    body = pay(tenant_client, context, pm).json()

    assert body["status"] == "succeeded"
    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.stripe_payment_intent_id.startswith("pi_")
    assert invoice_balances(landlord=me.landlord, invoices=[me.november])[me.november.pk] == 0
    assert wait_for(
        lambda: StripeEvent.objects.filter(
            type="payment_intent.succeeded", status=EventStatus.PROCESSED
        ).exists()
    )
    assert len(posted(payment)) == 1
    books_ok(me.landlord)


def test_a_declined_card_answers_failed_and_posts_nothing(tenant_client, me, stripe_env):
    context = pay_page(tenant_client, invoice=me.november.pk)
    pm = set_up_card(stripe_env, context["setup_client_secret"], "4000000000000341")

    body = pay(tenant_client, context, pm).json()

    assert body["status"] == "failed"
    assert body["message"] == "Your card was declined."
    payment = Payment.objects.get(pk=body["id"])
    assert payment.status == PaymentStatus.FAILED
    assert posted(payment) == []
    assert invoice_balances(landlord=me.landlord, invoices=[me.november])[me.november.pk] == 120_000


def test_a_double_submit_creates_one_intent_at_stripe(tenant_client, me, stripe_env):
    context = pay_page(tenant_client, invoice=me.november.pk)
    pm = set_up_card(stripe_env, context["setup_client_secret"], "4242424242424242")

    first = pay(tenant_client, context, pm).json()
    second = pay(tenant_client, context, pm).json()

    assert first["id"] == second["id"]
    payment = Payment.objects.get(pk=first["id"])
    # localstripe lists every intent it holds (no filters): ours carry the payment id.
    intents = stripe_env.v1.payment_intents.list(params={"limit": 100})
    ours = [
        pi.id for pi in intents.data if pi.metadata.to_dict().get("payment_id") == str(payment.pk)
    ]
    assert ours == [payment.stripe_payment_intent_id]


def test_3d_secure_is_completed_in_the_browser_and_the_status_endpoint_reports_it(
    tenant_client, me, stripe_env, localstripe_url
):
    context = pay_page(tenant_client, invoice=me.november.pk)
    # 3220 asks for 3-D Secure when it is set up too: Stripe.js shows the challenge,
    # then confirms the SetupIntent again (what localstripe's stand-in does).
    setup_id = context["setup_client_secret"].split("_secret_")[0]
    stripe_env.v1.setup_intents.confirm(
        setup_id, params={"payment_method": card(stripe_env, "4000000000003220")}
    )
    pm = stripe_env.v1.setup_intents.confirm(setup_id).payment_method

    body = pay(tenant_client, context, pm).json()

    assert body["status"] == "requires_action"
    secret = body["client_secret"]
    # What stripe.confirmCardPayment(secret) posts when the tenant passes the challenge.
    response = requests.post(
        f"{localstripe_url}/v1/payment_intents/{secret.split('_secret_')[0]}"
        "/_authenticate?success=true",
        json={"key": "pk_test_localstripe", "client_secret": secret},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert wait_for(
        lambda: tenant_client.get(body["status_url"]).json()["status"] == "succeeded", timeout=20
    )
    assert invoice_balances(landlord=me.landlord, invoices=[me.november])[me.november.pk] == 0


def test_keeping_the_card_saves_it_for_autopay_at_localstripe(tenant_client, me, stripe_env):
    context = pay_page(tenant_client, invoice=me.november.pk)
    pm = set_up_card(stripe_env, context["setup_client_secret"], "4242424242424242")

    body = pay(tenant_client, context, pm, save_card="on").json()

    assert body["status"] == "succeeded"
    saved = SavedPaymentMethod.objects.get(tenant=me.tenant)
    assert (saved.stripe_payment_method_id, saved.last4, saved.autopay) == (pm, "4242", True)


def test_a_card_is_added_on_the_cards_page(tenant_client, me, stripe_env):
    page = tenant_client.get(reverse("portal:methods"))
    pm = set_up_card(stripe_env, page.context["setup_client_secret"], "5555555555554444")

    tenant_client.post(reverse("portal:method_add"), {"payment_method_id": pm, "autopay": "on"})

    saved = SavedPaymentMethod.objects.get(tenant=me.tenant)
    assert (saved.last4, saved.autopay) == ("4444", True)
    assert "Autopay on" in tenant_client.get(reverse("portal:methods")).content.decode()


def test_two_simultaneous_submits_charge_the_card_once(client, me, stripe_env):
    """Two requests with the same key at the same moment (a double tap on a slow
    phone): the advisory lock on the key makes the second wait and find the first."""
    client.force_login(me.user)
    context = pay_page(client, invoice=me.november.pk)
    pm = set_up_card(stripe_env, context["setup_client_secret"], "4242424242424242")
    cookies = client.cookies
    barrier = threading.Barrier(2)
    answers = []

    def submit():
        try:
            thread_client = Client()
            thread_client.cookies = cookies
            barrier.wait()
            answers.append(pay(thread_client, context, pm).json())
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert [a["status"] for a in answers] == ["succeeded", "succeeded"]
    assert answers[0]["id"] == answers[1]["id"]
    intents = stripe_env.v1.payment_intents.list(params={"limit": 100})
    ours = [
        pi
        for pi in intents.data
        if pi.metadata.to_dict().get("payment_id") == str(answers[0]["id"])
    ]
    assert len(ours) == 1


def set_up_sepa(browser: stripe.StripeClient, setup_secret: str, iban: str) -> str:
    """What Stripe.js `confirmSepaDebitSetup(secret, {payment_method: {sepa_debit,
    billing_details}})` does once the tenant accepts the mandate."""
    confirmed = browser.v1.setup_intents.confirm(
        setup_secret.split("_secret_")[0],
        params={
            "payment_method_data": {
                "type": "sepa_debit",
                "sepa_debit": {"iban": iban},
                "billing_details": {"name": "Ada Tenant", "email": "ada@example.test"},
            }
        },
    )
    return confirmed.payment_method


def test_a_sepa_debit_from_the_pay_page_that_bounces_is_processing_then_failed(
    tenant_client, me, stripe_env
):
    context = pay_page(tenant_client, invoice=me.november.pk)
    pm = set_up_sepa(stripe_env, context["sepa_setup_client_secret"], "DE62370400440532013001")

    body = pay(tenant_client, context, pm, method="sepa_debit", save_card="on").json()

    assert body["status"] == "processing"
    payment = Payment.objects.get(pk=body["id"])
    assert posted(payment) == []
    assert wait_for(lambda: Payment.objects.get(pk=payment.pk).status == PaymentStatus.FAILED)
    assert posted(payment) == []
    assert invoice_balances(landlord=me.landlord, invoices=[me.november])[me.november.pk] == 120_000
    detail = tenant_client.get(reverse("portal:payment_detail", args=[payment.pk]))
    assert "Your card was declined." in detail.content.decode()  # localstripe's wording
    # The mandate was kept for autopay while the debit was processing.
    saved = SavedPaymentMethod.objects.get(tenant=me.tenant)
    assert (saved.method, saved.last4) == ("sepa_debit", "3001")


def test_a_sepa_debit_from_the_pay_page_is_posted_once(tenant_client, me, stripe_env):
    context = pay_page(tenant_client, invoice=me.november.pk)
    pm = set_up_sepa(stripe_env, context["sepa_setup_client_secret"], "DE89370400440532013000")

    body = pay(tenant_client, context, pm, method="sepa_debit").json()

    # localstripe settles a good IBAN at once (Stripe takes days: `processing`).
    assert body["status"] in ("processing", "succeeded")
    payment = Payment.objects.get(pk=body["id"])
    assert wait_for(
        lambda: StripeEvent.objects.filter(
            type="payment_intent.succeeded", status=EventStatus.PROCESSED
        ).exists()
    )
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert len(posted(payment)) == 1
    books_ok(me.landlord)


def test_a_us_bank_account_cannot_be_set_up_at_localstripe_and_the_page_says_so(
    client, portal_world, stripe_env
):
    client.force_login(portal_world.other.user)

    page = client.get(reverse("portal:methods"))

    assert page.context["bank_method"] == "us_bank_account"
    assert page.context["bank_setup_client_secret"] == ""
    assert "Bank accounts cannot be added right now" in page.content.decode()
    # Cards still work there.
    assert page.context["setup_client_secret"].startswith("seti_")
