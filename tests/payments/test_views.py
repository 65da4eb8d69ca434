"""Staff payment pages: list, detail, manual payments and their reversal, the Stripe
event log and its reprocess button. Landlord B (`world.other`) always has a payment
and events of its own, so a page that forgets its scope shows them."""

import csv
import io
import itertools
from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from payments import services
from payments.models import EventStatus, Method, Payment, PaymentStatus, StripeEvent
from tests.factories import LeaseFactory, MembershipFactory
from tests.payments import stripe_objects as so
from tests.payments.helpers import balances, books_ok, pi_event, start, status_of

pytestmark = pytest.mark.django_db

RENT = 120_000
SEQ = itertools.count(1)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def url(name, *args):
    return reverse(f"dashboard:{name}", args=args)


def login(client, landlord, role):
    client.force_login(MembershipFactory(landlord=landlord, role=role).user)
    return client


def record(world, amount=RENT, landlord=None, tenant=None, **kwargs):
    return services.manual_payment_record(
        landlord=landlord or world.landlord,
        tenant=tenant or world.tenant,
        amount_minor=amount,
        currency=kwargs.pop("currency", "EUR"),
        method=kwargs.pop("method", Method.CHEQUE),
        reference=kwargs.pop("reference", "Cheque 004711"),
        received_on=kwargs.pop("received_on", date(2026, 11, 20)),
        actor=None,
        **kwargs,
    )


def stored_event(landlord, *, status=EventStatus.FAILED, event_id=None, error="boom"):
    event = so.event(
        "payment_intent.processing",
        so.payment_intent(id=f"pi_{next(SEQ)}", amount=100, status="processing"),
    )
    if event_id:
        event["id"] = event_id
    return StripeEvent.objects.create(
        landlord=landlord,
        event_id=event["id"],
        type=event["type"],
        created=timezone.now(),
        payload=event,
        raw_body="{}",
        status=status,
        error=error,
    )


def form_data(**overrides):
    data = {
        "amount": "1,200.00",
        "currency": "EUR",
        "method": "cash",
        "reference": "Receipt 17",
        "received_on": "2026-11-20",
        "invoice": "",
        "token": "tok-1",
    }
    return data | overrides


# --- scoping and roles --------------------------------------------------------------


def test_every_page_is_404_for_another_landlords_ids(staff_client, world):
    their_payment = Payment.objects.get(landlord=world.other)
    their_event = stored_event(world.other)
    gets = [
        url("payment_detail", their_payment.pk),
        url("payment_reverse", their_payment.pk),
        url("tenant_payment_record", world.other_tenant.pk),
        url("stripe_event_detail", their_event.pk),
    ]
    for path in gets:
        assert staff_client.get(path).status_code == 404, path
    posts = gets[1:3] + [url("stripe_event_reprocess", their_event.pk)]
    for path in posts:
        assert staff_client.post(path, {"reason": "x", **form_data()}).status_code == 404, path
    their_payment.refresh_from_db()
    their_event.refresh_from_db()
    assert their_payment.status == PaymentStatus.SUCCEEDED
    assert (their_event.status, their_event.attempts) == (EventStatus.FAILED, 0)


def test_events_of_no_landlord_are_404_too(staff_client, world):
    orphan = stored_event(None, status=EventStatus.UNMATCHED)
    assert staff_client.get(url("stripe_event_detail", orphan.pk)).status_code == 404
    assert staff_client.post(url("stripe_event_reprocess", orphan.pk)).status_code == 404


def test_a_viewer_can_look_but_not_record_reverse_or_reprocess(client, world):
    login(client, world.landlord, "viewer")
    payment = record(world)
    event = stored_event(world.landlord)
    for name, arg in [
        ("payment_list", None),
        ("payment_detail", payment.pk),
        ("stripe_event_list", None),
        ("stripe_event_detail", event.pk),
    ]:
        response = client.get(url(name, arg) if arg else url(name))
        assert response.status_code == 200, name
    detail = client.get(url("payment_detail", payment.pk)).content.decode()
    assert "Reverse…" not in detail
    assert ">Reprocess<" not in client.get(url("stripe_event_detail", event.pk)).content.decode()
    assert client.get(url("tenant_payment_record", world.tenant.pk)).status_code == 403
    assert (
        client.post(url("tenant_payment_record", world.tenant.pk), form_data()).status_code == 403
    )
    assert client.get(url("payment_reverse", payment.pk)).status_code == 403
    assert client.post(url("payment_reverse", payment.pk), {"reason": "x"}).status_code == 403
    assert client.post(url("stripe_event_reprocess", event.pk)).status_code == 403
    payment.refresh_from_db()
    event.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED and event.attempts == 0
    assert Payment.objects.filter(landlord=world.landlord).count() == 1


