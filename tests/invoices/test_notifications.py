"""The outbox sender (invoices/notifications.py): claim, send, retry, fail."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.core.mail.backends.base import BaseEmailBackend
from django.db import connection

from invoices import notifications
from invoices.models import Channel, Notification, NotificationStatus
from invoices.notifications import MAX_ATTEMPTS, notifications_retry_due, notifications_send
from invoices.services import invoice_void
from tests.invoices.factories import (
    NotificationFactory,
    bill_december,
    emails_off,
    lease_with_charges,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class RefusingEmailBackend(BaseEmailBackend):
    """An SMTP server that is down."""

    def send_messages(self, email_messages):
        raise ConnectionRefusedError("[Errno 111] Connection refused")


class RecordingSmsBackend:
    sent: list[tuple[str, str]] = []

    def send(self, *, to: str, body: str, reference: str = "") -> None:
        self.sent.append((to, body))


@pytest.fixture(autouse=True)
def site_url(settings):
    settings.SITE_URL = "https://app.rentledger.test"


@pytest.fixture
def theirs(other_landlord):
    """Landlord B's invoice with its own queued email (also numbered INV-2026-000001)."""
    lease_with_charges(landlord=other_landlord, renter="Bianca Brightside", rent_minor=99_900)
    (invoice,) = bill_december(landlord=other_landlord)
    return Notification.objects.get(invoice=invoice)


@pytest.fixture
def invoice(landlord, theirs):
    landlord.payment_instructions = "Bank transfer to IBAN DE89 3704 0044 0532 0130 00"
    landlord.email = "office@acme.example"
    landlord.save()
    lease_with_charges(landlord=landlord, renter="Alice Acme", email="alice@example.test")
    (invoice,) = bill_december(landlord=landlord)
    return invoice


@pytest.fixture
def queued(invoice):
    """The outbox row the billing run wrote for the invoice."""
    return Notification.objects.get(invoice=invoice)


def refresh(notification: Notification) -> Notification:
    notification.refresh_from_db()
    return notification


def test_sending_emails_the_invoice_with_its_pdf_and_marks_it_sent(queued, invoice, mailoutbox):
    assert queued.status == NotificationStatus.QUEUED

    assert notifications_send(notification_ids=[queued.pk], now=NOW) == 1

    (email,) = mailoutbox
    assert email.to == ["alice@example.test"]
    assert email.from_email.startswith("Acme Lettings <")
    assert email.reply_to == ["office@acme.example"]
    (filename, content, mimetype) = email.attachments[0]
    assert (filename, mimetype) == (f"{invoice.number}.pdf", "application/pdf")
    assert content.startswith(b"%PDF-")
    assert email.alternatives[0][1] == "text/html"
    sent = refresh(queued)
    assert (sent.status, sent.sent_at, sent.attempts) == (NotificationStatus.SENT, NOW, 1)
    assert sent.subject == email.subject


def test_the_email_names_invoice_landlord_due_date_amount_and_how_to_pay(
    queued, invoice, mailoutbox
):
    notifications_send(notification_ids=[queued.pk], now=NOW)

    (email,) = mailoutbox
    assert email.subject == f"Invoice {invoice.number} from Acme Lettings — due 6 Dec 2026"
    assert "Amount due: €1,200.00" in email.body
    assert "Due date:   6 Dec 2026" in email.body
    assert "IBAN DE89 3704 0044 0532 0130 00" in email.body
    assert f"https://app.rentledger.test/portal/invoices/{invoice.pk}/" in email.body
    html = email.alternatives[0][0]
    assert "€1,200.00" in html
    assert f'href="https://app.rentledger.test/portal/invoices/{invoice.pk}/"' in html


def test_a_german_tenant_gets_the_german_email(landlord, theirs, mailoutbox):
    lease_with_charges(landlord=landlord, renter="Jonas Keller", language="de")
    (invoice,) = bill_december(landlord=landlord)
    row = Notification.objects.get(invoice=invoice)

    notifications_send(notification_ids=[row.pk], now=NOW)

    (email,) = mailoutbox
    assert email.subject == (
        f"Rechnung {invoice.number} von Acme Lettings – fällig am 6. Dez. 2026"
    )
    # Babel puts a no-break space before the euro sign.
    assert "Zu zahlender Betrag: 1.200,00\xa0€" in email.body


