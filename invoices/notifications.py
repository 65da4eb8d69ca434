"""The outbox sender: delivers queued Notification rows by email (and, once dunning
ships a backend, by SMS), at most once per row however many workers run it.

Exactly-once comes in two parts. The billing run (and later dunning) writes at most one
row per message thanks to the unique `dedupe_key`. This module then *claims* a row
with one conditional UPDATE (queued → sending) before sending it, so two workers given
the same ids, a task re-run after `acks_late` redelivery, or the retry sweep racing
the on-commit task can never both send it: exactly one UPDATE matches.

The one gap left is a worker that dies between handing the message to the mail server
and marking the row sent: the sweep requeues it after STUCK_AFTER and it is sent again
(at-least-once there, which is the best any SMTP sender can do). The deterministic
Message-ID lets mail clients fold such a duplicate away.

Failures are retried with a growing back-off (BACKOFF) and the row ends `failed` after
MAX_ATTEMPTS; problems a retry cannot fix (no address, voided invoice, no SMS backend)
fail at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import formataddr, parseaddr
from typing import Protocol

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.utils.module_loading import import_string
from django.utils.translation import override

from invoices.models import Channel, InvoiceState, Notification, NotificationStatus
from invoices.pdf import (
    document_language,
    format_date_range,
    format_day,
    invoice_pdf,
    invoice_pdf_filename,
)
from money.currency import format_money

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
# Wait after the n-th failed attempt (1-based); the last entry repeats.
BACKOFF = (
    timedelta(minutes=1),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
# A row still `sending` after this long belongs to a worker that died mid-send.
STUCK_AFTER = timedelta(minutes=15)
BATCH_SIZE = 200
MAX_PER_SWEEP = 2_000
TEMPLATE_DIR = "invoices/email"


class Undeliverable(Exception):
    """A problem that retrying cannot fix: the row is marked failed at once."""


class SmsBackend(Protocol):
    """What `settings.SMS_BACKEND` names (dunning provides them): a class whose
    instances send one text message and raise on failure. `reference` is the outbox
    row's id, for delivery reports (a status callback) to find the row again."""

    def send(self, *, to: str, body: str, reference: str = "") -> None: ...


@dataclass(frozen=True)
class RenderedMessage:
    subject: str
    text: str
    html: str = ""
    sms: str = ""
    attachments: tuple[tuple[str, bytes, str], ...] = ()


def backoff(*, attempts: int) -> timedelta:
    """How long to wait before the next try after `attempts` failed attempts."""
    return BACKOFF[min(max(attempts, 1), len(BACKOFF)) - 1]


def notifications_send(*, notification_ids: list[int], now: datetime) -> int:
    """Send the given outbox rows that are queued and due; returns how many were sent.

    Each row is claimed (queued → sending, attempts + 1) by a single conditional
    UPDATE that commits on its own, so concurrent callers with overlapping ids send
    every row once. Rows that are already sent, being sent, failed, or waiting for a
    later retry are skipped. Must run outside a transaction (a Celery task does), or
    the claim is not visible to other workers until the caller commits.
    """
    sent = 0
    connection = get_connection()
    for pk in dict.fromkeys(notification_ids):
        if not _claim(pk=pk, now=now):
            continue
        if _deliver(pk=pk, now=now, connection=connection):
            sent += 1
    return sent


def notifications_retry_due(*, now: datetime) -> int:
    """The periodic sweep (every few minutes from beat): requeue rows stuck in `sending`
    for more than STUCK_AFTER because their worker died, then send every queued row
    that is due, BATCH_SIZE at a time. Queued rows with no retry time are included, so
    a message whose on-commit task was lost (broker down) still goes out.

    At most MAX_PER_SWEEP rows per call: a sweep must end well before STUCK_AFTER, or
    the next sweep could requeue rows this one is still sending. The rest waits for
    the next tick (the on-commit tasks carry the month-end volume, not this sweep)."""
    stuck = Notification.objects.filter(
        status=NotificationStatus.SENDING, updated_at__lt=now - STUCK_AFTER
    )
    stuck.filter(attempts__gte=MAX_ATTEMPTS).update(
        status=NotificationStatus.FAILED,
        last_error="Worker stopped while sending the last attempt",
        updated_at=now,
    )
    requeued = stuck.update(
        status=NotificationStatus.QUEUED,
        next_attempt_at=now,
        last_error="Worker stopped while sending; requeued",
        updated_at=now,
    )
    if requeued:
        log.warning("Requeued %d notifications stuck in sending", requeued)

    sent, last_pk, handled = 0, 0, 0
    while handled < MAX_PER_SWEEP:
        ids = list(
            _due(now=now)
            .filter(pk__gt=last_pk)
            .order_by("pk")
            .values_list("pk", flat=True)[:BATCH_SIZE]
        )
        if not ids:
            return sent
        sent += notifications_send(notification_ids=ids, now=now)
        last_pk = ids[-1]
        handled += len(ids)
    return sent