def test_anonymous_users_go_to_the_login_page(client, world):
    response = client.get(url("payment_list"))
    assert response.status_code == 302 and "/login" in response["Location"]


# --- list and detail ----------------------------------------------------------------


def test_the_list_shows_only_the_landlords_payments_with_filters_and_search(staff_client, world):
    cheque = record(world, 10_000, reference="Cheque 1")
    cash = record(world, 20_000, method=Method.CASH, reference="Envelope")
    pending = start(world, 5_000, allow_partial=True)

    def listed(**params):
        response = staff_client.get(url("payment_list"), params)
        assert response.status_code == 200
        return [p.pk for p in response.context["page"].object_list]

    assert listed() == [pending.pk, cash.pk, cheque.pk]
    body = staff_client.get(url("payment_list")).content.decode()
    assert "Ada Tenant" in body and "B cash" not in body and "Bo Other" not in body
    assert listed(method="cash") == [cash.pk]
    assert listed(source="stripe") == [pending.pk]
    assert listed(status="requires_payment") == [pending.pk]
    assert listed(q="cheque 1") == [cheque.pk]
    assert listed(q="ada") == [pending.pk, cash.pk, cheque.pk]
    assert listed(q=pending.stripe_payment_intent_id) == [pending.pk]
    assert listed(q="B cash") == []
    assert listed(tenant=world.tenant.pk) == [pending.pk, cash.pk, cheque.pk]
    assert listed(tenant=world.other_tenant.pk) == []
    assert listed(status="bogus", method="x", source="y", tenant="z", page="99") == [
        pending.pk,
        cash.pk,
        cheque.pk,
    ]
    assert (
        "No payment matches" in staff_client.get(url("payment_list"), {"q": "zzz"}).content.decode()
    )


def test_the_payments_csv_has_the_filtered_payments_of_this_landlord(client, world):
    cheque = record(world, 10_000, reference="=SUM(A1:A9)")
    cash = record(world, 20_050, method=Method.CASH, reference="Envelope")
    finance = login(client, world.landlord, "finance")
    page = finance.get(url("payment_list"), {"method": "cash"}).content.decode()
    assert f'href="{url("payment_list_csv")}?method=cash"' in page

    response = finance.get(url("payment_list_csv"))
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [int(r["payment_id"]) for r in rows] == [cash.pk, cheque.pk]
    assert "B cash" not in body and "Bo Other" not in body
    by_id = {int(r["payment_id"]): r for r in rows}
    assert by_id[cash.pk]["amount"] == "200.50" and by_id[cash.pk]["method"] == "cash"
    assert by_id[cheque.pk]["reference"] == "'=SUM(A1:A9)"  # text, never a formula
    assert by_id[cheque.pk]["received_on"] == "2026-11-20"
    assert by_id[cheque.pk]["tenant"] == "Ada Tenant"
    only = finance.get(url("payment_list_csv"), {"method": "cash"})
    assert b"Envelope" in b"".join(only.streaming_content)
    assert login(client, world.landlord, "viewer").get(url("payment_list_csv")).status_code == 403


def test_a_payments_export_with_a_bad_filter_is_a_400_naming_it(staff_client, world):
    record(world, 10_000)
    response = staff_client.get(url("payment_list_csv"), {"method": "gold", "tenant": "x"})
    assert response.status_code == 400
    assert response.content.decode().splitlines() == [
        "method: Choose one of bank_transfer, card, cash, cheque, sepa_debit, us_bank_account.",
        "tenant: Enter a whole number.",
    ]
    # The list page searches for what it was given, "²" included, without failing.
    assert staff_client.get(url("payment_list"), {"q": "²", "tenant": "²"}).status_code == 200


