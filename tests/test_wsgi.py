"""The WSGI application: Stripe's webhook runs without the middleware stack, every
other path with it."""

import io
import json
import sys

import pytest
from django.urls import reverse

from billing_site import wsgi
from payments.models import StripeEvent
from tests.payments import stripe_objects as so
from tests.payments.conftest import SECRET

pytestmark = pytest.mark.django_db(transaction=True)


def call(path, *, method="GET", body=b"", host="127.0.0.1", headers=None):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": host,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        **(headers or {}),
    }
    seen = {}

    def start_response(status, response_headers, exc_info=None):
        seen["status"] = int(status.split()[0])
        seen["headers"] = dict(response_headers)

    result = wsgi.application(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        result.close()
    return seen["status"], seen["headers"], content


@pytest.fixture
def webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.ALLOWED_HOSTS = ["127.0.0.1"]


def deliver(event, *, secret=SECRET, host="127.0.0.1"):
    """POST `event` to the webhook through the WSGI application, signed with `secret`."""
    body = json.dumps(event).encode()
    return call(
        reverse("stripe-webhook"),
        method="POST",
        body=body,
        host=host,
        headers={"HTTP_STRIPE_SIGNATURE": so.sign(body, secret=secret)},
    )


def ping():
    return so.event("customer.created", so.example("customer"))


def test_the_webhook_is_served_by_the_bare_handler_and_stores_the_event(webhook_secret):
    event = ping()
    status, headers, _ = deliver(event)
    assert status == 200
    assert headers["Content-Length"] == "0"
    assert StripeEvent.objects.filter(event_id=event["id"]).exists()
    # No middleware ran: no session cookie, no clickjacking or security headers.
    assert "Set-Cookie" not in headers
    assert "X-Frame-Options" not in headers


def test_a_bad_signature_on_the_bare_path_is_still_refused(webhook_secret):
    status, _, _ = deliver(ping(), secret="whsec_other")
    assert status == 400
    assert not StripeEvent.objects.exists()


def test_the_bare_path_still_checks_the_host(webhook_secret):
    status, _, _ = deliver(ping(), host="evil.example")
    assert status == 400
    assert not StripeEvent.objects.exists()


def test_other_paths_go_through_the_middleware_stack(webhook_secret):
    status, headers, _ = call(reverse("login"))
    assert status == 200
    assert headers.get("X-Frame-Options") == "DENY"


def test_the_bare_handler_is_the_webhook_only():
    assert wsgi.application.bare_paths == {reverse("stripe-webhook")}
