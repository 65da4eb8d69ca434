import json
import time

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from invoices.models import Notification
from payments.models import (
    EventStatus,
    Method,
    Payment,
    PaymentAllocation,
    PaymentStatus,
    StripeConnection,
    StripeEvent,
)
from tests.payments import stripe_objects as so
from tests.payments.helpers import (
    balance_of,
    balances,
    books_ok,
    payment_transactions,
    pi_event,
    start,
    status_of,
)

pytestmark = pytest.mark.django_db

RENT = 120_000


def test_starting_a_payment_creates_the_intent_with_metadata_and_an_idempotency_key(
    world, fake_stripe
):
    payment = start(world, RENT, invoice=world.december)
    assert payment.status == PaymentStatus.REQUIRES_PAYMENT
    (call,) = [kw for name, kw in fake_stripe.calls if name == "payment_intent_create"]
    assert call["idempotency_key"] == f"payment:{payment.pk}:intent"
    assert call["metadata"] == {
        "landlord_id": str(world.landlord.pk),
        "tenant_id": str(world.tenant.pk),
        "payment_id": str(payment.pk),
        "invoice_id": str(world.december.pk),
    }
    assert fake_stripe.keys("customer_create") == [
        f"customer:{world.landlord.pk}:{world.tenant.pk}"
    ]
    again = start(world, RENT, invoice=world.december)
    assert again.pk == payment.pk
    assert len(fake_stripe.keys("payment_intent_create")) == 1


def test_a_fee_in_the_settlement_currency_is_not_booked_in_the_payments(
    world, deliver, fake_stripe
):
    """A EUR payment on an account that settles in GBP: Stripe's fee is in GBP. The
    payment is posted; the fee stays unknown instead of 380 GBP booked as EUR."""
    payment = start(world, RENT, invoice=world.december)
    fake_stripe.add_charge(payment, fee=380, settled_in="gbp")
    assert deliver(pi_event(payment, "succeeded")).status_code == 200
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.fee_minor is None
    assert balances(world.landlord)["cash_in_transit"] == RENT
    assert "processor_fees" not in balances(world.landlord)
    assert status_of(world.landlord, world.december) == "paid"


def test_a_succeeded_payment_posts_balanced_entries_allocated_to_the_chosen_invoice(
    world, deliver, fake_stripe
):
    payment = start(world, RENT, invoice=world.december)
    fake_stripe.add_charge(payment, fee=380)
    assert deliver(pi_event(payment, "succeeded")).status_code == 200

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.stripe_charge_id == f"ch_for_{payment.stripe_payment_intent_id}"
    assert payment.fee_minor == 380
    # The chosen invoice first, although November is older.
    assert status_of(world.landlord, world.december) == "paid"
    assert status_of(world.landlord, world.november) == "overdue"
    assert [(a.invoice_id, a.amount_minor) for a in payment.allocations.all()] == [
        (world.december.pk, RENT)
    ]
    post, fee = payment_transactions(payment)
    assert {(e.account.code, e.amount_minor, e.document_id) for e in post.entries.all()} == {
        ("cash_in_transit", RENT, None),
        ("receivable", -RENT, world.december.pk),
    }
    assert post.idempotency_key == f"payment:{payment.pk}:post"
    assert fee.idempotency_key == f"payment:{payment.pk}:fee"
    assert balances(world.landlord)["cash_in_transit"] == RENT - 380
    assert balances(world.landlord)["processor_fees"] == 380
    books_ok(world.landlord)
    event = StripeEvent.objects.get()
    assert (event.status, event.landlord) == (EventStatus.PROCESSED, world.landlord)