def test_the_empty_list_says_where_payments_come_from(staff_client, landlord, other_landlord):
    body = staff_client.get(url("payment_list")).content.decode()
    assert "No payments yet" in body


def test_the_list_runs_a_fixed_number_of_queries(staff_client, world):
    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert staff_client.get(url("payment_list")).status_code == 200
        return len(ctx.captured_queries)

    record(world, 1_000)
    few = count()
    for i in range(8):
        record(world, 1_000 + i, method=Method.BANK_TRANSFER, reference=f"T{i}")
    start(world, 7_000, allow_partial=True)
    assert count() == few


def test_the_detail_shows_allocation_ledger_and_stripe_ids(staff_client, world, deliver):
    card = start(world, RENT, invoice=world.december)
    deliver(pi_event(card, "succeeded"))
    card.refresh_from_db()
    body = staff_client.get(url("payment_detail", card.pk)).content.decode()
    assert card.stripe_payment_intent_id in body
    assert card.stripe_charge_id and card.stripe_charge_id in body
    assert world.december.number in body and "Reverse…" not in body

    manual = record(world, 1_000_000)  # more than all that is owed
    body = staff_client.get(url("payment_detail", manual.pk)).content.decode()
    assert world.november.number in body and "Tenant credit" in body
    assert "Cheque 004711" in body and "Reverse…" in body
    assert "Dr bank" in body and "Cr receivable" in body

    failed = start(world, 9_000, key="portal-2", allow_partial=True)
    deliver(
        pi_event(
            failed,
            "requires_payment_method",
            error={
                "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
            },
        )
    )
    failed.refresh_from_db()
    body = staff_client.get(url("payment_detail", failed.pk)).content.decode()
    assert failed.status == PaymentStatus.FAILED
    assert "insufficient funds" in body and "has not arrived" in body


# --- recording and reversing --------------------------------------------------------


def test_recording_a_payment_posts_it_and_allocates_it(staff_client, world):
    page = staff_client.get(url("tenant_payment_record", world.tenant.pk))
    assert page.status_code == 200
    form = page.context["form"]
    assert form.initial["currency"] == "EUR" and form.initial["token"]
    assert set(form.fields["invoice"].queryset) == {world.november, world.december}

    data = form_data(invoice=world.december.pk)
    response = staff_client.post(url("tenant_payment_record", world.tenant.pk), data)
    payment = Payment.objects.get(landlord=world.landlord)
    assert response.status_code == 302
    assert response["Location"] == url("payment_detail", payment.pk)
    assert (payment.amount_minor, payment.method, payment.status) == (
        RENT,
        Method.CASH,
        PaymentStatus.SUCCEEDED,
    )
    assert payment.created_by is not None and payment.reference == "Receipt 17"
    assert status_of(world.landlord, world.december) == "paid"
    assert status_of(world.landlord, world.november) == "overdue"
    assert balances(world.landlord)["bank"] == RENT
    # A double submit of the same form records once.
    staff_client.post(url("tenant_payment_record", world.tenant.pk), data)
    assert Payment.objects.filter(landlord=world.landlord).count() == 1
    books_ok(world.landlord)


def test_the_tenant_page_links_to_record_a_payment(staff_client, client, world):
    body = staff_client.get(url("tenant_detail", world.tenant.pk)).content.decode()
    assert url("tenant_payment_record", world.tenant.pk) in body


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": ""}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "12.345"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"amount": "99999999999999999999999"}, "amount"),
        ({"currency": "XXQ"}, "currency"),
        ({"currency": ""}, "currency"),
        ({"method": "card"}, "method"),
        ({"received_on": "20/11/2026"}, "received_on"),
        ({"received_on": "2099-01-01"}, "received_on"),
        ({"invoice": "999999"}, "invoice"),
        ({"currency": "USD", "amount": "10"}, "currency"),  # the tenant is billed in EUR
    ],
)
def test_bad_input_is_a_field_error_and_changes_nothing(staff_client, world, overrides, field):
    data = form_data(invoice=world.november.pk) | overrides
    response = staff_client.post(url("tenant_payment_record", world.tenant.pk), data)
    assert response.status_code == 200
    assert field in response.context["form"].errors, response.context["form"].errors
    assert not Payment.objects.filter(landlord=world.landlord).exists()
    assert balances(world.landlord).get("bank", 0) == 0


