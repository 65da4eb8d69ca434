import json
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from payments import services
from payments.models import EventStatus, PaymentStatus, StripeEvent
from tests.factories import UserFactory
from tests.payments import stripe_objects as so
from tests.payments.helpers import balances, payment_transactions, pi_event, start, status_of

pytestmark = pytest.mark.django_db

RENT = 120_000


def test_a_failing_handler_rolls_back_its_work_and_reprocess_failed_retries_it(
    world, deliver, monkeypatch, capsys
):
    payment = start(world, RENT, invoice=world.december)

    def broken(payment, **_kwargs):
        raise RuntimeError("mail template missing")

    # Fails after the posting was written: the savepoint must take it back.
    monkeypatch.setattr(services, "_receipt_queue", broken)
    event = pi_event(payment, "succeeded")
    assert deliver(event).status_code == 200
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert stored.status == EventStatus.FAILED
    assert "RuntimeError: mail template missing" in stored.error
    assert payment_transactions(payment) == []
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.REQUIRES_PAYMENT

    monkeypatch.undo()
    call_command("stripe_events", "--reprocess-failed")
    assert "reprocessed 1 event(s): 1 processed" in capsys.readouterr().out
    stored.refresh_from_db()
    assert (stored.status, stored.attempts, stored.error) == (EventStatus.PROCESSED, 2, "")
    assert status_of(world.landlord, world.december) == "paid"
    # Processed events are left alone.
    call_command("stripe_events", "--reprocess-failed")
    assert len(payment_transactions(payment)) == 1


def test_the_command_needs_to_be_told_what_to_do(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("stripe_events")


def test_recovery_stores_and_processes_events_that_never_arrived(world, deliver, fake_stripe):
    payment = start(world, RENT, invoice=world.december)
    missed = pi_event(payment, "succeeded")
    seen = so.event("customer.created", so.example("customer"))
    deliver(seen)
    old = so.event("customer.created", so.example("customer"), created=int(time.time()) - 5 * 86400)
    fake_stripe.events = [missed, seen, old]

    assert services.stripe_events_recover(now=timezone.now()) == 1
    stored = StripeEvent.objects.get(event_id=missed["id"])
    assert stored.status == EventStatus.PROCESSED
    assert json.loads(stored.raw_body)["id"] == missed["id"]
    assert status_of(world.landlord, world.december) == "paid"
    assert not StripeEvent.objects.filter(event_id=old["id"]).exists()
    assert services.stripe_events_recover(now=timezone.now()) == 0
    (gte,) = {kw["created_gte"] for name, kw in fake_stripe.calls if name == "events_list"}
    assert abs(gte - (time.time() - 3 * 86400)) < 60


def test_the_sweep_processes_events_whose_task_was_lost(world, client, fake_stripe):
    payment = start(world, RENT, invoice=world.december)
    event = pi_event(payment, "succeeded")
    body = json.dumps(event).encode()
    # Delivered, but the on-commit task never ran (not captured here).
    client.post(
        reverse("stripe-webhook"),
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=so.sign(body, secret="whsec_test_rentledger"),
    )
    assert StripeEvent.objects.get().status == EventStatus.RECEIVED
    assert services.stripe_events_sweep(now=timezone.now()) == 0  # too recent
    assert services.stripe_events_sweep(now=timezone.now() + timedelta(minutes=3)) == 1
    assert StripeEvent.objects.get().status == EventStatus.PROCESSED
    assert balances(world.landlord)["cash_in_transit"] == RENT


def test_the_admin_lists_events_read_only_and_reprocesses_failed_ones(
    world, client, deliver, monkeypatch
):
    payment = start(world, RENT, invoice=world.december)
    monkeypatch.setattr(services, "_receipt_queue", lambda payment, **_kw: 1 / 0)
    event = pi_event(payment, "succeeded")
    deliver(event)
    monkeypatch.undo()
    stored = StripeEvent.objects.get()
    assert stored.status == EventStatus.FAILED

    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    changelist = reverse("admin:payments_stripeevent_changelist")
    assert client.get(changelist).status_code == 200
    page = client.get(reverse("admin:payments_stripeevent_change", args=[stored.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert client.get(reverse("admin:payments_stripeevent_add")).status_code == 403
    response = client.post(
        changelist, {"action": "reprocess", "_selected_action": [stored.pk]}, follow=True
    )
    assert response.status_code == 200
    stored.refresh_from_db()
    assert stored.status == EventStatus.PROCESSED
