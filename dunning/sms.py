"""SMS backends: `settings.SMS_BACKEND` names one. Each has `send(*, to, body)` and
raises on failure, which the outbox turns into a retry or, at the end, `failed` (and
dunning then falls back to email where the step asks for it)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

log = logging.getLogger(__name__)


class ConsoleSmsBackend:
    """Writes each message to the log: the default for development and the demo."""

    def send(self, *, to: str, body: str, reference: str = "") -> None:
        log.info("SMS %s to %s: %s", reference, to, body)


class FileSmsBackend:
    """Appends each message as one JSON line to `settings.SMS_FILE_PATH`, so tests and
    the demo can read what would have been texted."""

    def send(self, *, to: str, body: str, reference: str = "") -> None:
        path = Path(getattr(settings, "SMS_FILE_PATH", "") or "sms-outbox.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"to": to, "body": body, "reference": reference, "at": datetime.now(UTC).isoformat()}
        )
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")


class TwilioSmsBackend:
    """Sends through Twilio's Messages API with the official `twilio` library.

    Settings: TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER (or a
    TWILIO_MESSAGING_SERVICE_SID). TWILIO_API_BASE points it at a Twilio-compatible
    server (a test double). Delivery reports come back to `dunning.webhooks`."""

    def __init__(self) -> None:
        from twilio.rest import Client

        sid = getattr(settings, "TWILIO_ACCOUNT_SID", "")
        token = getattr(settings, "TWILIO_AUTH_TOKEN", "")
        if not sid or not token:
            raise ImproperlyConfigured("TwilioSmsBackend needs TWILIO_ACCOUNT_SID and _AUTH_TOKEN")
        self.client = Client(sid, token)
        base = getattr(settings, "TWILIO_API_BASE", "")
        if base:
            self.client.api.base_url = base.rstrip("/")
        self.sender = getattr(settings, "TWILIO_FROM_NUMBER", "")
        self.service = getattr(settings, "TWILIO_MESSAGING_SERVICE_SID", "")
        if not self.sender and not self.service:
            raise ImproperlyConfigured(
                "TwilioSmsBackend needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"
            )

    def send(self, *, to: str, body: str, reference: str = "") -> None:
        kwargs = {"to": to, "body": body}
        if reference:
            # Twilio reports delivery (or failure) to this URL; dunning.webhooks marks
            # the outbox row bounced so the fallback channel takes over.
            site = settings.SITE_URL.rstrip("/")
            kwargs["status_callback"] = f"{site}/hooks/sms/twilio/{reference}/"
        if self.service:
            kwargs["messaging_service_sid"] = self.service
        else:
            kwargs["from_"] = self.sender
        message = self.client.messages.create(**kwargs)
        log.info("Twilio accepted SMS %s to %s", message.sid, to)