def test_another_landlords_invoice_cannot_be_chosen(staff_client, world):
    data = form_data(invoice=world.other_invoices[0].pk)
    response = staff_client.post(url("tenant_payment_record", world.tenant.pk), data)
    assert "invoice" in response.context["form"].errors
    assert not Payment.objects.filter(landlord=world.landlord).exists()


def test_a_yen_amount_has_no_decimals(staff_client, world):
    LeaseFactory(unit__property__landlord=world.landlord, currency="JPY", tenants=[world.tenant])
    data = form_data(currency="JPY", amount="1500.5")
    response = staff_client.post(url("tenant_payment_record", world.tenant.pk), data)
    assert "amount" in response.context["form"].errors
    data = form_data(currency="jpy", amount="1,500")
    response = staff_client.post(url("tenant_payment_record", world.tenant.pk), data)
    payment = Payment.objects.get(landlord=world.landlord)
    assert (payment.amount_minor, payment.currency) == (1500, "JPY")


def test_reversing_asks_for_a_reason_then_reopens_the_invoice(staff_client, world):
    payment = record(world)
    assert status_of(world.landlord, world.november) == "paid"
    page = staff_client.get(url("payment_reverse", payment.pk))
    assert page.status_code == 200 and "cannot be undone" in page.content.decode()

    response = staff_client.post(url("payment_reverse", payment.pk), {"reason": "  "})
    assert response.status_code == 200 and "reason" in response.context["form"].errors
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED

    response = staff_client.post(url("payment_reverse", payment.pk), {"reason": "Cheque bounced"})
    assert response.status_code == 302
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REVERSED
    assert payment.reversal_reason == "Cheque bounced"
    assert status_of(world.landlord, world.november) == "overdue"
    assert balances(world.landlord)["bank"] == 0
    body = staff_client.get(url("payment_detail", payment.pk)).content.decode()
    assert "reversed: Cheque bounced" in body and "Reverse…" not in body

    again = staff_client.post(url("payment_reverse", payment.pk), {"reason": "again"})
    assert again.status_code == 200 and "already reversed" in again.content.decode()
    assert (
        "already reversed" in staff_client.get(url("payment_reverse", payment.pk)).content.decode()
    )
    books_ok(world.landlord)


def test_a_stripe_payment_is_not_reversed_here(staff_client, world, deliver):
    card = start(world, RENT, allow_partial=True)
    deliver(pi_event(card, "succeeded"))
    page = staff_client.get(url("payment_reverse", card.pk)).content.decode()
    assert "refunded in Stripe" in page
    response = staff_client.post(url("payment_reverse", card.pk), {"reason": "tenant asked"})
    assert response.status_code == 200
    card.refresh_from_db()
    assert card.status == PaymentStatus.SUCCEEDED


# --- Stripe event log ---------------------------------------------------------------


def test_the_event_log_shows_only_the_landlords_events(staff_client, world):
    mine = stored_event(world.landlord, event_id="evt_mine_failed")
    done = stored_event(
        world.landlord, status=EventStatus.PROCESSED, event_id="evt_mine_ok", error=""
    )
    stored_event(world.other, event_id="evt_theirs")
    stored_event(None, status=EventStatus.UNMATCHED, event_id="evt_nobody")
    response = staff_client.get(url("stripe_event_list"))
    assert [e.pk for e in response.context["page"].object_list] == [done.pk, mine.pk]
    body = response.content.decode()
    assert "evt_theirs" not in body and "evt_nobody" not in body
    failed = staff_client.get(url("stripe_event_list"), {"status": "failed"})
    assert [e.pk for e in failed.context["page"].object_list] == [mine.pk]
    bogus = staff_client.get(url("stripe_event_list"), {"status": "bogus"})
    assert len(bogus.context["page"].object_list) == 2
    empty = staff_client.get(url("stripe_event_list"), {"status": "ignored"}).content.decode()
    assert "No ignored events" in empty

    detail = staff_client.get(url("stripe_event_detail", mine.pk)).content.decode()
    assert "evt_mine_failed" in detail and "boom" in detail and ">Reprocess<" in detail
    assert "&quot;payment_intent.processing&quot;" in detail  # the pretty payload
    ok = staff_client.get(url("stripe_event_detail", done.pk)).content.decode()
    assert ">Reprocess<" not in ok


