from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import date

import pytest
import stripe
from django.urls import reverse

from invoices.models import Invoice
from invoices.services import billing_run_execute
from payments import services, stripe_client
from payments.models import Method
from tenants.models import Landlord, Lease, Tenant
from tests.invoices.factories import emails_off, lease_with_charges
from tests.payments import stripe_objects as so

SECRET = "whsec_test_rentledger"
NOVEMBER = date(2026, 11, 1)
DECEMBER = date(2026, 12, 1)


@pytest.fixture(autouse=True)
def stripe_settings(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    settings.STRIPE_CONNECT_REQUIRED = False
    settings.STRIPE_LOCAL = True
    # Nothing listens there: a test that reaches the network by mistake fails fast.
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    return settings


class FakeStripe:
    """Stands in for `payments.stripe_client` in unit tests: what Stripe would answer,
    and a record of the calls made (with their idempotency keys)."""

    def __init__(self):
        self._n = itertools.count(1)
        self.calls: list[tuple[str, dict]] = []
        self.charges: dict[str, dict] = {}
        self.refunds: dict[str, list[dict]] = {}
        self.payout_txns: dict[str, list[dict]] = {}
        self.events: list[dict] = []
        self.intents: dict[str, dict] = {}
        self.by_key: dict[str, dict] = {}
        self.decline: dict | None = None  # next confirmed PI raises CardError
        self.confirm_status = "succeeded"

    def _record(self, call, /, **kwargs):
        self.calls.append((call, kwargs))

    def customer_create(self, **kwargs):
        self._record("customer_create", **kwargs)
        key = kwargs["idempotency_key"]
        return self.by_key.setdefault(key, {"id": f"cus_fake{next(self._n)}", "object": "customer"})

    def payment_intent_create(self, **kwargs):
        self._record("payment_intent_create", **kwargs)
        key = kwargs["idempotency_key"]
        if key in self.by_key:
            return self.by_key[key]
        pi_id = f"pi_fake{next(self._n)}"
        if kwargs.get("confirm") and self.decline:
            decline = self.decline
            raise stripe.CardError(
                decline.get("message", "Your card was declined."),
                None,
                decline.get("code", "card_declined"),
                http_status=402,
                json_body={
                    "error": {
                        "type": "card_error",
                        "code": decline.get("code", "card_declined"),
                        "decline_code": decline.get("decline_code"),
                        "message": decline.get("message", "Your card was declined."),
                        "payment_intent": {"id": pi_id, "object": "payment_intent"},
                    }
                },
            )
        status = self.confirm_status if kwargs.get("confirm") else "requires_payment_method"
        charge = (
            so.charge(amount=kwargs["amount"], payment_intent=pi_id, balance_transaction=None)
            if status == "succeeded"
            else None
        )
        pi = so.payment_intent(
            id=pi_id,
            amount=kwargs["amount"],
            currency=kwargs["currency"],
            status=status,
            metadata=kwargs["metadata"],
            latest_charge=charge,
            method=kwargs["payment_method_types"][0],
        )
        self.intents[pi_id] = pi
        self.by_key[key] = pi
        return pi

    def payment_intent_retrieve(self, *, payment_intent_id, stripe_account=None):
        return self.intents[payment_intent_id]

    def charge_retrieve(self, *, charge_id, stripe_account=None):
        self._record("charge_retrieve", id=charge_id)
        if charge_id not in self.charges:
            raise stripe.APIConnectionError("fake Stripe: charge not known")
        return self.charges[charge_id]

    def add_charge(
        self, payment, *, fee: int, amount: int | None = None, settled_in: str = "eur"
    ) -> str:
        """Register the charge of a payment's PaymentIntent with its fee (stated in the
        `settled_in` currency); its id."""
        charge_id = f"ch_for_{payment.stripe_payment_intent_id}"
        self.charges[charge_id] = so.charge(
            id=charge_id,
            amount=amount or payment.amount_minor,
            payment_intent=payment.stripe_payment_intent_id,
            balance_transaction=so.balance_transaction(
                id=f"txn_{charge_id}", fee=fee, source=charge_id, currency=settled_in
            ),
        )
        return charge_id

    def refund_list(self, *, charge_id, stripe_account=None):
        return self.refunds.get(charge_id, [])

    def payout_balance_transactions(self, *, payout_id, stripe_account=None):
        if payout_id not in self.payout_txns:
            raise stripe.InvalidRequestError("Unexpected payout", "payout")
        yield from self.payout_txns[payout_id]

    def events_list(self, *, created_gte, stripe_account=None):
        self._record("events_list", created_gte=created_gte, stripe_account=stripe_account)
        return [e for e in self.events if e["created"] >= created_gte]

    def keys(self, name: str) -> list[str]:
        return [kwargs["idempotency_key"] for call, kwargs in self.calls if call == name]


@pytest.fixture(autouse=True)
def fake_stripe(request, monkeypatch):
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
        "payout_balance_transactions",
        "events_list",
    ):
        monkeypatch.setattr(stripe_client, name, getattr(fake, name))
    yield fake