def test_a_receipt_is_queued_once_and_sent(world, deliver, fake_stripe):
    payment = start(world, RENT, invoice=world.december)
    deliver(pi_event(payment, "succeeded"))
    deliver(pi_event(payment, "succeeded"))  # a second event for the same intent
    receipt = Notification.objects.get(landlord=world.landlord, kind="payment_receipt")
    assert receipt.dedupe_key == f"payment:{payment.pk}:receipt:email"
    assert receipt.status == "sent"
    (message,) = [m for m in mail.outbox if "Payment received" in m.subject]
    assert message.to == ["ada@example.test"]
    assert world.december.number in message.body


def test_a_partial_payment_leaves_the_invoice_partially_paid(world, deliver):
    payment = start(world, 50_000, invoice=world.december, allow_partial=True)
    deliver(pi_event(payment, "succeeded"))
    assert status_of(world.landlord, world.december) == "partially_paid"
    assert balance_of(world.landlord, world.december) == RENT - 50_000
    books_ok(world.landlord)


def test_less_than_due_is_refused_unless_partial_payments_are_allowed(world):
    with pytest.raises(ValidationError):
        start(world, 50_000, invoice=world.december)
    assert not Payment.objects.filter(landlord=world.landlord).exists()


def test_paying_the_balance_settles_the_oldest_invoice_first(world, deliver):
    payment = start(world, 150_000, allow_partial=True)
    deliver(pi_event(payment, "succeeded"))
    assert status_of(world.landlord, world.november) == "paid"
    assert balance_of(world.landlord, world.december) == RENT - 30_000


def test_an_overpayment_becomes_tenant_credit_and_pays_the_next_invoice(world, deliver):
    from payments.services import tenant_credit_apply, tenant_credit_balance
    from tests.payments.conftest import bill

    payment = start(world, 3 * RENT)
    assert deliver(pi_event(payment, "succeeded")).status_code == 200
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert (
        tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR") == RENT
    )
    assert PaymentAllocation.objects.get(payment=payment, invoice=None).amount_minor == RENT

    from datetime import date

    (january,) = bill(world.landlord, date(2027, 1, 1))
    assert balance_of(world.landlord, january) == RENT
    (applied,) = tenant_credit_apply(landlord=world.landlord, tenant=world.tenant)
    assert balance_of(world.landlord, january) == 0
    assert tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR") == 0
    assert tenant_credit_apply(landlord=world.landlord, tenant=world.tenant) == []
    books_ok(world.landlord)


