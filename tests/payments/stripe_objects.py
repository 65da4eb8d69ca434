"""Stripe objects and signed webhook deliveries for tests, built from Stripe's own
example objects (/work/shared/stripe-fixtures/objects.json, from Stripe's OpenAPI
fixtures, where the machine has them; else a bare object) with the fields a scenario
needs set; signed exactly like Stripe signs."""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import os
import time
from functools import cache
from pathlib import Path

FIXTURES = Path(
    os.environ.get("RENTLEDGER_STRIPE_FIXTURES", "/work/shared/stripe-fixtures/objects.json")
)
API_VERSION = "2025-03-31.basil"
_ids = itertools.count(1)

# Where Stripe's examples are not on the machine (a fresh clone elsewhere), each object
# starts from the fields every Stripe object has; the builders below set every field the
# code reads, so the scenarios are the same, only less of the real object's noise.
_ID_PREFIX = {
    "payment_intent": "pi",
    "charge": "ch",
    "refund": "re",
    "dispute": "dp",
    "payout": "po",
    "account": "acct",
    "event": "evt",
    "balance_transaction": "txn",
    "customer": "cus",
}


def _bare(kind: str) -> dict:
    return {
        "id": f"{_ID_PREFIX.get(kind, kind)}_example",
        "object": kind,
        "created": 1_700_000_000,
        "livemode": False,
        "metadata": {},
    }


@cache
def _examples() -> dict:
    if not FIXTURES.exists():
        return {}
    return json.loads(FIXTURES.read_text())


def example(kind: str, **fields) -> dict:
    found = _examples().get(kind)
    obj = copy.deepcopy(found) if found is not None else _bare(kind)
    obj.update(fields)
    return obj


def new_id(prefix: str) -> str:
    return f"{prefix}_test{next(_ids):06d}"


def charge(
    *,
    id: str | None = None,
    amount: int,
    currency: str = "eur",
    payment_intent: str | None = None,
    status: str = "succeeded",
    balance_transaction: str | dict | None = None,
    refunds: list[dict] | None = None,
    amount_refunded: int | None = None,
) -> dict:
    refunds = refunds or []
    refunded = amount_refunded
    if refunded is None:
        refunded = sum(r["amount"] for r in refunds if r["status"] not in ("failed", "canceled"))
    return example(
        "charge",
        id=id or new_id("ch"),
        amount=amount,
        amount_captured=amount,
        currency=currency,
        payment_intent=payment_intent,
        status=status,
        paid=status == "succeeded",
        captured=True,
        balance_transaction=balance_transaction,
        refunded=refunded >= amount,
        amount_refunded=refunded,
        refunds={"object": "list", "data": refunds, "has_more": False, "url": "/v1/refunds"},
    )


def payment_intent(
    *,
    id: str,
    amount: int,
    currency: str = "eur",
    status: str = "succeeded",
    metadata: dict | None = None,
    latest_charge: str | dict | None = None,
    method: str = "card",
    last_payment_error: dict | None = None,
) -> dict:
    return example(
        "payment_intent",
        id=id,
        amount=amount,
        amount_received=amount if status == "succeeded" else 0,
        currency=currency,
        status=status,
        metadata=metadata or {},
        latest_charge=latest_charge,
        payment_method_types=[method],
        last_payment_error=last_payment_error,
        canceled_at=None,
        client_secret=f"{id}_secret_test",
        next_action=None,
        processing=None,
    )


def balance_transaction(
    *, id: str, source: str = "", fee: int = 0, currency: str = "eur", **fields
):
    """A balance transaction; its `currency` is the account's settlement currency, the
    one Stripe states the fee in."""
    return example(
        "balance_transaction", id=id, source=source, fee=fee, currency=currency, **fields
    )


def refund(
    *, charge_id: str, amount: int, status: str = "succeeded", id: str | None = None
) -> dict:
    return example(
        "refund",
        id=id or new_id("re"),
        charge=charge_id,
        amount=amount,
        status=status,
        currency="eur",
    )


def dispute(
    *,
    charge_id: str,
    amount: int,
    status: str,
    payment_intent: str | None = None,
    id: str = "dp_test1",
    balance_transactions: list[dict] | None = None,
) -> dict:
    return example(
        "dispute",
        id=id,
        charge=charge_id,
        payment_intent=payment_intent,
        amount=amount,
        currency="eur",
        status=status,
        balance_transactions=balance_transactions or [],
    )


def payout(*, id: str, amount: int, status: str, currency: str = "eur", **fields) -> dict:
    return example("payout", id=id, amount=amount, status=status, currency=currency, **fields)


def account(*, id: str, charges_enabled: bool, payouts_enabled: bool = False) -> dict:
    return example(
        "account",
        id=id,
        charges_enabled=charges_enabled,
        payouts_enabled=payouts_enabled,
        details_submitted=charges_enabled,
    )


def event(
    type: str,
    obj: dict,
    *,
    account: str | None = None,
    created: int | None = None,
    id: str | None = None,
) -> dict:
    envelope = example(
        "event",
        id=id or new_id("evt"),
        type=type,
        data={"object": obj},
        created=created if created is not None else int(time.time()),
        api_version=API_VERSION,
        livemode=False,
    )
    if account:
        envelope["account"] = account
    return envelope


def sign(body: bytes, *, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header: t=<unix>,v1=<hex hmac_sha256(secret, "t.body")>."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"
