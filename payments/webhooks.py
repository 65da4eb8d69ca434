"""The Stripe webhook endpoint: verify, store, answer.

A delivery with a missing or wrong signature, or a timestamp outside the tolerance,
is refused with 400 before anything is written; a verified event is inserted under
its unique Stripe id with one statement (`ON CONFLICT DO NOTHING`, so a duplicate
delivery is a no-op 200) and processed later, after commit, by a drain task that
works through every received event (services.stripe_events_drain; the request for a
drain is a Redis SET NX made off the request path, one for many deliveries, and a
task only when none is queued). No other query runs here: Stripe waits for our answer
(STYLE.md, "Webhooks"). In the WSGI application this view runs without the
middleware stack (billing_site.wsgi: it needs no session, user, locale or CSRF).
"""

from __future__ import annotations

import logging

from django.db import DataError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from payments import services, stripe_client

log = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    raw_body = request.body
    try:
        event = stripe_client.webhook_event_construct(
            raw_body=raw_body, sig_header=request.headers.get("Stripe-Signature")
        )
    except stripe_client.SignatureVerificationError:
        return HttpResponseBadRequest("invalid signature")
    except ValueError:
        return HttpResponseBadRequest("malformed body")
    if (
        not isinstance(event.get("id"), str)
        or not event["id"]
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
        or not isinstance(event.get("data"), dict)
    ):
        return HttpResponseBadRequest("not a Stripe event")
    try:
        services.stripe_event_store(event=event, raw_body=raw_body.decode("utf-8"))
    except (DataError, UnicodeDecodeError):
        log.warning("Stripe event %s could not be stored", event.get("id"))
        return HttpResponseBadRequest("unstorable event")
    return HttpResponse(status=200)
