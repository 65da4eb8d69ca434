"""The one module that talks to Stripe (or to localstripe, which speaks the same API).

Built on the official library's `StripeClient`, configured from settings
(`STRIPE_API_KEY`, `STRIPE_API_BASE`). Calls for a landlord's connected account pass
`stripe_account=` (localstripe ignores the header, which is fine offline). Every
mutating call takes an idempotency key: Stripe keeps the first answer for a key, so a
retried call never creates a second object (FIELD-NOTES: Stripe).

Functions return plain dicts (the same shape as a webhook's `data.object`), so the
services handle an API answer and an event payload with the same code. Errors are
the library's, re-exported here so callers need not import `stripe`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import stripe
from django.conf import settings

StripeError = stripe.StripeError
CardError = stripe.CardError
InvalidRequestError = stripe.InvalidRequestError
APIConnectionError = stripe.APIConnectionError
SignatureVerificationError = stripe.SignatureVerificationError


@cache
def _client_for(api_key: str, api_base: str, timeout: int) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base},
        # Retries reuse our idempotency key, so they are safe; keep them few so a
        # worker is not stuck for long when Stripe (or localstripe) is down.
        max_network_retries=1,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


def client() -> stripe.StripeClient:
    """The configured client (cached per key/base, so tests can repoint settings)."""
    return _client_for(
        settings.STRIPE_API_KEY, settings.STRIPE_API_BASE, settings.STRIPE_TIMEOUT_SECONDS
    )


def _options(*, stripe_account: str | None, idempotency_key: str | None = None) -> dict:
    options: dict[str, Any] = {}
    if stripe_account:
        options["stripe_account"] = stripe_account
    if idempotency_key:
        options["idempotency_key"] = idempotency_key
    return options


def _mutating(*, stripe_account: str | None, idempotency_key: str) -> dict:
    if not idempotency_key:
        raise ValueError("Every mutating Stripe call needs an idempotency key")
    return _options(stripe_account=stripe_account, idempotency_key=idempotency_key)


def _plain(obj) -> dict:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


# --- webhooks -----------------------------------------------------------------------


def webhook_event_construct(*, raw_body: bytes, sig_header: str | None) -> dict:
    """Verify a webhook delivery and return the event as a dict.

    Raises SignatureVerificationError for a missing or wrong signature, a missing
    secret, or a timestamp outside the tolerance (either way: the library only
    refuses old ones, we also refuse ones from the future); ValueError for a body
    that is not a JSON object.

    This is `stripe.Webhook.construct_event` minus building StripeObjects: the same
    `WebhookSignature.verify_header` check (the library recommends it for "quickly
    validating incoming webhooks before storing them"), then `json.loads`. Building
    the objects and turning them back into dicts cost 1.4 ms of the webhook's time
    per 5 kB event, against 0.03 ms for this.
    """
    tolerance = settings.STRIPE_WEBHOOK_TOLERANCE
    payload = raw_body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    stripe.WebhookSignature.verify_header(
        payload, sig_header, settings.STRIPE_WEBHOOK_SECRET, tolerance
    )
    timestamp = _signature_timestamp(sig_header or "")
    if timestamp > time.time() + tolerance:
        raise SignatureVerificationError(
            f"Timestamp outside the tolerance zone ({timestamp})", sig_header, payload
        )
    event = json.loads(payload)
    if not isinstance(event, dict):
        raise ValueError("The body is not a JSON object")
    return event


def _signature_timestamp(header: str) -> int:
    for part in header.split(","):
        key, _sep, value = part.strip().partition("=")
        if key == "t":
            return int(value)
    return 0


# --- customers and payment methods --------------------------------------------------


def customer_create(
    *,
    email: str,
    name: str,
    metadata: dict[str, str],
    idempotency_key: str,
    stripe_account: str | None = None,
) -> dict:
    params: dict[str, Any] = {"name": name, "metadata": metadata}
    if email:
        params["email"] = email
    return _plain(
        client().v1.customers.create(
            params=params,
            options=_mutating(stripe_account=stripe_account, idempotency_key=idempotency_key),
        )
    )


def customer_retrieve(*, customer_id: str, stripe_account: str | None = None) -> dict:
    return _plain(
        client().v1.customers.retrieve(customer_id, options=_options(stripe_account=stripe_account))
    )


def customer_get_or_create(
    *,
    customer_id: str | None,
    email: str,
    name: str,
    metadata: dict[str, str],
    idempotency_key: str,
    stripe_account: str | None = None,
) -> dict:
    """The customer `customer_id` if it still exists at Stripe, else a new one."""
    if customer_id:
        try:
            customer = customer_retrieve(customer_id=customer_id, stripe_account=stripe_account)
        except InvalidRequestError:
            customer = None
        if customer and not customer.get("deleted"):
            return customer
    return customer_create(
        email=email,
        name=name,
        metadata=metadata,
        idempotency_key=idempotency_key,
        stripe_account=stripe_account,
    )


def payment_method_retrieve(*, payment_method_id: str, stripe_account: str | None = None) -> dict:
    return _plain(
        client().v1.payment_methods.retrieve(
            payment_method_id, options=_options(stripe_account=stripe_account)
        )
    )


def payment_method_list(
    *, customer_id: str, type: str = "card", stripe_account: str | None = None
) -> list[dict]:
    page = client().v1.payment_methods.list(
        params={"customer": customer_id, "type": type},
        options=_options(stripe_account=stripe_account),
    )
    return [_plain(pm) for pm in page.data]


def payment_method_attach(
    *,
    payment_method_id: str,
    customer_id: str,
    idempotency_key: str,
    stripe_account: str | None = None,
) -> dict:
    return _plain(
        client().v1.payment_methods.attach(
            payment_method_id,
            params={"customer": customer_id},
            options=_mutating(stripe_account=stripe_account, idempotency_key=idempotency_key),
        )
    )


def payment_method_detach(
    *, payment_method_id: str, idempotency_key: str, stripe_account: str | None = None
) -> dict:
    return _plain(
        client().v1.payment_methods.detach(
            payment_method_id,
            options=_mutating(stripe_account=stripe_account, idempotency_key=idempotency_key),
        )
    )


def setup_intent_create(
    *,
    customer_id: str,
    payment_method_types: Sequence[str],
    metadata: dict[str, str],
    idempotency_key: str,
    stripe_account: str | None = None,
) -> dict:
    """A SetupIntent for saving a method for later off-session charges (autopay)."""
    return _plain(
        client().v1.setup_intents.create(
            params={
                "customer": customer_id,
                "payment_method_types": list(payment_method_types),
                "usage": "off_session",
                "metadata": metadata,
            },
            options=_mutating(stripe_account=stripe_account, idempotency_key=idempotency_key),
        )
    )


# --- payment intents ----------------------------------------------------------------


def payment_intent_create(
    *,
    amount: int,
    currency: str,
    customer: str | None,
    metadata: dict[str, str],
    payment_method_types: Sequence[str],
    idempotency_key: str,
    stripe_account: str | None = None,
    payment_method: str | None = None,
    confirm: bool = False,
    off_session: bool = False,
) -> dict:
    """Create (and optionally confirm) a PaymentIntent. `amount` in minor units.

    Only parameters localstripe also accepts are sent, so the same call works
    offline; a declined off-session confirmation raises CardError.
    """
    params: dict[str, Any] = {
        "amount": amount,
        "currency": currency.lower(),
        "metadata": metadata,
        "payment_method_types": list(payment_method_types),
    }
    if customer:
        params["customer"] = customer
    if payment_method:
        params["payment_method"] = payment_method
    if confirm:
        params["confirm"] = True
    if off_session:
        params["off_session"] = True
    return _plain(
        client().v1.payment_intents.create(
            params=params,
            options=_mutating(stripe_account=stripe_account, idempotency_key=idempotency_key),
        )
    )


def payment_intent_retrieve(*, payment_intent_id: str, stripe_account: str | None = None) -> dict:
    return _plain(
        client().v1.payment_intents.retrieve(
            payment_intent_id, options=_options(stripe_account=stripe_account)
        )
    )


# --- balance, refunds, payouts, events ----------------------------------------------


def charge_retrieve(*, charge_id: str, stripe_account: str | None = None) -> dict:
    """A charge with its balance transaction expanded (where Stripe reports the fee)."""
    return _plain(
        client().v1.charges.retrieve(
            charge_id,
            params={"expand": ["balance_transaction"]},
            options=_options(stripe_account=stripe_account),
        )
    )


def payout_balance_transactions(
    *, payout_id: str, stripe_account: str | None = None
) -> Iterator[dict]:
    """Every balance transaction settled by a payout (Stripe pages through them).

    localstripe does not support the `payout` filter and answers 400."""
    page = client().v1.balance_transactions.list(
        params={"payout": payout_id, "limit": 100},
        options=_options(stripe_account=stripe_account),
    )
    for txn in page.auto_paging_iter():
        yield _plain(txn)


def refund_list(*, charge_id: str, stripe_account: str | None = None) -> list[dict]:
    page = client().v1.refunds.list(
        params={"charge": charge_id, "limit": 100},
        options=_options(stripe_account=stripe_account),
    )
    return [_plain(r) for r in page.auto_paging_iter()]


def events_list(*, created_gte: int, stripe_account: str | None = None) -> Iterator[dict]:
    """Events created at or after `created_gte` (unix time), newest first, all pages.

    Stripe keeps events for 30 days; recovery asks for the last 3."""
    page = client().v1.events.list(
        params={"created": {"gte": created_gte}, "limit": 100},
        options=_options(stripe_account=stripe_account),
    )
    for event in page.auto_paging_iter():
        yield _plain(event)


# --- Connect ------------------------------------------------------------------------


def account_create(*, email: str, country: str, idempotency_key: str) -> dict:
    """A Standard connected account for a landlord (not in localstripe: 404)."""
    params: dict[str, Any] = {"type": "standard"}
    if email:
        params["email"] = email
    if country:
        params["country"] = country
    return _plain(
        client().v1.accounts.create(
            params=params, options=_mutating(stripe_account=None, idempotency_key=idempotency_key)
        )
    )


def account_retrieve(*, account_id: str) -> dict:
    return _plain(client().v1.accounts.retrieve(account_id))


def account_link_create(
    *, account_id: str, refresh_url: str, return_url: str, idempotency_key: str
) -> dict:
    """The hosted onboarding link for a connected account (not in localstripe: 404)."""
    return _plain(
        client().v1.account_links.create(
            params={
                "account": account_id,
                "refresh_url": refresh_url,
                "return_url": return_url,
                "type": "account_onboarding",
            },
            options=_mutating(stripe_account=None, idempotency_key=idempotency_key),
        )
    )