def bill(landlord: Landlord, month: date) -> list[Invoice]:
    end = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    billing_run_execute(
        landlord=landlord,
        period_start=month,
        as_of=date.fromordinal(end.toordinal() - 1),
        started_by="test",
        on_schedule=True,  # the world's months, dated on their billing day whatever today is
    )
    return list(
        Invoice.objects.for_landlord(landlord).filter(period_start=month).order_by("lease_id")
    )


@dataclass
class World:
    landlord: Landlord
    tenant: Tenant
    lease: Lease
    november: Invoice
    december: Invoice
    other: Landlord
    other_tenant: Tenant
    other_invoices: list[Invoice] = field(default_factory=list)


@pytest.fixture
def world(landlord, other_landlord) -> World:
    """Landlord A's tenant with an open November and December invoice (1,200.00 EUR
    each); landlord B with the same, partly paid, so a missing scope shows."""
    emails_off(landlord=other_landlord)
    lease = lease_with_charges(landlord=landlord, renter="Ada Tenant", email="ada@example.test")
    other_lease = lease_with_charges(landlord=other_landlord, renter="Bo Other")
    (november,) = bill(landlord, NOVEMBER)
    (december,) = bill(landlord, DECEMBER)
    other_invoices = bill(other_landlord, NOVEMBER) + bill(other_landlord, DECEMBER)
    other_tenant = other_lease.tenants.get()
    services.manual_payment_record(
        landlord=other_landlord,
        tenant=other_tenant,
        amount_minor=50_000,
        currency="USD",
        method=Method.CASH,
        reference="B cash",
        received_on=date(2026, 11, 20),
        actor=None,
    )
    return World(
        landlord=landlord,
        tenant=lease.tenants.get(),
        lease=lease,
        november=november,
        december=december,
        other=other_landlord,
        other_tenant=other_tenant,
        other_invoices=[i for i in other_invoices if i.lease_id == other_lease.pk],
    )


@pytest.fixture
def deliver(client, django_capture_on_commit_callbacks):
    """POST an event to the webhook, signed like Stripe, and run what it queued on
    commit (the processing task, eager in tests)."""

    def post(
        event: dict | None,
        *,
        body: bytes | None = None,
        secret=SECRET,
        timestamp=None,
        signature: str | None = "sign",
    ):
        raw = body if body is not None else json.dumps(event).encode()
        headers = {}
        if signature == "sign":
            headers["HTTP_STRIPE_SIGNATURE"] = so.sign(raw, secret=secret, timestamp=timestamp)
        elif signature is not None:
            headers["HTTP_STRIPE_SIGNATURE"] = signature
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                reverse("stripe-webhook"), data=raw, content_type="application/json", **headers
            )

    return post
