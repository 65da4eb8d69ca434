"""The pay button's server side with a fake Stripe: one invoice, the whole balance or
part of it; the card's outcome (succeeded, 3-D Secure, declined) as JSON for the
page's script; a double submit pays once; nothing is posted on a decline."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from invoices.selectors import invoice_balances
from ledger.models import LedgerTransaction
from ledger.selectors import tenant_balance
from payments import services as payment_services
from payments.models import Payment, PaymentStatus, SavedPaymentMethod
from portal import services
from tenants.models import Tenant
from tests.payments.helpers import books_ok

JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def me(portal_world):
    return portal_world.me


def pay_form(client, **params) -> dict:
    """GET the pay page; the form fields the page's script would post."""
    response = client.get(reverse("portal:pay"), params)
    assert response.status_code == 200
    context = response.context
    assert context["setup_client_secret"].startswith("seti_")
    fields = {"key": context["key"]}
    if context["invoice"] is not None:
        fields["invoice"] = context["invoice"].pk
    else:
        fields["currency"] = context["currency"]
    return fields


def pay(client, fields: dict, fake, *, amount: str | None = None, **extra):
    data = {**fields, "payment_method_id": fake.add_card(), **extra}
    if amount is not None:
        data["amount"] = amount
    return client.post(reverse("portal:pay"), data, **JSON)


def posted(payment) -> list[LedgerTransaction]:
    return list(
        LedgerTransaction.objects.filter(
            landlord_id=payment.landlord_id, document_kind="payment", document_id=payment.pk
        )
    )


def open_on(renter, invoice) -> int:
    return invoice_balances(landlord=renter.landlord, invoices=[invoice])[invoice.pk]