def test_sending_the_same_ids_twice_sends_once(queued, mailoutbox):
    assert notifications_send(notification_ids=[queued.pk, queued.pk], now=NOW) == 1
    assert notifications_send(notification_ids=[queued.pk], now=NOW + timedelta(hours=1)) == 0

    assert len(mailoutbox) == 1
    assert refresh(queued).attempts == 1


def test_only_the_given_ids_are_sent(queued, theirs, mailoutbox):
    notifications_send(notification_ids=[queued.pk], now=NOW)

    assert [m.to for m in mailoutbox] == [["alice@example.test"]]
    assert refresh(theirs).status == NotificationStatus.QUEUED


def test_a_failing_email_backend_requeues_with_backoff_and_the_error(queued, settings, mailoutbox):
    settings.EMAIL_BACKEND = f"{__name__}.RefusingEmailBackend"

    assert notifications_send(notification_ids=[queued.pk], now=NOW) == 0

    row = refresh(queued)
    assert row.status == NotificationStatus.QUEUED
    assert row.attempts == 1
    assert row.next_attempt_at == NOW + timedelta(minutes=1)
    assert "Connection refused" in row.last_error
    assert row.sent_at is None


def test_a_row_waiting_for_its_retry_is_not_sent_early(queued, settings, mailoutbox):
    settings.EMAIL_BACKEND = f"{__name__}.RefusingEmailBackend"
    notifications_send(notification_ids=[queued.pk], now=NOW)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    assert notifications_send(notification_ids=[queued.pk], now=NOW + timedelta(seconds=30)) == 0
    assert refresh(queued).attempts == 1
    assert notifications_send(notification_ids=[queued.pk], now=NOW + timedelta(minutes=1)) == 1
    assert len(mailoutbox) == 1
    row = refresh(queued)
    assert (row.status, row.attempts, row.last_error) == (NotificationStatus.SENT, 2, "")


def test_after_six_failed_attempts_the_notification_fails(queued, settings):
    settings.EMAIL_BACKEND = f"{__name__}.RefusingEmailBackend"
    now = NOW
    waits = []
    for _ in range(MAX_ATTEMPTS):
        notifications_send(notification_ids=[queued.pk], now=now)
        row = refresh(queued)
        if row.next_attempt_at and row.status == NotificationStatus.QUEUED:
            waits.append(row.next_attempt_at - now)
            now = row.next_attempt_at

    row = refresh(queued)
    assert row.status == NotificationStatus.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert "Connection refused" in row.last_error
    assert waits == [timedelta(minutes=m) for m in (1, 5, 30, 120, 360)]
    assert notifications_send(notification_ids=[queued.pk], now=now + timedelta(days=1)) == 0
    assert refresh(queued).attempts == MAX_ATTEMPTS


def test_retry_due_requeues_and_sends_rows_stuck_in_sending(queued, theirs, mailoutbox):
    Notification.objects.filter(pk=queued.pk).update(
        status=NotificationStatus.SENDING, attempts=1, updated_at=NOW - timedelta(minutes=16)
    )
    Notification.objects.filter(pk=theirs.pk).update(
        status=NotificationStatus.SENDING, attempts=1, updated_at=NOW - timedelta(minutes=5)
    )

    assert notifications_retry_due(now=NOW) == 1

    assert [m.to for m in mailoutbox] == [["alice@example.test"]]
    row = refresh(queued)
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 2)
    # Still within its worker's time: left alone.
    assert refresh(theirs).status == NotificationStatus.SENDING


def test_retry_due_sends_queued_rows_whose_time_has_come(queued, theirs, mailoutbox):
    Notification.objects.filter(pk=queued.pk).update(
        attempts=1, next_attempt_at=NOW - timedelta(seconds=1)
    )
    Notification.objects.filter(pk=theirs.pk).update(
        attempts=1, next_attempt_at=NOW + timedelta(minutes=4)
    )

    assert notifications_retry_due(now=NOW) == 1

    assert refresh(queued).status == NotificationStatus.SENT
    assert refresh(theirs).status == NotificationStatus.QUEUED
    assert notifications_retry_due(now=NOW + timedelta(minutes=4)) == 1
    assert len(mailoutbox) == 2


def test_retry_due_works_through_more_than_one_batch(landlord, theirs, monkeypatch, mailoutbox):
    monkeypatch.setattr(notifications, "BATCH_SIZE", 2)
    emails_off(landlord=landlord)
    for n in range(5):
        lease_with_charges(landlord=landlord, renter=f"Renter{n} Acme")
    for invoice in bill_december(landlord=landlord):
        NotificationFactory(invoice=invoice, tenant=invoice.tenant, landlord=landlord)

    assert notifications_retry_due(now=NOW) == 6  # five of A's and B's one


