import json
import time

import psycopg
import pytest
from django.urls import reverse

from payments.models import EventStatus, StripeEvent
from tests.payments import stripe_objects as so
from tests.payments.conftest import SECRET

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _second_landlord_data(world):
    """Every test here runs with both landlords' invoices and payments present."""


def ping(type_="customer.created", **kwargs):
    return so.event(type_, so.example("customer"), **kwargs)


def test_a_missing_signature_is_refused_and_nothing_is_stored(deliver):
    response = deliver(ping(), signature=None)
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_signature_made_with_another_secret_is_refused_and_nothing_is_stored(deliver):
    response = deliver(ping(), secret="whsec_someone_else")
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_garbled_signature_header_is_refused(deliver):
    assert deliver(ping(), signature="t=abc,v1=zz").status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_body_changed_after_signing_is_refused(client):
    event = ping()
    body = json.dumps(event).encode()
    header = so.sign(body, secret=SECRET)
    tampered = body.replace(b'"livemode": false', b'"livemode": true')
    response = client.post(
        reverse("stripe-webhook"),
        data=tampered,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_timestamp_older_than_the_tolerance_is_refused(deliver):
    response = deliver(ping(), timestamp=int(time.time()) - 301)
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_timestamp_from_the_future_beyond_the_tolerance_is_refused(deliver):
    response = deliver(ping(), timestamp=int(time.time()) + 301)
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_timestamp_within_the_tolerance_is_accepted(deliver):
    assert deliver(ping(), timestamp=int(time.time()) - 250).status_code == 200


def test_without_a_configured_secret_every_delivery_is_refused(deliver, settings):
    settings.STRIPE_WEBHOOK_SECRET = ""
    assert deliver(ping()).status_code == 400
    assert not StripeEvent.objects.exists()


def test_a_signed_body_that_is_not_json_is_refused(deliver):
    assert deliver(None, body=b"{not json").status_code == 400
    assert not StripeEvent.objects.exists()


def test_signed_json_that_is_not_an_event_is_refused(deliver):
    assert deliver(None, body=b'{"hello": "world"}').status_code == 400
    assert not StripeEvent.objects.exists()


def test_only_post_is_allowed(client):
    assert client.get(reverse("stripe-webhook")).status_code == 405


def test_a_duplicate_delivery_is_stored_and_processed_once(deliver):
    event = ping()
    assert deliver(event).status_code == 200
    assert deliver(event).status_code == 200
    stored = StripeEvent.objects.get()
    assert stored.event_id == event["id"]
    assert stored.attempts == 1


def test_an_unknown_event_type_is_stored_and_ignored_with_200(deliver):
    event = ping("plan.created")
    assert deliver(event).status_code == 200
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert stored.status == EventStatus.IGNORED
    assert stored.raw_body == json.dumps(event)
    assert stored.payload["type"] == "plan.created"


def test_the_webhook_stores_an_event_with_a_single_statement(client, monkeypatch):
    # Counted at psycopg's level: the insert runs on a server-binding cursor, which
    # Django's query counter does not see.
    statements: list[str] = []
    execute = psycopg.Cursor.execute

    def counting(self, query, *args, **kwargs):
        statements.append(str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counting)
    event = ping()
    body = json.dumps(event).encode()
    response = client.post(
        reverse("stripe-webhook"),
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=so.sign(body, secret=SECRET),
    )
    monkeypatch.undo()
    assert response.status_code == 200
    assert len(statements) == 1 and "INSERT INTO payments_stripeevent" in statements[0]
    stored = StripeEvent.objects.get()
    assert stored.status == EventStatus.RECEIVED
    assert stored.raw_body == body.decode()


def test_an_event_for_an_unknown_payment_intent_is_kept_as_unmatched(deliver):
    pi = so.payment_intent(id="pi_nobody", amount=100, status="succeeded")
    event = so.event("payment_intent.succeeded", pi)
    assert deliver(event).status_code == 200
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert stored.status == EventStatus.UNMATCHED
    assert "pi_nobody" in stored.error
    assert stored.landlord is None


def test_an_event_for_an_unknown_connected_account_is_kept_as_unmatched(deliver):
    event = so.event(
        "account.updated",
        so.account(id="acct_unknown", charges_enabled=True),
        account="acct_unknown",
    )
    assert deliver(event).status_code == 200
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert stored.status == EventStatus.UNMATCHED
    assert "acct_unknown" in stored.error


# --- processing with a broker: drains -------------------------------------------------


@pytest.fixture
def drains_queued(monkeypatch):
    """The drain tasks a webhook would queue (with a real broker), not run."""
    from django.core.cache import cache

    from payments import services
    from payments.tasks import stripe_events_drain

    queued: list[None] = []
    monkeypatch.setattr(stripe_events_drain, "delay", lambda: queued.append(None))
    cache.delete(services._drain_flag_key())
    yield queued
    cache.delete(services._drain_flag_key())


def store(event) -> None:
    from payments import services

    services.stripe_event_store(event=event, raw_body=json.dumps(event), enqueue=False)


def test_a_drain_processes_every_received_event_and_leaves_the_rest(drains_queued):
    from payments import services

    new = [ping(), ping("plan.created"), ping()]
    for event in new:
        store(event)
    done = ping()
    store(done)
    StripeEvent.objects.filter(event_id=done["id"]).update(status=EventStatus.PROCESSED)

    assert services.stripe_events_drain() == 3
    statuses = dict(StripeEvent.objects.values_list("event_id", "status"))
    assert {statuses[e["id"]] for e in new} == {EventStatus.IGNORED}
    assert statuses[done["id"]] == EventStatus.PROCESSED
    assert set(StripeEvent.objects.values_list("attempts", flat=True)) == {0, 1}
    assert services.stripe_events_drain() == 0


def test_new_events_queue_one_drain_until_it_starts(drains_queued):
    from payments import services

    for _ in range(3):
        services._drain_request()
    assert len(drains_queued) == 1
    services.stripe_events_drain()  # starting clears the flag
    services._drain_request()
    assert len(drains_queued) == 2


def test_a_drain_with_a_backlog_queues_a_partner_and_stops_at_its_budget(drains_queued):
    from payments import services

    for _ in range(5):
        store(ping())
    assert services.stripe_events_drain(max_events=3) == 3
    assert len(drains_queued) == 1  # the partner (the successor finds it queued already)
    assert StripeEvent.objects.filter(status=EventStatus.RECEIVED).count() == 2


def test_when_the_broker_is_down_the_event_waits_for_the_sweep(monkeypatch, drains_queued):
    from payments import services
    from payments.tasks import stripe_events_drain

    def down():
        raise ConnectionError("broker down")

    monkeypatch.setattr(stripe_events_drain, "delay", down)
    services._drain_request()  # logged, not raised: the webhook still answers 200
    monkeypatch.setattr(stripe_events_drain, "delay", lambda: drains_queued.append(None))
    services._drain_request()  # the flag was cleared, so the next event tries again
    assert len(drains_queued) == 1


def test_a_failing_event_in_a_drain_is_recorded_and_the_rest_goes_on(drains_queued, monkeypatch):
    from payments import services

    broken, fine = ping(), ping()
    store(broken)
    store(fine)
    dispatch = services._dispatch

    def failing(event):
        if event.event_id == broken["id"]:
            # Work the handler did before failing must go with its transaction.
            StripeEvent.objects.filter(event_id=fine["id"]).update(error="touched")
            raise RuntimeError("handler broke")
        return dispatch(event)

    monkeypatch.setattr(services, "_dispatch", failing)
    assert services.stripe_events_drain() == 2
    failed = StripeEvent.objects.get(event_id=broken["id"])
    assert (failed.status, failed.attempts) == (EventStatus.FAILED, 1)
    assert failed.error.startswith("RuntimeError: handler broke")
    other = StripeEvent.objects.get(event_id=fine["id"])
    assert (other.status, other.error) == (EventStatus.IGNORED, "")


def test_a_failure_is_not_recorded_over_an_event_processed_meanwhile(drains_queued):
    from payments import services

    event = ping()
    store(event)
    row = StripeEvent.objects.get(event_id=event["id"])
    StripeEvent.objects.filter(pk=row.pk).update(status=EventStatus.PROCESSED)
    services._event_refused(row, claimed_status=EventStatus.RECEIVED, exc=RuntimeError("late"))
    row.refresh_from_db()
    assert (row.status, row.error) == (EventStatus.PROCESSED, "")


def test_drain_requests_from_many_deliveries_are_coalesced_off_the_request_thread(
    drains_queued, monkeypatch
):
    """A delivery only flags that a drain is wanted; the process's request thread
    makes one Redis request for every delivery flagged since its last one."""
    import threading

    from payments import services

    calls: list[str] = []
    real = services._drain_request

    def counted(key=None):
        calls.append(threading.current_thread().name)
        real(key)

    monkeypatch.setattr(services, "_drain_request", counted)
    requests = services._DrainRequests()
    monkeypatch.setattr(requests, "COALESCE_SECONDS", 0.2)
    requests.ask()
    deadline = time.monotonic() + 5
    while not drains_queued and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(drains_queued) == 1
    for _ in range(20):  # while the thread waits out its coalescing pause
        requests.ask()
    deadline = time.monotonic() + 5
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert calls == ["stripe-drain-requests"] * 2  # 21 deliveries, two requests
    assert len(drains_queued) == 1  # the flag was still set: no second task


def test_a_failing_drain_request_does_not_stop_later_ones(drains_queued, monkeypatch):
    from payments import services

    outcomes = iter([RuntimeError("redis down"), None])
    done: list[None] = []

    def flaky(key=None):
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome
        done.append(None)

    monkeypatch.setattr(services, "_drain_request", flaky)
    requests = services._DrainRequests()
    monkeypatch.setattr(requests, "COALESCE_SECONDS", 0.01)
    requests.ask()
    time.sleep(0.2)
    requests.ask()
    deadline = time.monotonic() + 5
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert done == [None]


def test_a_pending_drain_request_is_made_when_the_process_exits(drains_queued):
    """`flush` (registered with atexit) makes the request of deliveries not yet served."""
    from payments import services

    requests = services._DrainRequests()
    with requests._lock:
        requests._keys.add(services._drain_flag_key())
    requests.flush()
    assert len(drains_queued) == 1
    requests.flush()  # nothing pending: nothing asked
    assert len(drains_queued) == 1