def test_success_before_processing_converges_to_one_posting(world, deliver):
    payment = start(world, RENT, invoice=world.december, method=Method.SEPA_DEBIT)
    now = int(time.time())
    deliver(pi_event(payment, "succeeded", created=now, method="sepa_debit"))
    deliver(pi_event(payment, "processing", created=now - 60, method="sepa_debit"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert len(payment_transactions(payment)) == 1
    assert status_of(world.landlord, world.december) == "paid"


def test_a_failure_after_a_success_is_ignored(world, deliver):
    payment = start(world, RENT, invoice=world.december)
    now = int(time.time())
    deliver(pi_event(payment, "succeeded", created=now - 5))
    error = {"code": "card_declined", "message": "Your card was declined."}
    deliver(pi_event(payment, "requires_payment_method", created=now, error=error))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.failure_code == ""
    assert status_of(world.landlord, world.december) == "paid"


def test_a_success_after_a_failure_wins(world, deliver):
    payment = start(world, RENT, invoice=world.december)
    now = int(time.time())
    error = {"code": "card_declined", "decline_code": "insufficient_funds", "message": "No."}
    deliver(pi_event(payment, "requires_payment_method", created=now - 30, error=error))
    payment.refresh_from_db()
    assert (payment.status, payment.decline_code) == (PaymentStatus.FAILED, "insufficient_funds")
    deliver(pi_event(payment, "succeeded", created=now))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert payment.decline_code == ""


def test_a_bank_debit_is_processing_until_it_succeeds(world, deliver):
    payment = start(world, RENT, invoice=world.december, method=Method.SEPA_DEBIT)
    now = int(time.time())
    deliver(pi_event(payment, "processing", created=now - 60, method="sepa_debit"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING
    assert payment_transactions(payment) == []
    assert status_of(world.landlord, world.december) == "overdue"
    deliver(pi_event(payment, "succeeded", created=now, method="sepa_debit"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.SUCCEEDED
    assert status_of(world.landlord, world.december) == "paid"


def test_a_failed_bank_debit_posts_nothing_and_keeps_the_reason(world, deliver):
    payment = start(world, RENT, invoice=world.december, method=Method.SEPA_DEBIT)
    now = int(time.time())
    deliver(pi_event(payment, "processing", created=now - 60, method="sepa_debit"))
    error = {"code": "insufficient_funds", "message": "The account has insufficient funds."}
    deliver(
        pi_event(payment, "requires_payment_method", created=now, error=error, method="sepa_debit")
    )
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED
    assert payment.failure_message == "The account has insufficient funds."
    assert payment_transactions(payment) == []
    assert "cash_in_transit" not in balances(world.landlord)
    # A processing snapshot older than the failure changes nothing.
    deliver(pi_event(payment, "processing", created=now - 30, method="sepa_debit"))
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.FAILED


def test_sepa_debit_is_refused_for_a_currency_other_than_euro(world):
    with pytest.raises(ValidationError):
        start(world, RENT, invoice=world.december, method=Method.US_BANK_ACCOUNT)


def test_an_intent_made_elsewhere_is_adopted_from_its_metadata(world, deliver):
    obj = so.payment_intent(
        id="pi_from_dashboard",
        amount=RENT,
        status="succeeded",
        metadata={
            "landlord_id": str(world.landlord.pk),
            "tenant_id": str(world.tenant.pk),
            "invoice_id": str(world.november.pk),
        },
    )
    deliver(so.event("payment_intent.succeeded", obj))
    payment = Payment.objects.get(stripe_payment_intent_id="pi_from_dashboard")
    assert payment.landlord == world.landlord
    assert status_of(world.landlord, world.november) == "paid"


def test_metadata_naming_another_landlords_tenant_is_unmatched(world, deliver):
    obj = so.payment_intent(
        id="pi_confused",
        amount=RENT,
        status="succeeded",
        metadata={"landlord_id": str(world.landlord.pk), "tenant_id": str(world.other_tenant.pk)},
    )
    event = so.event("payment_intent.succeeded", obj)
    deliver(event)
    assert StripeEvent.objects.get(event_id=event["id"]).status == EventStatus.UNMATCHED
    assert not Payment.objects.filter(stripe_payment_intent_id="pi_confused").exists()


def test_a_connected_accounts_event_selects_its_landlord(world, deliver):
    StripeConnection.objects.create(landlord=world.landlord, account_id="acct_acme")
    StripeConnection.objects.create(landlord=world.other, account_id="acct_bright")
    payment = start(world, RENT, invoice=world.december)
    ok = pi_event(payment, "succeeded", account="acct_acme")
    deliver(ok)
    assert StripeEvent.objects.get(event_id=ok["id"]).landlord == world.landlord

    other = start(world, RENT, invoice=world.november, key="portal-2")
    wrong = pi_event(other, "succeeded", account="acct_bright")
    deliver(wrong)
    stored = StripeEvent.objects.get(event_id=wrong["id"])
    assert stored.status == EventStatus.UNMATCHED
    assert status_of(world.landlord, world.november) == "overdue"


def test_account_updated_sets_the_connection_flags_and_ignores_older_snapshots(world, deliver):
    conn = StripeConnection.objects.create(landlord=world.landlord, account_id="acct_acme")
    now = int(time.time())
    deliver(
        so.event(
            "account.updated",
            so.account(id="acct_acme", charges_enabled=True, payouts_enabled=True),
            account="acct_acme",
            created=now,
        )
    )
    deliver(
        so.event(
            "account.updated",
            so.account(id="acct_acme", charges_enabled=False),
            account="acct_acme",
            created=now - 100,
        )
    )
    conn.refresh_from_db()
    assert (conn.charges_enabled, conn.payouts_enabled, conn.details_submitted) == (
        True,
        True,
        True,
    )


def test_the_credit_sweep_pays_an_invoice_issued_after_the_overpayment(world, deliver):
    from datetime import UTC, date, datetime

    from payments.services import tenant_credit_balance, tenant_credits_apply_due
    from tests.payments.conftest import bill

    payment = start(world, 3 * RENT)
    deliver(pi_event(payment, "succeeded"))
    (january,) = bill(world.landlord, date(2027, 1, 1))
    other_before = other_landlord_books(world)

    assert tenant_credits_apply_due(now=datetime(2027, 1, 1, 12, tzinfo=UTC)) == 1
    assert balance_of(world.landlord, january) == 0
    assert tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR") == 0
    assert tenant_credits_apply_due(now=datetime(2027, 1, 1, 12, 15, tzinfo=UTC)) == 0
    assert other_landlord_books(world) == other_before
    books_ok(world.landlord)


def other_landlord_books(world):
    from ledger.models import LedgerEntry

    return sorted(
        LedgerEntry.objects.exclude(landlord=world.landlord).values_list("pk", "amount_minor")
    )


# Transactional: each event's transaction must really commit for its on-commit hook
# (the receipt) to run inside the drain, as it does in a worker.
@pytest.mark.django_db(transaction=True)
def test_a_drain_sends_the_receipts_of_its_events_in_one_task(world, fake_stripe, monkeypatch):
    from invoices.tasks import notifications_send
    from payments import services

    payments = [
        start(world, 60_000, invoice=world.december, key=f"portal-{n}", allow_partial=True)
        for n in (1, 2)
    ]
    for payment in payments:
        event = pi_event(payment, "succeeded")
        services.stripe_event_store(event=event, raw_body=json.dumps(event), enqueue=False)
    published: list[list[int]] = []
    send = notifications_send.delay

    def spy(**kwargs):
        published.append(sorted(kwargs["notification_ids"]))
        return send(**kwargs)

    monkeypatch.setattr(notifications_send, "delay", spy)
    monkeypatch.setattr(services, "_drain_request", lambda: None)  # no partner drain
    assert services.stripe_events_drain() == 2
    receipts = Notification.objects.filter(landlord=world.landlord, kind="payment_receipt")
    assert published == [sorted(receipts.values_list("pk", flat=True))]
    assert set(receipts.values_list("status", flat=True)) == {"sent"}
    ours = [
        m for m in mail.outbox if "Payment received" in m.subject and m.to == ["ada@example.test"]
    ]
    assert len(ours) == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch", [1, 50])
def test_a_drain_commits_events_asynchronously_and_publishes_only_durable_receipts(
    world, fake_stripe, monkeypatch, batch
):
    """Each event's transaction commits without waiting for the disk; before receipts
    are published, a synchronous commit (of the event itself, or of an empty
    transaction at the end of the drain) has made every earlier commit durable."""
    from django.db import connection

    from payments import services

    for n in (1, 2):
        payment = start(world, 60_000, invoice=world.december, key=f"p-{n}", allow_partial=True)
        event = pi_event(payment, "succeeded")
        services.stripe_event_store(event=event, raw_body=json.dumps(event), enqueue=False)
    log: list[str] = []
    real_rows, real_apply = services.prepared_rows, services._event_apply

    def rows(statement, params):
        if statement in (services._COMMIT_DURABLY_SQL, services._WAL_FLUSH_SQL):
            log.append("durable")
        return real_rows(statement, params)

    def apply(event):
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            log.append(f"event, synchronous_commit {cursor.fetchone()[0]}")
        real_apply(event)

    monkeypatch.setattr(services, "prepared_rows", rows)
    monkeypatch.setattr(services, "_event_apply", apply)
    monkeypatch.setattr(
        services, "_receipts_publish", lambda ids: log.append(f"publish {len(ids)}")
    )
    monkeypatch.setattr(services, "RECEIPT_BATCH", batch)
    monkeypatch.setattr(services, "_drain_request", lambda: None)

    assert services.stripe_events_drain() == 2
    each = "event, synchronous_commit off"
    if batch == 1:
        assert log == [each, "durable", "publish 1", each, "durable", "publish 1"]
    else:
        assert log == [each, each, "durable", "publish 2"]
    with connection.cursor() as cursor:  # the setting was the transactions' own
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


@pytest.mark.django_db(transaction=True)
def test_receipts_are_left_for_the_sweep_when_their_durability_cannot_be_checked(
    world, monkeypatch
):
    from django.db import OperationalError

    from payments import services

    published: list[list[int]] = []

    def unreachable(statement, params):
        raise OperationalError("server closed the connection")

    monkeypatch.setattr(services, "prepared_rows", unreachable)
    monkeypatch.setattr(services, "_receipts_publish", published.append)
    services._receipts_publish_durably([1, 2])
    assert published == []


@pytest.mark.django_db(transaction=True)
def test_an_event_that_leaves_an_on_commit_hook_commits_durably(world, monkeypatch):
    """A handler's on-commit hook (a dunning email's task, say) runs after a commit
    that has reached the disk."""
    from django.db import connection, transaction

    from payments import services

    event = so.event("customer.created", so.example("customer"))
    services.stripe_event_store(event=event, raw_body=json.dumps(event), enqueue=False)
    seen: list[str] = []
    real_rows, real_apply = services.prepared_rows, services._event_apply

    def rows(statement, params):
        if statement == services._COMMIT_DURABLY_SQL:
            seen.append("durable")
        return real_rows(statement, params)

    def apply(event):
        real_apply(event)
        transaction.on_commit(lambda: seen.append("hook"))

    monkeypatch.setattr(services, "prepared_rows", rows)
    monkeypatch.setattr(services, "_event_apply", apply)
    monkeypatch.setattr(services, "_drain_request", lambda: None)
    assert services.stripe_events_drain() == 1
    assert seen == ["durable", "hook"]
    assert connection.run_on_commit == []


@pytest.mark.django_db(transaction=True)
def test_receipts_left_at_the_end_of_a_drain_are_published_after_a_write_commit(world, monkeypatch):
    """The flush before publishing must write WAL (a transaction that wrote none
    commits without waiting for the disk): it touches the rows it publishes."""
    from payments import services
    from tests.invoices.factories import NotificationFactory

    notification = NotificationFactory(tenant=world.tenant, kind="payment_receipt")
    before = notification.updated_at
    published: list[list[int]] = []
    monkeypatch.setattr(services, "_receipts_publish", published.append)
    services._receipts_publish_durably([notification.pk])
    assert published == [[notification.pk]]
    notification.refresh_from_db()
    assert notification.updated_at > before


def test_a_drain_in_an_open_transaction_sends_its_receipts_when_that_commits(
    world, fake_stripe, monkeypatch, django_capture_on_commit_callbacks
):
    """Inside a caller's transaction (a shell, a test) nothing is committed before the
    caller commits: the receipts go out then, not into the finished drain's batch."""
    from payments import services

    payment = start(world, 60_000, invoice=world.december, key="nested", allow_partial=True)
    event = pi_event(payment, "succeeded")
    services.stripe_event_store(event=event, raw_body=json.dumps(event), enqueue=False)
    published: list[list[int]] = []
    monkeypatch.setattr(services, "_receipts_publish", published.append)
    monkeypatch.setattr(services, "_drain_request", lambda: None)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.stripe_events_drain() == 1
        assert published == []
    receipt = Notification.objects.get(landlord=world.landlord, kind="payment_receipt")
    assert published == [[receipt.pk]]