def test_the_empty_event_log_explains_itself(staff_client, landlord, other_landlord):
    assert "No Stripe events yet" in staff_client.get(url("stripe_event_list")).content.decode()


def test_reprocess_moves_a_failed_event_to_processed_once_the_cause_is_fixed(
    staff_client, world, deliver, monkeypatch
):
    payment = start(world, RENT, invoice=world.december)

    def broken(payment, **_kwargs):
        raise RuntimeError("mail template missing")

    monkeypatch.setattr(services, "_receipt_queue", broken)
    event = pi_event(payment, "succeeded")
    deliver(event)
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert stored.status == EventStatus.FAILED
    # A first failure already records whose event it is, so it shows on the event log.
    assert stored.landlord_id == world.landlord.pk
    assert event["id"] in staff_client.get(url("stripe_event_list")).content.decode()

    # Still broken: the button records another failed attempt, nothing posted.
    response = staff_client.post(url("stripe_event_reprocess", stored.pk))
    assert response.status_code == 302
    stored.refresh_from_db()
    assert (stored.status, stored.attempts) == (EventStatus.FAILED, 2)
    assert status_of(world.landlord, world.december) == "overdue"

    monkeypatch.undo()
    response = staff_client.post(url("stripe_event_reprocess", stored.pk), follow=True)
    stored.refresh_from_db()
    assert (stored.status, stored.attempts, stored.error) == (EventStatus.PROCESSED, 3, "")
    assert "processed" in response.content.decode()
    assert status_of(world.landlord, world.december) == "paid"
    # Pressing it again does nothing more.
    staff_client.post(url("stripe_event_reprocess", stored.pk))
    stored.refresh_from_db()
    assert stored.attempts == 3
    assert balances(world.landlord)["receivable"] == RENT  # November still open
    books_ok(world.landlord)


def test_reprocess_is_post_only(staff_client, world):
    event = stored_event(world.landlord)
    assert staff_client.get(url("stripe_event_reprocess", event.pk)).status_code == 405


def test_the_event_log_pages_keep_the_filter_and_a_fixed_query_count(staff_client, world):
    def get(**params):
        with CaptureQueriesContext(connection) as ctx:
            response = staff_client.get(url("stripe_event_list"), params)
        assert response.status_code == 200
        return response, len(ctx.captured_queries)

    stored_event(world.landlord)
    _, few = get(status="failed")
    for _ in range(30):
        stored_event(world.landlord)
    response, many = get(status="failed")
    assert many == few
    assert response.context["page"].paginator.num_pages == 2
    assert "?status=failed&amp;page=2" in response.content.decode()
    second, _ = get(status="failed", page="2")
    assert len(second.context["page"].object_list) == 31 - len(response.context["page"].object_list)


def test_the_record_form_can_start_with_an_invoice_chosen(staff_client, world):
    page = staff_client.get(
        url("tenant_payment_record", world.tenant.pk), {"invoice": world.december.pk}
    )
    assert page.context["form"].initial["invoice"] == world.december.pk
    theirs = staff_client.get(
        url("tenant_payment_record", world.tenant.pk), {"invoice": world.other_invoices[0].pk}
    )
    assert "invoice" not in theirs.context["form"].initial


def test_the_record_payment_form_offers_only_invoices_with_something_left_to_pay(
    staff_client, world
):
    record(world)  # pays November in full
    page = staff_client.get(url("tenant_payment_record", world.tenant.pk))
    choices = list(page.context["form"].fields["invoice"].queryset)
    assert choices == [world.december]
    assert f"{world.december.number} · Dec 2026 · " in page.content.decode()
    assert world.november.number not in page.content.decode().split('name="invoice"')[1]


def test_a_payment_posted_while_german_is_active_is_described_in_english(world):
    # The ledger is append-only and read by everyone: "Payment 112 (Karte)" was stored
    # for a payment posted during a German tenant's request.
    from django.utils import translation

    from ledger.models import LedgerTransaction

    with translation.override("de"):
        payment = record(world)
    posting = LedgerTransaction.objects.get(pk=payment.posting_id)
    assert posting.description == f"Payment {payment.pk} (Cheque)"
