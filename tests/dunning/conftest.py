import pytest

from payments import stripe_client
from tests.dunning.factories import RecordingSmsBackend
from tests.payments.conftest import FakeStripe


@pytest.fixture(autouse=True)
def dunning_settings(settings):
    settings.STRIPE_CONNECT_REQUIRED = False
    settings.STRIPE_LOCAL = True
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_rentledger"
    # Nothing listens there: a test that reaches the network by mistake fails fast.
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    settings.SMS_BACKEND = "tests.dunning.factories.RecordingSmsBackend"
    settings.SITE_URL = "https://rentledger.test"
    RecordingSmsBackend.sent = []
    return settings


@pytest.fixture(autouse=True)
def fake_stripe(request, monkeypatch):
    """Stripe as tests/payments fakes it (declines set per test); localstripe tests
    (USES_LOCALSTRIPE) talk to a real localstripe instead."""
    if getattr(request.module, "USES_LOCALSTRIPE", False):
        yield None
        return
    fake = FakeStripe()
    for name in (
        "customer_create",
        "payment_intent_create",
        "payment_intent_retrieve",
        "charge_retrieve",
        "refund_list",
        "events_list",
    ):
        monkeypatch.setattr(stripe_client, name, getattr(fake, name))
    yield fake