def test_sms_without_a_backend_fails_with_a_clear_error(queued, settings, mailoutbox):
    settings.SMS_BACKEND = "dunning.sms.NoSuchBackend"
    Notification.objects.filter(pk=queued.pk).update(channel=Channel.SMS, to_address="+4915100000")

    assert notifications_send(notification_ids=[queued.pk], now=NOW) == 0

    row = refresh(queued)
    assert row.status == NotificationStatus.FAILED
    assert row.last_error.startswith("SMS not configured")
    assert "dunning.sms.NoSuchBackend" in row.last_error
    assert mailoutbox == []


def test_sms_goes_through_the_configured_backend(queued, invoice, settings):
    settings.SMS_BACKEND = f"{__name__}.RecordingSmsBackend"
    RecordingSmsBackend.sent.clear()
    Notification.objects.filter(pk=queued.pk).update(channel=Channel.SMS, to_address="+4915100000")

    assert notifications_send(notification_ids=[queued.pk], now=NOW) == 1

    ((to, body),) = RecordingSmsBackend.sent
    assert to == "+4915100000"
    assert invoice.number in body
    assert "€1,200.00" in body
    assert refresh(queued).status == NotificationStatus.SENT


def test_a_voided_invoice_is_not_emailed(queued, invoice, mailoutbox):
    invoice_void(invoice=invoice, reason="Wrong unit", actor=None)

    assert notifications_send(notification_ids=[queued.pk], now=NOW) == 0

    row = refresh(queued)
    assert row.status == NotificationStatus.FAILED
    assert "voided" in row.last_error
    assert mailoutbox == []
    # Never received, so nothing to take back either.
    assert not Notification.objects.filter(kind="invoice_voided").exists()


@pytest.mark.parametrize(
    ("language", "subject", "lines"),
    [
        (
            "en",
            "Invoice INV-2026-000001 from Acme Lettings has been cancelled",
            ["Reason: Billed the wrong unit", "You do not need to pay it."],
        ),
        (
            "de",
            "Rechnung INV-2026-000001 von Acme Lettings wurde storniert",
            ["Grund: Billed the wrong unit", "Sie müssen sie nicht bezahlen."],
        ),
    ],
)
def test_voiding_a_sent_invoice_tells_the_tenant_once_in_their_language(
    queued, invoice, mailoutbox, django_capture_on_commit_callbacks, language, subject, lines
):
    invoice.tenant.language = language
    invoice.tenant.save(update_fields=["language"])
    notifications_send(notification_ids=[queued.pk], now=NOW)
    mailoutbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        invoice_void(invoice=invoice, reason="Billed the wrong unit", actor=None)

    notice = Notification.objects.get(invoice=invoice, kind="invoice_voided")
    assert (notice.status, notice.to_address) == (NotificationStatus.SENT, "alice@example.test")
    (email,) = mailoutbox
    assert email.subject == subject and email.to == ["alice@example.test"]
    assert all(line in email.body for line in lines)
    assert "https://app.rentledger.test/portal/invoices/" in email.body


@pytest.mark.django_db(transaction=True)
def test_two_workers_sending_the_same_ids_send_each_once(landlord, other_landlord, mailoutbox):
    # No outbox rows from the billing run: in a committing test their on-commit hook
    # would queue real Celery tasks. The rows are added here instead.
    emails_off(landlord=landlord)
    emails_off(landlord=other_landlord)
    lease_with_charges(landlord=other_landlord, renter="Bianca Brightside")
    bill_december(landlord=other_landlord)
    for n in range(4):
        lease_with_charges(landlord=landlord, renter=f"Renter{n} Acme")
    ids = [
        NotificationFactory(invoice=invoice, tenant=invoice.tenant, landlord=landlord).pk
        for invoice in bill_december(landlord=landlord)
    ]
    start = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker():
        try:
            start.wait()
            results.append(notifications_send(notification_ids=ids, now=NOW))
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert sum(results) == len(ids) == 4
    assert sorted(m.to[0] for m in mailoutbox) == sorted(
        Notification.objects.filter(pk__in=ids).values_list("to_address", flat=True)
    )
    assert set(Notification.objects.filter(pk__in=ids).values_list("status", "attempts")) == {
        (NotificationStatus.SENT, 1)
    }
