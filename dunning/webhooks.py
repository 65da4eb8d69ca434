"""Delivery reports for dunning's messages: Twilio's SMS status callback.

A report that a message failed marks its outbox row bounced (one service call): the
invoice and tenant timelines show it, and staff see the tenant did not get the text.
(The fallback runs the other way, email → SMS, for steps that ask for it.) The request must carry a valid
`X-Twilio-Signature` for the URL Twilio called; anything else gets 400 and changes
nothing."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from dunning.services import notification_bounce_record
from invoices.models import Channel, Notification, NotificationStatus

FAILED_STATUSES = {"failed", "undelivered"}


@csrf_exempt
@require_POST
def twilio_sms_status(request: HttpRequest, notification_id: int) -> HttpResponse:
    token = settings.TWILIO_AUTH_TOKEN
    # The URL as Twilio saw it: behind a proxy the public SITE_URL, not the inner host.
    url = settings.SITE_URL.rstrip("/") + request.get_full_path()
    signature = request.headers.get("X-Twilio-Signature", "")
    if not token or not RequestValidator(token).validate(url, request.POST.dict(), signature):
        return HttpResponse("Invalid signature", status=400, content_type="text/plain")
    status = request.POST.get("MessageStatus", "")
    if status in FAILED_STATUSES:
        notification = Notification.objects.filter(
            pk=notification_id, channel=Channel.SMS, status=NotificationStatus.SENT
        ).first()
        if notification is not None:
            code = request.POST.get("ErrorCode", "")
            notification_bounce_record(
                notification=notification,
                reason=f"Twilio reported {status}" + (f" (error {code})" if code else ""),
            )
    return HttpResponse(status=204)
