"""Chaos test: thousands of signed Stripe events, delivered 1-3 times each, shuffled,
from 8 concurrent senders against the live server; the ledger must equal the postings
the final states of the event set imply, exactly.

Celery is eager in tests, so each new event is processed on commit in the server
thread that stored it (events of one tenant race each other across threads).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter, defaultdict
from urllib.parse import urlsplit

import pytest
from django.urls import reverse

from ledger.models import AccountCode
from ledger.selectors import ledger_verify, tenant_balance, trial_balance
from payments.models import EventStatus, Method, Payment, PaymentStatus, Source, StripeEvent
from tests.invoices.factories import emails_off, lease_with_charges
from tests.payments import stripe_objects as so
from tests.payments.conftest import NOVEMBER, SECRET, bill

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TENANTS = 50
# Per tenant: PaymentIntents that succeed, fail, or succeed and are partly refunded,
# plus events of types we do not handle. 2 + 2 + 3 events each: 100 events per tenant.
OK, FAIL, REFUND, UNKNOWN = 18, 10, 10, 14
SENDERS = 8
BASE = 1_790_000_000  # event timestamps (the order Stripe created them in)


def _build_events(*, landlord, tenants, rng: random.Random):
    """The events, the payments they refer to, and the expected outcome per tenant."""
    events: list[dict] = []
    payments: list[Payment] = []
    paid: dict[int, int] = defaultdict(int)  # tenant pk -> net paid (succeeded - refunded)
    fees = 0
    succeeded = failed = refunded_payments = 0
    n = 0
    for tenant in tenants:
        kinds = ["ok"] * OK + ["fail"] * FAIL + ["refund"] * REFUND
        for kind in kinds:
            n += 1
            pi_id = f"pi_chaos{n:06d}"
            amount = rng.randint(100, 3_000)
            fee = rng.randint(1, 90)
            payments.append(
                Payment(
                    landlord=landlord,
                    tenant=tenant,
                    amount_minor=amount,
                    currency="EUR",
                    method=Method.CARD,
                    source=Source.STRIPE,
                    stripe_payment_intent_id=pi_id,
                    idempotency_key=f"chaos:{pi_id}",
                )
            )
            meta = {"landlord_id": str(landlord.pk), "tenant_id": str(tenant.pk)}
            t = BASE + n * 10
            processing = so.payment_intent(
                id=pi_id, amount=amount, status="processing", metadata=meta
            )
            events.append(so.event("payment_intent.processing", processing, created=t))
            if kind == "fail":
                failed += 1
                pi = so.payment_intent(
                    id=pi_id,
                    amount=amount,
                    status="requires_payment_method",
                    metadata=meta,
                    last_payment_error={
                        "code": "card_declined",
                        "decline_code": "insufficient_funds",
                        "message": "Your card has insufficient funds.",
                    },
                )
                events.append(so.event("payment_intent.payment_failed", pi, created=t + 1))
                continue
            charge_id = f"ch_chaos{n:06d}"
            charge = so.charge(
                id=charge_id,
                amount=amount,
                payment_intent=pi_id,
                balance_transaction=so.balance_transaction(
                    id=f"txn_chaos{n:06d}", fee=fee, source=charge_id
                ),
            )
            pi = so.payment_intent(
                id=pi_id, amount=amount, status="succeeded", metadata=meta, latest_charge=charge
            )
            events.append(so.event("payment_intent.succeeded", pi, created=t + 1))
            succeeded += 1
            fees += fee
            paid[tenant.pk] += amount
            if kind == "refund":
                refunded_payments += 1
                back = rng.randint(1, amount)
                refund = so.refund(charge_id=charge_id, amount=back, id=f"re_chaos{n:06d}")
                refunded_charge = so.charge(
                    id=charge_id,
                    amount=amount,
                    payment_intent=pi_id,
                    balance_transaction=f"txn_chaos{n:06d}",
                    refunds=[refund],
                )
                events.append(so.event("charge.refunded", refunded_charge, created=t + 2))
                paid[tenant.pk] -= back
        for i in range(UNKNOWN):
            events.append(
                so.event(
                    "customer.updated" if i % 2 else "invoice.finalized",
                    {"id": f"obj_chaos{n}_{i}", "object": "unknown"},
                    created=BASE + n * 10 + 5,
                )
            )
    expected = {
        "paid": dict(paid),
        "fees": fees,
        "succeeded": succeeded,
        "failed": failed,
        "refunded_payments": refunded_payments,
    }
    return events, payments, expected


class _Sender(threading.Thread):
    """POSTs its share of deliveries over one keep-alive connection (reconnecting when
    the server closes it)."""

    def __init__(self, *, host: str, port: int, path: str, deliveries: list[bytes]):
        super().__init__(daemon=True)
        self.host, self.port, self.path = host, port, path
        self.deliveries = deliveries
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.conn: http.client.HTTPConnection | None = None

    def _post(self, body: bytes) -> int:
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": so.sign(body, secret=SECRET),
        }
        for attempt in range(3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            try:
                self.conn.request("POST", self.path, body=body, headers=headers)
                response = self.conn.getresponse()
                response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status
            except (ConnectionError, http.client.HTTPException):
                # The server closed the idle keep-alive connection: a redelivery
                # (which is what Stripe does too) is just one more duplicate.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def run(self) -> None:
        for body in self.deliveries:
            try:
                self.statuses[self._post(body)] += 1
            except Exception as exc:
                self.errors.append(repr(exc))
        if self.conn is not None:
            self.conn.close()


def test_chaos_deliveries_reconcile_exactly(live_server, landlord):
    started = time.monotonic()
    rng = random.Random(20261125)
    emails_off(landlord=landlord)
    for i in range(TENANTS):
        lease_with_charges(landlord=landlord, renter=f"Chaos{i:02d} Tenant")
    invoices = bill(landlord, NOVEMBER)
    assert len(invoices) == TENANTS
    owed = {inv.tenant_id: inv.total_minor for inv in invoices}
    tenants = [inv.tenant for inv in invoices]

    events, payments, expected = _build_events(landlord=landlord, tenants=tenants, rng=rng)
    Payment.objects.bulk_create(payments)
    assert len(events) >= 5_000
    # Nobody can overpay here: every tenant's expected balance is what they still owe.
    assert all(expected["paid"].get(t, 0) < owed[t] for t in owed)

    deliveries = [json.dumps(e).encode() for e in events for _ in range(rng.randint(1, 3))]
    rng.shuffle(deliveries)
    url = urlsplit(live_server.url)
    path = reverse("stripe-webhook")
    senders = [
        _Sender(host=url.hostname, port=url.port, path=path, deliveries=deliveries[i::SENDERS])
        for i in range(SENDERS)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=240)
        assert not sender.is_alive(), "a sender did not finish"

    statuses: Counter[int] = sum((s.statuses for s in senders), Counter())
    errors = [e for s in senders for e in s.errors]
    assert not errors, errors[:5]
    assert sum(statuses.values()) == len(deliveries)
    assert set(statuses) == {200}, statuses  # no 5xx, no refusal of a signed event

    # Every duplicate ignored: one row per distinct event id, none left unprocessed.
    assert StripeEvent.objects.count() == len({e["id"] for e in events}) == len(events)
    by_status = Counter(StripeEvent.objects.values_list("status", flat=True))
    assert by_status == {
        EventStatus.PROCESSED: len(events) - TENANTS * UNKNOWN,
        EventStatus.IGNORED: TENANTS * UNKNOWN,
    }, by_status

    # The ledger equals the expected postings, tenant by tenant and account by account.
    for tenant in tenants:
        balance = tenant_balance(landlord=landlord, tenant=tenant, currency="EUR")["EUR"]
        assert balance == owed[tenant.pk] - expected["paid"].get(tenant.pk, 0), tenant
    lines = {line.code: line.balance for line in trial_balance(landlord=landlord).lines}
    net_paid = sum(expected["paid"].values())
    assert lines[AccountCode.PROCESSOR_FEES] == expected["fees"]
    assert lines[AccountCode.CASH_IN_TRANSIT] == net_paid - expected["fees"]
    payment_status = Counter(Payment.objects.values_list("status", flat=True))
    assert payment_status[PaymentStatus.FAILED] == expected["failed"]
    assert (
        sum(payment_status.values()) - payment_status[PaymentStatus.FAILED] == expected["succeeded"]
    )
    assert Payment.objects.filter(posting__isnull=False).count() == expected["succeeded"]
    assert trial_balance(landlord=landlord).is_balanced
    assert ledger_verify(landlord=landlord).ok

    # A bad signature stores nothing.
    stray = so.event("payment_intent.succeeded", {"id": "pi_stray", "object": "payment_intent"})
    body = json.dumps(stray).encode()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request(
        "POST",
        path,
        body=body,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": so.sign(body, secret="whsec_wrong"),
        },
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 400
    assert not StripeEvent.objects.filter(event_id=stray["id"]).exists()
    assert StripeEvent.objects.count() == len(events)
    print(
        f"chaos: {len(events)} events, {len(deliveries)} deliveries, {statuses}, "
        f"{time.monotonic() - started:.1f} s"
    )