def _due(*, now: datetime):
    return Notification.objects.filter(status=NotificationStatus.QUEUED).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def _claim(*, pk: int, now: datetime) -> bool:
    return bool(
        _due(now=now)
        .filter(pk=pk)
        .update(
            status=NotificationStatus.SENDING,
            attempts=F("attempts") + 1,
            updated_at=now,
        )
    )


def _deliver(*, pk: int, now: datetime, connection) -> bool:
    notification = Notification.objects.select_related("landlord", "tenant", "invoice").get(pk=pk)
    # The attempt number is this worker's fence: if the sweep requeued the row and
    # another worker claimed it meanwhile, our late status write matches nothing.
    mine = Notification.objects.filter(
        pk=pk, status=NotificationStatus.SENDING, attempts=notification.attempts
    )
    try:
        message = _render(notification)
        if notification.channel == Channel.EMAIL:
            _send_email(notification, message, connection=connection)
        elif notification.channel == Channel.SMS:
            _send_sms(notification, message)
        else:
            raise Undeliverable(f"Unknown channel {notification.channel!r}")
    except Undeliverable as exc:
        log.warning("Notification %s undeliverable: %s", pk, exc)
        mine.update(status=NotificationStatus.FAILED, last_error=str(exc)[:2000], updated_at=now)
        return False
    except Exception as exc:
        log.exception("Notification %s attempt %s failed", pk, notification.attempts)
        error = f"{type(exc).__name__}: {exc}"[:2000]
        if notification.attempts >= MAX_ATTEMPTS:
            mine.update(status=NotificationStatus.FAILED, last_error=error, updated_at=now)
        else:
            mine.update(
                status=NotificationStatus.QUEUED,
                next_attempt_at=now + backoff(attempts=notification.attempts),
                last_error=error,
                updated_at=now,
            )
        return False
    mine.update(
        status=NotificationStatus.SENT,
        sent_at=now,
        next_attempt_at=None,
        last_error="",
        subject=message.subject[:300],
        body=message.sms if notification.channel == Channel.SMS else message.text,
        updated_at=now,
    )
    return True


def _render(notification: Notification) -> RenderedMessage:
    renderer = RENDERERS.get(notification.kind)
    if renderer is not None:
        return renderer(notification)
    if notification.body:
        # Pre-rendered rows (a kind written with its text) are sent as they are.
        return RenderedMessage(
            subject=notification.subject, text=notification.body, sms=notification.body
        )
    raise Undeliverable(f"No template for notification kind {notification.kind!r}")


def _send_email(notification: Notification, message: RenderedMessage, *, connection) -> None:
    if not notification.to_address:
        raise Undeliverable("No email address")
    landlord = notification.landlord
    sender = parseaddr(settings.DEFAULT_FROM_EMAIL)[1] or settings.DEFAULT_FROM_EMAIL
    domain = sender.rpartition("@")[2] or "rentledger.local"
    email = EmailMultiAlternatives(
        subject=message.subject,
        body=message.text,
        from_email=formataddr((landlord.name, sender)),
        to=[notification.to_address],
        reply_to=[landlord.email] if landlord.email else None,
        headers={
            "Message-ID": f"<notification-{notification.pk}@{domain}>",
            "X-Rentledger-Notification": str(notification.pk),
        },
        connection=connection,
    )
    if message.html:
        email.attach_alternative(message.html, "text/html")
    for filename, content, mimetype in message.attachments:
        email.attach(filename, content, mimetype)
    if email.send() != 1:
        raise RuntimeError("The email backend accepted no message")


