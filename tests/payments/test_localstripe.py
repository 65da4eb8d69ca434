"""Against a real localstripe process (Stripe's API, offline): the portal's payment
intent, a card confirmed like Stripe.js confirms it, the signed webhook localstripe
sends to the running site, and the invoice paid from the ledger."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
import requests
import stripe

from ledger.models import LedgerTransaction
from payments import services
from payments.models import EventStatus, Payment, PaymentStatus, StripeEvent
from tests.payments.helpers import books_ok, payment_transactions, status_of

USES_LOCALSTRIPE = True  # tests/payments/conftest.py: no fake Stripe here
SECRET = "whsec_localstripe_test"
RENT = 120_000
# localstripe pickles its store to a fixed /tmp file on every write; the test server
# keeps its state in memory so it never clobbers a developer's `make run` data.
LAUNCH = (
    "import sys, localstripe.resources as r, localstripe.server as s;"
    "r.Store.dump_to_disk = lambda self: None;"
    "sys.argv = ['localstripe', '--port', sys.argv[1], '--from-scratch'];"
    "s.start()"
)

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def localstripe_url():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            requests.get(f"{url}/v1/balance", auth=("sk_test_x", ""), timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("localstripe did not start")
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def stripe_env(settings, localstripe_url, live_server):
    settings.STRIPE_API_BASE = localstripe_url
    settings.STRIPE_API_KEY = "sk_test_localstripe"
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    response = requests.post(
        f"{localstripe_url}/_config/webhooks/rentledger_test",
        data={
            "url": f"{live_server.url}/stripe/webhook/",
            "secret": SECRET,
            "events[]": [
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "payment_intent.processing",
            ],
        },
        timeout=5,
    )
    assert response.status_code == 200
    return stripe.StripeClient(
        "sk_test_localstripe", base_addresses={"api": localstripe_url}, max_network_retries=0
    )


def card(browser: stripe.StripeClient, number: str) -> str:
    return browser.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    ).id


def confirm_like_stripe_js(browser: stripe.StripeClient, payment: Payment, number: str):
    """What `stripe.confirmCardPayment(clientSecret, {payment_method: {card}})` does:
    attach the card to the intent and confirm it."""
    pi = payment.stripe_payment_intent_id
    browser.v1.payment_intents.update(pi, params={"payment_method": card(browser, number)})
    return browser.v1.payment_intents.confirm(pi)


def wait_for(predicate, *, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_card_payment_through_localstripe_is_posted_from_its_webhook(world, stripe_env):
    payment, client_secret = services.payment_intent_create(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=RENT,
        currency="EUR",
        invoice=world.december,
        idempotency_key="portal-ls-1",
    )
    assert client_secret.startswith(payment.stripe_payment_intent_id + "_secret_")
    intent = confirm_like_stripe_js(stripe_env, payment, "4242424242424242")
    assert intent.status == "succeeded"

    assert wait_for(lambda: Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED), (
        StripeEvent.objects.values_list("type", "status", "error")
    )
    event = StripeEvent.objects.get(type="payment_intent.succeeded")
    assert event.status == EventStatus.PROCESSED
    assert event.landlord == world.landlord
    assert event.raw_body.startswith("{")
    assert status_of(world.landlord, world.december) == "paid"
    payment.refresh_from_db()
    assert payment.fee_minor == 0  # localstripe charges no fee
    assert payment.stripe_charge_id.startswith("ch_")
    (posting,) = payment_transactions(payment)
    assert sum(e.amount_minor for e in posting.entries.all()) == 0
    books_ok(world.landlord)


def test_a_declined_card_raises_the_reason_and_posts_nothing(world, stripe_env):
    payment, _secret = services.payment_intent_create(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=RENT,
        currency="EUR",
        invoice=world.november,
        idempotency_key="portal-ls-2",
    )
    with pytest.raises(stripe.CardError) as declined:
        confirm_like_stripe_js(stripe_env, payment, "4000000000000341")
    assert declined.value.code == "card_declined"
    assert declined.value.user_message == "Your card was declined."

    assert wait_for(lambda: Payment.objects.get(pk=payment.pk).status == PaymentStatus.FAILED)
    payment.refresh_from_db()
    assert payment.failure_message == "Your card was declined."
    assert payment_transactions(payment) == []
    assert status_of(world.landlord, world.november) == "overdue"
    assert not LedgerTransaction.objects.filter(
        landlord=world.landlord, document_kind="payment"
    ).exists()


def test_a_saved_card_pays_by_autopay_off_session(world, stripe_env):
    secret = services.setup_intent_create(
        landlord=world.landlord, tenant=world.tenant, idempotency_key="setup-1"
    )
    setup_id = secret.split("_secret_")[0]
    # What Stripe.js confirmCardSetup does with the card the tenant typed.
    confirmed = stripe_env.v1.setup_intents.confirm(
        setup_id,
        params={
            "payment_method": card(stripe_env, "4242424242424242"),
        },
    )
    assert confirmed.status == "succeeded"
    saved = services.payment_method_save(
        landlord=world.landlord,
        tenant=world.tenant,
        payment_method_id=confirmed.payment_method,
        autopay=True,
        actor=None,
    )
    assert (saved.autopay, saved.last4) == (True, "4242")

    now = datetime.now(UTC)
    result = services.autopay_charge(
        landlord=world.landlord, invoice=world.november, attempt=1, now=now
    )
    assert result.status == "succeeded", result
    assert status_of(world.landlord, world.november) == "paid"
    again = services.autopay_charge(
        landlord=world.landlord, invoice=world.november, attempt=1, now=now
    )
    assert again.payment.pk == result.payment.pk
    # The webhook that follows finds the payment posted and posts nothing more.
    assert wait_for(
        lambda: StripeEvent.objects.filter(
            type="payment_intent.succeeded", status=EventStatus.PROCESSED
        ).exists()
    )
    assert len(payment_transactions(result.payment)) == 1


def test_another_tenants_saved_card_cannot_be_taken_over(world, stripe_env):
    from django.core.exceptions import ValidationError

    from tests.factories import TenantFactory

    secret = services.setup_intent_create(
        landlord=world.landlord, tenant=world.tenant, idempotency_key="setup-own"
    )
    confirmed = stripe_env.v1.setup_intents.confirm(
        secret.split("_secret_")[0], params={"payment_method": card(stripe_env, "4242424242424242")}
    )
    saved = services.payment_method_save(
        landlord=world.landlord,
        tenant=world.tenant,
        payment_method_id=confirmed.payment_method,
        actor=None,
    )
    neighbour = TenantFactory(landlord=world.landlord)
    with pytest.raises(ValidationError, match="belongs to someone else"):
        services.payment_method_save(
            landlord=world.landlord,
            tenant=neighbour,
            payment_method_id=confirmed.payment_method,
            actor=None,
        )
    saved.refresh_from_db()
    assert saved.tenant_id == world.tenant.pk


def test_recovery_fetches_a_success_whose_webhook_never_arrived(world, stripe_env, localstripe_url):
    # The endpoint is down while the tenant pays.
    requests.post(
        f"{localstripe_url}/_config/webhooks/rentledger_test",
        data={"url": "http://127.0.0.1:9/stripe/webhook/", "secret": SECRET},
        timeout=5,
    )
    payment, _secret = services.payment_intent_create(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=RENT,
        currency="EUR",
        invoice=world.december,
        idempotency_key="portal-ls-3",
    )
    confirm_like_stripe_js(stripe_env, payment, "4242424242424242")
    time.sleep(1.5)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.REQUIRES_PAYMENT

    services.stripe_events_recover(now=datetime.now(UTC))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert status_of(world.landlord, world.december) == "paid"
    # Events of earlier tests (their rows are gone) are kept as unmatched, never failed.
    assert not StripeEvent.objects.filter(status=EventStatus.FAILED).exists()


def test_a_server_side_confirmation_with_a_declined_card_raises_payment_declined(world, stripe_env):
    with pytest.raises(services.PaymentDeclined) as declined:
        services.payment_intent_create(
            landlord=world.landlord,
            tenant=world.tenant,
            amount_minor=RENT,
            currency="EUR",
            invoice=world.december,
            idempotency_key="portal-ls-4",
            payment_method_id=card(stripe_env, "4000000000000341"),
            confirm=True,
        )
    assert declined.value.failure_code == "card_declined"
    payment = declined.value.payment
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert payment_transactions(payment) == []


def test_connect_onboarding_is_reported_unavailable_on_localstripe(world, stripe_env):
    with pytest.raises(services.StripeUnavailable):
        services.stripe_connect_onboarding_link(
            landlord=world.landlord,
            refresh_url="http://127.0.0.1/refresh",
            return_url="http://127.0.0.1/return",
            actor=None,
        )


def test_a_card_needing_3d_secure_is_confirmed_server_side_then_authenticated_in_the_browser(
    world, stripe_env, localstripe_url
):
    """The portal flow that works on localstripe and on Stripe: the server confirms
    with the card's payment method; a 3-D Secure card leaves the intent
    `requires_action` and Stripe.js `confirmCardPayment(clientSecret)` completes it."""
    payment, client_secret = services.payment_intent_create(
        landlord=world.landlord,
        tenant=world.tenant,
        amount_minor=RENT,
        currency="EUR",
        invoice=world.december,
        idempotency_key="portal-ls-5",
        payment_method_id=card(stripe_env, "4000000000003220"),
        confirm=True,
    )
    assert payment.status == PaymentStatus.REQUIRES_PAYMENT
    # What localstripe's stand-in for confirmCardPayment posts when the tenant passes.
    response = requests.post(
        f"{localstripe_url}/v1/payment_intents/{payment.stripe_payment_intent_id}"
        "/_authenticate?success=true",
        json={"key": "pk_test_localstripe", "client_secret": client_secret},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert wait_for(lambda: Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED)
    assert status_of(world.landlord, world.december) == "paid"