def test_paying_an_invoice_by_card_posts_it_and_answers_succeeded(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    response = pay(tenant_client, fields, fake_stripe)

    assert response.status_code == 200
    body = response.json()
    payment = Payment.objects.get(tenant=me.tenant, source="stripe")
    assert body["status"] == "succeeded"
    assert body["payment_url"] == reverse("portal:payment_detail", args=[payment.pk])
    assert body["client_secret"] == ""
    assert (payment.invoice, payment.amount_minor, payment.status) == (
        me.november,
        120_000,
        PaymentStatus.SUCCEEDED,
    )
    assert payment.idempotency_key == fields["key"]
    assert open_on(me, me.november) == 0
    assert len(posted(payment)) == 1
    (call,) = [kw for name, kw in fake_stripe.calls if name == "payment_intent_create"]
    assert call["confirm"] is True
    assert call["payment_method"].startswith("pm_fake")
    books_ok(me.landlord)


def test_a_double_submit_with_the_same_key_pays_once(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    first = pay(tenant_client, fields, fake_stripe).json()
    second = pay(tenant_client, fields, fake_stripe).json()

    assert first["id"] == second["id"]
    assert second["status"] == "succeeded"
    assert Payment.objects.filter(tenant=me.tenant, source="stripe").count() == 1
    assert len(fake_stripe.keys("payment_intent_create")) == 1


def test_each_rendering_of_the_form_has_its_own_key(tenant_client, me):
    first = pay_form(tenant_client, invoice=me.november.pk)["key"]
    second = pay_form(tenant_client, invoice=me.november.pk)["key"]

    assert first != second
    assert first.startswith(f"portal:{me.tenant.pk}:")


def test_a_declined_card_answers_failed_with_the_reason_and_posts_nothing(
    tenant_client, me, fake_stripe
):
    fake_stripe.decline = {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    }
    fields = pay_form(tenant_client, invoice=me.november.pk)

    body = pay(tenant_client, fields, fake_stripe).json()

    assert body["status"] == "failed"
    assert body["message"] == "Your card has insufficient funds."
    # A new try is a new payment: a fresh key and SetupIntent for another card.
    assert body["key"] != fields["key"]
    assert body["setup_client_secret"].startswith("seti_")
    payment = Payment.objects.get(tenant=me.tenant, source="stripe")
    assert payment.status == PaymentStatus.FAILED
    assert payment.decline_code == "insufficient_funds"
    assert posted(payment) == []
    assert open_on(me, me.november) == 120_000

    page = tenant_client.get(reverse("portal:payment_detail", args=[payment.pk])).content.decode()
    assert "Payment failed" in page
    assert "Your card has insufficient funds." in page
    assert "Nothing was charged" in page


def test_a_card_that_wants_3d_secure_answers_requires_action_with_the_client_secret(
    tenant_client, me, fake_stripe
):
    fake_stripe.confirm_status = "requires_action"
    fields = pay_form(tenant_client, invoice=me.november.pk)

    body = pay(tenant_client, fields, fake_stripe).json()

    payment = Payment.objects.get(tenant=me.tenant, source="stripe")
    assert body["status"] == "requires_action"
    assert body["client_secret"].startswith(payment.stripe_payment_intent_id)
    assert body["status_url"] == reverse("portal:payment_status", args=[payment.pk])
    # A double submit of the same form gets the same intent to authenticate.
    again = pay(tenant_client, fields, fake_stripe).json()
    assert again["client_secret"] == body["client_secret"]
    assert posted(payment) == []


def test_the_status_endpoint_asks_stripe_once_the_webhook_is_late(tenant_client, me, fake_stripe):
    fake_stripe.confirm_status = "requires_action"
    fields = pay_form(tenant_client, invoice=me.november.pk)
    body = pay(tenant_client, fields, fake_stripe).json()
    payment = Payment.objects.get(pk=body["id"])
    url = reverse("portal:payment_status", args=[payment.pk])

    assert tenant_client.get(url).json()["status"] == "requires_action"
    # The tenant passed 3-D Secure; Stripe says succeeded, no webhook came.
    fake_stripe.intents[payment.stripe_payment_intent_id]["status"] = "succeeded"
    Payment.objects.filter(pk=payment.pk).update(
        updated_at=timezone.now() - services.SYNC_AFTER - timedelta(seconds=1)
    )
    status = tenant_client.get(url).json()

    assert status["status"] == "succeeded"
    assert status["label"] == "Succeeded"
    assert open_on(me, me.november) == 0


def test_part_of_an_invoice_can_be_paid(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    body = pay(tenant_client, fields, fake_stripe, amount="500.00").json()

    assert body["status"] == "succeeded"
    assert open_on(me, me.november) == 70_000
    page = tenant_client.get(reverse("portal:invoice_detail", args=[me.november.pk]))
    assert "Partially paid" in page.content.decode()


@pytest.mark.parametrize(
    ("amount", "error"),
    [
        ("0", "Enter an amount above zero."),
        ("12,5", "Enter an amount like 250.00."),
        ("1.001", "Enter an amount like 250.00."),
    ],
)
def test_an_amount_that_is_not_a_positive_amount_is_refused_and_charges_nothing(
    tenant_client, me, fake_stripe, amount, error
):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    response = pay(tenant_client, fields, fake_stripe, amount=amount)

    assert response.status_code == 400
    assert response.json() == {"status": "invalid", "errors": {"amount": [error]}}
    assert not Payment.objects.filter(tenant=me.tenant, source="stripe").exists()
    assert fake_stripe.keys("payment_intent_create") == []


def test_without_partial_payments_less_than_due_is_refused_on_the_amount(
    tenant_client, me, fake_stripe
):
    payment_services.payment_settings_update(landlord=me.landlord, actor=None, allow_partial=False)
    page = tenant_client.get(reverse("portal:pay"), {"invoice": me.november.pk})
    assert "Pay at least €1,200.00, the full open amount." in page.content.decode()
    fields = pay_form(tenant_client, invoice=me.november.pk)

    response = pay(tenant_client, fields, fake_stripe, amount="500.00")

    assert response.status_code == 400
    assert response.json() == {
        "status": "invalid",
        "errors": {"amount": ["Pay the full amount due: €1,200.00."]},
    }
    assert not Payment.objects.filter(tenant=me.tenant, source="stripe").exists()
    assert fake_stripe.keys("payment_intent_create") == []
    # The full amount (or more) still goes through.
    assert pay(tenant_client, fields, fake_stripe).json()["status"] == "succeeded"


def test_the_partial_payment_setting_is_per_landlord(portal_world, client, fake_stripe):
    payment_services.payment_settings_update(
        landlord=portal_world.other.landlord, actor=None, allow_partial=False
    )
    client.force_login(portal_world.me.user)
    fields = pay_form(client, invoice=portal_world.me.november.pk)

    body = pay(client, fields, fake_stripe, amount="500.00").json()

    assert body["status"] == "succeeded"
    assert open_on(portal_world.me, portal_world.me.november) == 70_000


def test_paying_more_than_the_invoice_keeps_the_rest_as_credit(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    body = pay(tenant_client, fields, fake_stripe, amount="1500.00").json()

    assert body["status"] == "succeeded"
    payment = Payment.objects.get(pk=body["id"])
    assert payment.amount_minor == 150_000
    assert open_on(me, me.november) == 0
    # The 300.00 above November goes to the next open invoice (December); the
    # tenant owes 900.00 in all.
    assert tenant_balance(landlord=me.landlord, tenant=me.tenant) == {"EUR": 90_000}
    books_ok(me.landlord)


def test_paying_more_than_the_balance_keeps_the_rest_as_credit(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, currency="EUR")

    body = pay(tenant_client, fields, fake_stripe, amount="2500.00").json()

    assert body["status"] == "succeeded"
    payment = Payment.objects.get(pk=body["id"])
    assert [(a.invoice, a.amount_minor) for a in payment.allocations.order_by("position")] == [
        (me.november, 120_000),
        (me.december, 120_000),
        (None, 10_000),
    ]
    assert tenant_balance(landlord=me.landlord, tenant=me.tenant) == {"EUR": -10_000}
    home = tenant_client.get(reverse("portal:home")).content.decode()
    assert "credit in your favour" in home
    books_ok(me.landlord)


def test_an_absurd_amount_is_refused_on_the_amount_field_and_nothing_is_charged(
    tenant_client, me, fake_stripe
):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    response = pay(tenant_client, fields, fake_stripe, amount="1000000.00")

    # Owed: 2,400.00; one month's rent ahead (1,200.00) is the most it may leave as credit.
    assert response.status_code == 400
    assert response.json() == {
        "status": "invalid",
        "errors": {
            "amount": [
                "You can pay at most €3,600.00 now: what you owe plus one month's rent in advance."
            ]
        },
    }
    assert not Payment.objects.filter(tenant=me.tenant, source="stripe").exists()
    assert fake_stripe.keys("payment_intent_create") == []
    assert tenant_balance(landlord=me.landlord, tenant=me.tenant) == {"EUR": 240_000}


def test_without_script_the_refused_amount_shows_as_an_error_on_the_amount_field(
    tenant_client, me, fake_stripe
):
    fields = pay_form(tenant_client, currency="EUR")
    data = {**fields, "payment_method_id": fake_stripe.add_card(), "amount": "3600.01"}

    response = tenant_client.post(reverse("portal:pay"), data)

    assert response.status_code == 400
    assert response.context["form"].errors["amount"] == [
        "You can pay at most €3,600.00 now: what you owe plus one month's rent in advance."
    ]
    assert not Payment.objects.filter(tenant=me.tenant, source="stripe").exists()


def test_paying_a_month_ahead_is_still_accepted(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, currency="EUR")

    body = pay(tenant_client, fields, fake_stripe, amount="3600.00").json()

    assert body["status"] == "succeeded"
    assert tenant_balance(landlord=me.landlord, tenant=me.tenant) == {"EUR": -120_000}


def test_the_whole_balance_is_paid_across_invoices_oldest_first(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, currency="EUR")

    body = pay(tenant_client, fields, fake_stripe).json()

    payment = Payment.objects.get(pk=body["id"])
    assert (payment.invoice, payment.amount_minor) == (None, 240_000)
    assert [a.invoice for a in payment.allocations.order_by("position")] == [
        me.november,
        me.december,
    ]
    assert tenant_balance(landlord=me.landlord, tenant=me.tenant) == {"EUR": 0}
    page = tenant_client.get(reverse("portal:pay"), {"currency": "EUR"}).content.decode()
    assert "Nothing to pay here" in page


def test_a_paid_invoice_offers_nothing_to_pay(tenant_client, me, fake_stripe):
    pay(tenant_client, pay_form(tenant_client, invoice=me.november.pk), fake_stripe)

    response = tenant_client.get(reverse("portal:pay"), {"invoice": me.november.pk})

    assert "Nothing to pay here" in response.content.decode()
    assert response.context["setup_client_secret"] == ""


def test_a_key_made_for_another_tenant_is_refused(tenant_client, portal_world, fake_stripe):
    me = portal_world.me
    fields = pay_form(tenant_client, invoice=me.november.pk)
    fields["key"] = f"portal:{portal_world.neighbour.tenant.pk}:{'a' * 32}"

    response = pay(tenant_client, fields, fake_stripe)

    assert response.status_code == 400
    assert "reload the page" in response.json()["errors"]["__all__"][0]
    assert not Payment.objects.filter(tenant=me.tenant, source="stripe").exists()


def test_keeping_the_card_turns_on_autopay(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    body = pay(tenant_client, fields, fake_stripe, save_card="on").json()

    assert body["status"] == "succeeded"
    saved = SavedPaymentMethod.objects.get(tenant=me.tenant)
    assert (saved.autopay, saved.last4) == (True, "4242")
    home = tenant_client.get(reverse("portal:home")).content.decode()
    assert "Autopay is on" in home


def test_a_declined_card_is_not_kept(tenant_client, me, fake_stripe):
    fake_stripe.decline = {"message": "Your card was declined."}
    fields = pay_form(tenant_client, invoice=me.november.pk)

    pay(tenant_client, fields, fake_stripe, save_card="on")

    assert not SavedPaymentMethod.objects.exists()


def test_stripe_down_when_the_page_opens_says_so(tenant_client, me, fake_stripe, monkeypatch):
    import stripe

    from payments import stripe_client

    def down(**kwargs):
        raise stripe.APIConnectionError("down")

    monkeypatch.setattr(stripe_client, "setup_intent_create", down)

    response = tenant_client.get(reverse("portal:pay"), {"invoice": me.november.pk})

    assert response.status_code == 200
    assert "Card payments are not available right now" in response.content.decode()
    assert 'id="pay-form"' not in response.content.decode()


def test_a_plain_form_post_redirects_to_the_payment(tenant_client, me, fake_stripe):
    fields = pay_form(tenant_client, invoice=me.november.pk)

    response = tenant_client.post(
        reverse("portal:pay"), {**fields, "payment_method_id": fake_stripe.add_card()}
    )

    payment = Payment.objects.get(tenant=me.tenant, source="stripe")
    assert response.status_code == 302
    assert response["Location"] == reverse("portal:payment_detail", args=[payment.pk])


# --- saved cards --------------------------------------------------------------------------


def test_a_card_is_added_turned_off_and_on_for_autopay_and_removed(tenant_client, me, fake_stripe):
    page = tenant_client.get(reverse("portal:methods"))
    assert page.context["setup_client_secret"].startswith("seti_")
    assert "No saved payment methods" in page.content.decode()

    pm = fake_stripe.add_card("1881")
    tenant_client.post(reverse("portal:method_add"), {"payment_method_id": pm, "autopay": "on"})
    saved = SavedPaymentMethod.objects.get(tenant=me.tenant)
    assert saved.autopay

    tenant_client.post(reverse("portal:method_autopay", args=[saved.pk]))
    saved.refresh_from_db()
    assert not saved.autopay
    tenant_client.post(reverse("portal:method_autopay", args=[saved.pk]), {"autopay": "on"})
    saved.refresh_from_db()
    assert saved.autopay

    tenant_client.post(reverse("portal:method_remove", args=[saved.pk]))
    saved.refresh_from_db()
    assert saved.detached_at is not None and not saved.autopay
    assert (
        "No saved payment methods" in tenant_client.get(reverse("portal:methods")).content.decode()
    )


def test_removing_a_saved_card_asks_first_and_the_list_has_no_one_click_remove(
    tenant_client, me, fake_stripe
):
    # "Remove" posted at once: one stray click detached the card at Stripe (it cannot be
    # attached again) and stopped autopay, so the next rent went unpaid.
    pm = fake_stripe.add_card("1881")
    tenant_client.post(reverse("portal:method_add"), {"payment_method_id": pm, "autopay": "on"})
    saved = SavedPaymentMethod.objects.get(tenant=me.tenant)
    url = reverse("portal:method_remove", args=[saved.pk])

    listing = tenant_client.get(reverse("portal:methods")).content.decode()
    confirm = tenant_client.get(url)

    assert f'action="{url}"' not in listing
    assert f'href="{url}"' in listing
    assert confirm.status_code == 200
    assert "autopay" in confirm.content.decode().lower()
    saved.refresh_from_db()
    assert saved.detached_at is None and saved.autopay
    assert [call for call, _kw in fake_stripe.calls if call == "payment_method_detach"] == []


def test_a_german_tenant_types_the_amount_with_a_decimal_comma(tenant_client, me, fake_stripe):
    Tenant.objects.filter(pk=me.tenant.pk).update(language="de")
    page = tenant_client.get(reverse("portal:pay"), {"invoice": me.november.pk})
    assert 'value="1200,00"' in page.content.decode()
    fields = pay_form(tenant_client, invoice=me.november.pk)

    wrong = pay(tenant_client, fields, fake_stripe, amount="zwölf")
    body = pay(tenant_client, fields, fake_stripe, amount="1.000,50").json()

    assert wrong.json()["errors"]["amount"] == ["Geben Sie einen Betrag wie 250,00 ein."]
    assert body["status"] == "succeeded"
    assert open_on(me, me.november) == 120_000 - 100_050


@pytest.mark.parametrize(
    ("decline", "german"),
    [
        (
            {"code": "card_declined", "decline_code": "insufficient_funds"},
            "Auf Ihrem Kartenkonto ist nicht genug Deckung.",
        ),
        ({"code": "expired_card"}, "Ihre Karte ist abgelaufen."),
        ({"code": "card_declined", "decline_code": "something_new"}, "Ihre Karte wurde abgelehnt."),
        ({"code": "no_such_code"}, "Die Zahlung ist nicht durchgegangen."),
    ],
)
def test_a_german_tenant_reads_why_the_card_was_declined_in_german(
    tenant_client, me, fake_stripe, decline, german
):
    Tenant.objects.filter(pk=me.tenant.pk).update(language="de")
    fake_stripe.decline = {**decline, "message": "Your card was declined (Stripe's English)."}
    fields = pay_form(tenant_client, invoice=me.november.pk)

    body = pay(tenant_client, fields, fake_stripe).json()

    assert body["status"] == "failed"
    assert body["message"] == german
    payment = Payment.objects.get(tenant=me.tenant, source="stripe")
    # Stripe's words are kept for staff; the tenant's pages speak German.
    assert payment.failure_message == "Your card was declined (Stripe's English)."
    for url in (reverse("portal:payment_detail", args=[payment.pk]), reverse("portal:home")):
        page = tenant_client.get(url).content.decode()
        assert "Stripe's English" not in page
    page = tenant_client.get(reverse("portal:payment_detail", args=[payment.pk])).content.decode()
    assert german.replace("'", "&#x27;") in page
    status = tenant_client.get(reverse("portal:payment_status", args=[payment.pk])).json()
    assert status["message"] == german