def _send_sms(notification: Notification, message: RenderedMessage) -> None:
    # The hook for dunning's SMS reminders: settings.SMS_BACKEND names a class with
    # `send(*, to, body)`. Until that module exists the row fails with a clear reason
    # instead of retrying six times.
    to = notification.to_address or notification.tenant.phone
    if not to:
        raise Undeliverable("No phone number")
    path = getattr(settings, "SMS_BACKEND", "")
    if not path:
        raise Undeliverable("SMS not configured: settings.SMS_BACKEND is empty")
    try:
        backend_class = import_string(path)
    except ImportError as exc:
        raise Undeliverable(f"SMS not configured: cannot import SMS_BACKEND {path!r}") from exc
    backend: SmsBackend = backend_class()
    backend.send(to=to, body=message.sms or message.text, reference=str(notification.pk))


def _render_template(name: str, ext: str, lang: str, context: dict) -> str:
    """`invoices/email/<name>.<lang>.<ext>`, falling back to English."""
    candidates = [f"{TEMPLATE_DIR}/{name}.{code}.{ext}" for code in dict.fromkeys((lang, "en"))]
    with override(lang):
        return render_to_string(candidates, context)


def _invoice_issued(notification: Notification) -> RenderedMessage:
    """The "your invoice is here" message, with the invoice PDF attached."""
    invoice = notification.invoice
    if invoice is None:
        raise Undeliverable("invoice_issued notification has no invoice")
    if invoice.state == InvoiceState.VOID:
        raise Undeliverable(f"Invoice {invoice.number} was voided before it was sent")
    if invoice.state != InvoiceState.ISSUED:
        raise Undeliverable(f"Invoice {invoice.pk} is not issued")
    landlord, tenant = notification.landlord, notification.tenant
    lang = document_language(tenant.language)
    context = {
        "lang": lang,
        "landlord": landlord,
        "tenant": tenant,
        "invoice": invoice,
        "number": invoice.number,
        "total": format_money(invoice.total_minor, invoice.currency, lang),
        "due_date": format_day(invoice.due_date, language=lang),
        "period": format_date_range(invoice.period_start, invoice.period_end, language=lang),
        "payment_instructions": landlord.payment_instructions,
        "portal_url": f"{settings.SITE_URL.rstrip('/')}/portal/invoices/{invoice.pk}/",
        "brand_color": landlord.brand_color,
    }
    subject = " ".join(_render_template("invoice_issued_subject", "txt", lang, context).split())
    return RenderedMessage(
        subject=subject,
        text=_render_template("invoice_issued", "txt", lang, context).strip() + "\n",
        html=_render_template("invoice_issued", "html", lang, context),
        sms=" ".join(_render_template("invoice_issued_sms", "txt", lang, context).split()),
        attachments=(
            (
                invoice_pdf_filename(invoice=invoice),
                invoice_pdf(invoice=invoice),
                "application/pdf",
            ),
        ),
    )


def _invoice_voided(notification: Notification) -> RenderedMessage:
    """The "that invoice no longer stands" message, to whoever was sent the invoice."""
    invoice = notification.invoice
    if invoice is None or invoice.state != InvoiceState.VOID:
        raise Undeliverable("invoice_voided notification without a void invoice")
    landlord, tenant = notification.landlord, notification.tenant
    lang = document_language(tenant.language)
    context = {
        "tenant": tenant,
        "landlord": landlord,
        "number": invoice.number,
        "period": format_date_range(invoice.period_start, invoice.period_end, language=lang),
        "reason": invoice.void_reason,
        "portal_url": f"{settings.SITE_URL.rstrip('/')}/portal/invoices/{invoice.pk}/",
    }
    subject = " ".join(_render_template("invoice_voided_subject", "txt", lang, context).split())
    text = _render_template("invoice_voided", "txt", lang, context).strip() + "\n"
    return RenderedMessage(subject=subject, text=text, sms=" ".join(text.split()))


# Kind → renderer. A new kind (dunning's reminders) adds its renderer here, or writes
# its subject and body on the row when it queues it.
RENDERERS: dict[str, Callable[[Notification], RenderedMessage]] = {
    "invoice_issued": _invoice_issued,
    "invoice_voided": _invoice_voided,
}
