"""SMS backends and Twilio's delivery reports.

The Twilio backend talks HTTP to a small Twilio-compatible server started here (the
official `twilio` library does the request), and status callbacks are signed with
Twilio's own `RequestValidator` algorithm."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from twilio.request_validator import RequestValidator

from dunning.sms import FileSmsBackend, TwilioSmsBackend
from invoices.models import Channel, Notification, NotificationStatus
from tests.factories import TenantFactory
from tests.invoices.factories import NotificationFactory

TOKEN = "test-auth-token"
SID = "AC" + "0" * 32


class _FakeTwilio(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.received.append((self.path, form))
        body = json.dumps(
            {"sid": "SM" + "1" * 32, "status": "queued", "to": form.get("To"), "body": ""}
        ).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_twilio(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeTwilio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeTwilio.received = []
    settings.TWILIO_ACCOUNT_SID = SID
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.TWILIO_FROM_NUMBER = "+15005550006"
    settings.TWILIO_API_BASE = f"http://127.0.0.1:{server.server_port}"
    settings.SITE_URL = "https://rent.example"
    yield _FakeTwilio.received
    server.shutdown()


def test_twilio_backend_sends_through_the_messages_api_with_a_status_callback(fake_twilio):
    TwilioSmsBackend().send(to="+4915100000", body="Rent is due", reference="42")

    [(path, form)] = fake_twilio
    assert path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert form["To"] == "+4915100000"
    assert form["Body"] == "Rent is due"
    assert form["From"] == "+15005550006"
    assert form["StatusCallback"] == "https://rent.example/hooks/sms/twilio/42/"


def test_twilio_backend_refuses_to_start_without_credentials(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.TWILIO_ACCOUNT_SID = ""
    with pytest.raises(ImproperlyConfigured):
        TwilioSmsBackend()


def test_file_backend_appends_one_json_line_per_message(settings, tmp_path):
    settings.SMS_FILE_PATH = str(tmp_path / "sms" / "out.jsonl")
    FileSmsBackend().send(to="+1555", body="one", reference="7")
    FileSmsBackend().send(to="+1555", body="two")
    lines = [json.loads(x) for x in (tmp_path / "sms" / "out.jsonl").read_text().splitlines()]
    assert [(x["body"], x["reference"]) for x in lines] == [("one", "7"), ("two", "")]


@pytest.fixture
def sent_sms(landlord, other_landlord):
    tenant = TenantFactory(landlord=landlord, phone="+4915100000")
    return NotificationFactory(
        landlord=landlord,
        tenant=tenant,
        invoice=None,
        kind="dunning_overdue_notice",
        channel=Channel.SMS,
        to_address=tenant.phone,
        status=NotificationStatus.SENT,
    )


def _signed_post(client, url, form, *, token=TOKEN):
    signature = RequestValidator(token).compute_signature("https://rent.example" + url, form)
    return client.post(url, form, HTTP_X_TWILIO_SIGNATURE=signature)


def test_a_signed_failure_report_marks_the_sms_bounced(client, settings, sent_sms):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.SITE_URL = "https://rent.example"
    url = f"/hooks/sms/twilio/{sent_sms.pk}/"
    form = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30003"}

    response = _signed_post(client, url, form)

    assert response.status_code == 204
    row = Notification.objects.get(pk=sent_sms.pk)
    assert row.status == NotificationStatus.BOUNCED
    assert "undelivered" in row.last_error and "30003" in row.last_error


def test_a_delivered_report_changes_nothing(client, settings, sent_sms):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.SITE_URL = "https://rent.example"
    url = f"/hooks/sms/twilio/{sent_sms.pk}/"
    response = _signed_post(client, url, {"MessageSid": "SM1", "MessageStatus": "delivered"})
    assert response.status_code == 204
    assert Notification.objects.get(pk=sent_sms.pk).status == NotificationStatus.SENT


@pytest.mark.parametrize("signature", ["", "bad", "forged-with-another-token"])
def test_a_badly_signed_report_gets_400_and_changes_nothing(client, settings, sent_sms, signature):
    settings.TWILIO_AUTH_TOKEN = TOKEN
    settings.SITE_URL = "https://rent.example"
    url = f"/hooks/sms/twilio/{sent_sms.pk}/"
    form = {"MessageSid": "SM1", "MessageStatus": "failed"}
    if signature == "forged-with-another-token":
        response = _signed_post(client, url, form, token="not-our-token")
    else:
        response = client.post(url, form, HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 400
    assert Notification.objects.get(pk=sent_sms.pk).status == NotificationStatus.SENT
