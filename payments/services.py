"""Write actions for payments: Stripe PaymentIntents, autopay, manual payments, the
processing of Stripe events, and their postings to the ledger.

Rules (docs/decisions/0005-payments.md):

- A payment is posted once (ledger key `payment:<id>:post`): debit cash in transit
  (Stripe) or bank (manual), credit the tenant's receivable allocated to the chosen
  invoice first (up to its open balance), then to the tenant's open issued invoices
  oldest first; what is left is credited to `tenant_credit` (an overpayment is not an
  error). Allocation entries name the invoice, so invoice balances derive from them.
- Processor fees: debit processor_fees, credit cash in transit (`payment:<id>:fee`).
- Refunds and dispute holds *unwind* the payment: they debit what the payment
  credited (tenant credit first, then the invoices, last allocated first) and credit
  cash in transit. A won dispute reverses its hold; a lost one keeps it.
- Stripe handlers look at the state of the object in the event (and our rows), never
  at the order of events: a success is final, an older processing/failed snapshot
  never overwrites a newer one, final refund/dispute/payout states are sticky. Every
  posting has an idempotency key, so any number of deliveries posts once.
- Network calls to Stripe are made outside the database transactions that lock rows,
  except fee look-ups while processing an event (bounded by the client's timeout).

Lock order, everywhere: StripeEvent → Payment → Tenant → (ledger head, taken by the
ledger service). The tenant lock serialises allocations to one tenant's invoices.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import traceback
import uuid
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Sum
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import override

from invoices.models import Channel, Invoice, InvoiceKind, InvoiceState, Notification
from invoices.selectors import invoice_balances
from ledger.models import Account, AccountCode, LedgerEntry, LedgerTransaction
from ledger.selectors import account_balance
from ledger.services import (
    AccountKey,
    EntrySpec,
    TransactionSpec,
    accounts_get_or_create,
    prepared_rows,
    transaction_post,
    transaction_reverse,
    transactions_post,
)
from money.currency import format_money, is_known_currency
from payments import selectors, stripe_client
from payments.models import (
    DISPUTE_FINAL_STATUSES,
    DISPUTE_FUNDS_WITHDRAWN,
    MANUAL_METHODS,
    PAYOUT_FINAL_STATUSES,
    POSTED_STATUSES,
    REFUND_FINAL_STATUSES,
    STRIPE_METHODS,
    Dispute,
    DisputeStatus,
    EventStatus,
    Method,
    Payment,
    PaymentAllocation,
    PaymentSettings,
    PaymentStatus,
    Payout,
    PayoutItem,
    PayoutStatus,
    Refund,
    RefundStatus,
    SavedPaymentMethod,
    Source,
    StripeConnection,
    StripeCustomer,
    StripeEvent,
)
from tenants.models import Landlord, Lease, Tenant
from tenants.query import FIRST_YEAR, in_calendar
from tenants.services import audit

log = logging.getLogger(__name__)

DOCUMENT_KIND = "payment"
INVOICE_DOCUMENT = "invoice"
RECEIPT_KIND = "payment_receipt"
RECOVER_WINDOW = timedelta(days=3)
# A `received` event older than this lost its on-commit task (broker down, crash).
SWEEP_RECEIVED_AFTER = timedelta(minutes=2)
# Failed events are retried by the sweep after 2, 4, 8, ... minutes, this many times.
SWEEP_MAX_ATTEMPTS = 8
SWEEP_BATCH = 500

# Which payment methods a currency can use at Stripe.
METHOD_CURRENCIES = {
    Method.SEPA_DEBIT: {"EUR"},
    Method.US_BANK_ACCOUNT: {"USD"},
}

# Off-session declines that a retry cannot fix: the card or account is gone, wrong or
# blocked, or the tenant must act (authentication_required: a 3-D Secure challenge
# needs the tenant on-session). Dunning stops retrying these and asks the tenant to
# update their payment method. `do_not_honor`, `insufficient_funds`,
# `generic_decline`, `card_declined` without a reason, `try_again_later`, ... are soft.
HARD_DECLINE_CODES = frozenset(
    {
        "account_closed",
        "authentication_required",
        "card_not_supported",
        "currency_not_supported",
        "debit_not_authorized",
        "expired_card",
        "fraudulent",
        "incorrect_number",
        "invalid_account",
        "invalid_account_number",
        "invalid_number",
        "lost_card",
        "merchant_blacklist",
        "no_account",
        "pickup_card",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "stolen_card",
        "stop_payment_order",
        "transaction_not_allowed",
    }
)


class StripeUnavailable(Exception):
    """Stripe (or localstripe) cannot do this right now, or does not support it."""


class PaymentDeclined(ValidationError):
    """The card or bank declined; `decline_code`/`code` say why, nothing was posted."""

    def __init__(self, message: str, *, code: str = "", decline_code: str = "", payment=None):
        super().__init__(message, code=code or "declined")
        self.failure_code = code
        self.decline_code = decline_code
        self.payment = payment


# --- small helpers ------------------------------------------------------------------


def _from_unix(value) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)


def _stripe_account(landlord: Landlord) -> str | None:
    """The landlord's connected account for API calls; None on the platform account
    (localstripe, where Connect does not exist)."""
    connection_row = StripeConnection.objects.filter(landlord=landlord).first()
    if connection_row is not None:
        if settings.STRIPE_CONNECT_REQUIRED and not connection_row.charges_enabled:
            raise ValidationError(
                _("This landlord's Stripe account cannot take payments yet."),
                code="stripe_not_ready",
            )
        return connection_row.account_id
    if settings.STRIPE_CONNECT_REQUIRED:
        raise ValidationError(
            _("This landlord has not connected a Stripe account."), code="stripe_not_connected"
        )
    return None


def _id_of(value) -> str:
    """A Stripe reference that is either an id or an expanded object."""
    if isinstance(value, dict):
        return value.get("id") or ""
    return value or ""


def _metadata_int(metadata: dict, key: str) -> int | None:
    value = (metadata or {}).get(key)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


# --- allocation and posting ---------------------------------------------------------


def _payments_locked():
    """Payments locked FOR UPDATE (only the payment rows, not the joined ones)."""
    return Payment.objects.select_for_update(of=("self",)).select_related("landlord", "tenant")


# `_payments_locked()` for the lookups of every payment event, in plain SQL: the
# payment row locked, its landlord and tenant read along (as select_related does).
_LOCK_PARTS = (("p", Payment), ("l", Landlord), ("t", Tenant))
_LOCK_SQL = (
    "SELECT "  # noqa: S608
    + ", ".join(
        f'{alias}."{field.column}"'
        for alias, model in _LOCK_PARTS
        for field in model._meta.concrete_fields
    )
    + f" FROM {Payment._meta.db_table} p"
    f" JOIN {Landlord._meta.db_table} l ON l.id = p.landlord_id"
    f" JOIN {Tenant._meta.db_table} t ON t.id = p.tenant_id"
    " WHERE {where} ORDER BY p.id LIMIT 1 FOR UPDATE OF p"
)
_LOCK_BY = {
    "intent": _LOCK_SQL.format(where="p.stripe_payment_intent_id = %s"),
    "charge": _LOCK_SQL.format(where="p.stripe_charge_id = %s"),
    # A payment whose PaymentIntent id was never saved (the metadata names it).
    "unlinked": _LOCK_SQL.format(where="p.id = %s AND p.stripe_payment_intent_id IS NULL"),
}


def _payment_locked(by: str, value) -> Payment | None:
    """The payment found by `by` (a key of `_LOCK_BY`), locked, landlord and tenant
    loaded; None if there is none. None of the three models needs a value converter
    (checked by a test), so `from_db` takes the row as PostgreSQL returns it."""
    rows = prepared_rows(_LOCK_BY[by], [value])
    if not rows:
        return None
    row, start = rows[0], 0
    loaded = []
    for _alias, model in _LOCK_PARTS:
        fields = model._meta.concrete_fields
        names = [f.attname for f in fields]
        loaded.append(model.from_db(connection.alias, names, row[start : start + len(names)]))
        start += len(names)
    payment, landlord, tenant = loaded
    payment.landlord, payment.tenant = landlord, tenant
    return payment


# The per-event writes, as fixed prepared statements over every column (from the
# models' _meta): an ORM save or bulk_create compiles its SQL anew each time, and the
# rows here are plain values (tests/payments/test_plain_sql.py checks the columns need
# no conversion and that what is written equals what the ORM writes).
def _columns(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields if not f.primary_key]


_PAYMENT_COLUMNS = _columns(Payment)
_PAYMENT_UPDATE_SQL = (
    f"UPDATE {Payment._meta.db_table} SET "  # noqa: S608
    + ", ".join(f"{name} = %s" for name in _PAYMENT_COLUMNS)
    + " WHERE id = %s"
)
_ALLOCATION_COLUMNS = _columns(PaymentAllocation)
_ALLOCATION_INSERT_SQL = (
    f"INSERT INTO {PaymentAllocation._meta.db_table} ({', '.join(_ALLOCATION_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join(['%s'] * len(_ALLOCATION_COLUMNS))})"
)
_NOTIFICATION_COLUMNS = _columns(Notification)
# Exactly once by the outbox key. DO NOTHING, not a no-op DO UPDATE: an upsert that can
# update also fires the table's statement-level UPDATE trigger (the reference check).
_NOTIFICATION_INSERT_SQL = (
    f"INSERT INTO {Notification._meta.db_table} ({', '.join(_NOTIFICATION_COLUMNS)})"  # noqa: S608
    f" VALUES ({', '.join(['%s'] * len(_NOTIFICATION_COLUMNS))})"
    " ON CONFLICT (landlord_id, dedupe_key) DO NOTHING RETURNING id"
)
_NOTIFICATION_ID_SQL = (
    f"SELECT id FROM {Notification._meta.db_table}"  # noqa: S608
    " WHERE landlord_id = %s AND dedupe_key = %s"
)


def _payment_save(payment: Payment) -> None:
    """`payment.save()` for the locked payment of the event path: every column, one
    prepared statement."""
    payment.updated_at = timezone.now()
    prepared_rows(
        _PAYMENT_UPDATE_SQL, [*(getattr(payment, name) for name in _PAYMENT_COLUMNS), payment.pk]
    )


def _allocations_insert(*, payment: Payment, plan: Sequence[tuple[Invoice | None, int]]) -> None:
    now = timezone.now()
    for position, (invoice, amount) in enumerate(plan):
        row = PaymentAllocation(
            landlord_id=payment.landlord_id,
            payment_id=payment.pk,
            invoice_id=invoice.pk if invoice is not None else None,
            amount_minor=amount,
            position=position,
            created_at=now,
            updated_at=now,
        )
        prepared_rows(_ALLOCATION_INSERT_SQL, [getattr(row, name) for name in _ALLOCATION_COLUMNS])


def _notification_upsert(notification: Notification) -> int:
    """Insert the outbox row unless its (landlord, dedupe key) exists; its id either way."""
    notification.created_at = notification.updated_at = timezone.now()
    rows = prepared_rows(
        _NOTIFICATION_INSERT_SQL, [getattr(notification, name) for name in _NOTIFICATION_COLUMNS]
    ) or prepared_rows(
        _NOTIFICATION_ID_SQL, [notification.landlord_id, notification.dedupe_key]
    )  # queued before
    ((notification_id,),) = rows
    return notification_id


_LOCK_TENANT_SQL = "SELECT id FROM tenants_tenant WHERE id = %s FOR UPDATE"


def _lock_tenant(tenant_id: int) -> None:
    # Serialises everything that reads a tenant's open balances and then posts
    # against them (payments, credit application), so two cannot both settle the
    # same invoice. Taking it again in the same transaction is a cheap no-op.
    prepared_rows(_LOCK_TENANT_SQL, [tenant_id])


# In the model's field order, as `Model.from_db` expects for a partial row.
_OPEN_INVOICE_FIELDS = tuple(
    f.attname
    for f in Invoice._meta.concrete_fields
    if f.attname
    in {"id", "landlord_id", "lease_id", "tenant_id", "currency", "number", "state"}
    | {"issue_date", "due_date", "total_minor"}
)
# The tenant's credit account balance per currency (credit is a liability: negative
# is in the tenant's favour), and the last entry on it (the key of applying it).
_CREDIT_BY_CURRENCY_SQL = (
    "SELECT a.currency, SUM(e.amount_minor) AS total, MAX(e.id) AS last_entry"
    " FROM ledger_account a JOIN ledger_ledgerentry e ON e.account_id = a.id"
    " WHERE a.landlord_id = %s AND a.code = %s AND a.tenant_id = %s"
    " GROUP BY a.currency ORDER BY a.currency"
)


# `receivable_balance` (invoices.selectors) for one tenant's issued invoices: the sum
# of the receivable entries that name the invoice.
_OPEN_INVOICES_COLUMNS = (
    f"SELECT {', '.join('i.' + name for name in _OPEN_INVOICE_FIELDS)}, b.balance"
)
_OPEN_INVOICES_FROM = (
    " FROM invoices_invoice i CROSS JOIN LATERAL ("
    "  SELECT COALESCE(SUM(e.amount_minor), 0) AS balance FROM ledger_ledgerentry e"
    "  JOIN ledger_account a ON a.id = e.account_id AND a.code = %s"
    "  WHERE e.landlord_id = i.landlord_id AND e.document_kind = %s"
    "  AND e.document_id = i.id AND e.currency = i.currency) b"
    " WHERE i.landlord_id = %s AND i.tenant_id = %s AND i.state = %s AND i.currency = %s"
    " AND b.balance > 0 ORDER BY i.due_date, i.issue_date, i.id"
)
_OPEN_INVOICES_SQL = _OPEN_INVOICES_COLUMNS + _OPEN_INVOICES_FROM
# The same with one more column: whether the tenant holds credit in any currency (an
# uncorrelated subquery over `_CREDIT_BY_CURRENCY_SQL`: run once per statement).
# Fixed text of this module only, no input: S608 does not apply.
_OPEN_INVOICES_AND_CREDIT_SQL = (
    _OPEN_INVOICES_COLUMNS  # noqa: S608
    + f", (SELECT COALESCE(bool_or(c.total < 0), false) FROM ({_CREDIT_BY_CURRENCY_SQL}) c)"  # noqa: S608
    + _OPEN_INVOICES_FROM
)


def _open_invoices(
    *, landlord: Landlord, tenant_id: int, currency: str, credit: list[bool] | None = None
) -> list[Invoice]:
    """The tenant's issued invoices in `currency` with a positive open balance, oldest
    due first; each carries `balance_minor` (other fields than the listed ones are
    deferred: reading one loads it). With `credit` (a list), the same statement also
    tells whether the tenant holds credit in any currency, appended to it (nothing is
    appended when no invoice is open)."""
    # Placeholders in text order: the credit column's, then the balance's, the filter's.
    params = [] if credit is None else [landlord.pk, AccountCode.TENANT_CREDIT, tenant_id]
    params += [AccountCode.RECEIVABLE, INVOICE_DOCUMENT]
    params += [landlord.pk, tenant_id, InvoiceState.ISSUED, currency]
    rows = prepared_rows(
        _OPEN_INVOICES_SQL if credit is None else _OPEN_INVOICES_AND_CREDIT_SQL, params
    )
    invoices = []
    width = len(_OPEN_INVOICE_FIELDS)
    for row in rows:
        invoice = Invoice.from_db(connection.alias, _OPEN_INVOICE_FIELDS, row[:width])
        invoice.balance_minor = int(row[width])
        invoices.append(invoice)
    if credit is not None and rows:
        credit.append(bool(rows[0][width + 1]))
    return invoices


def _allocation_plan(
    *, invoices: Sequence[Invoice], amount: int, target_id: int | None
) -> list[tuple[Invoice | None, int]]:
    """Target invoice first (up to its balance), then oldest first; the rest is credit."""
    ordered = sorted(invoices, key=lambda inv: inv.pk != target_id)
    plan: list[tuple[Invoice | None, int]] = []
    remaining = amount
    for invoice in ordered:
        if remaining <= 0:
            break
        take = min(invoice.balance_minor, remaining)
        if take > 0:
            plan.append((invoice, take))
            remaining -= take
    if remaining > 0:
        plan.append((None, remaining))
    return plan


def _debit_code(payment: Payment) -> str:
    # Stripe holds card and bank-debit money until a payout; staff record manual
    # payments once the money is in hand or in the bank.
    return AccountCode.CASH_IN_TRANSIT if payment.source == Source.STRIPE else AccountCode.BANK


def _payment_post(
    *, payment: Payment, when: datetime, fee: int | None = None
) -> list[tuple[Invoice | None, int]] | None:
    """Post the payment, write its allocations and queue its receipt (caller holds the
    payment lock; `payment.succeeded_at` is set); with a known Stripe `fee`, the fee is
    posted in the same ledger call (its own transaction and key, as
    `_payment_fee_record` would). Returns the allocation plan, or None if the payment
    was posted already."""
    if payment.posting_id is not None:
        return None
    landlord = payment.landlord
    _lock_tenant(payment.tenant_id)
    holds_credit: list[bool] = []
    plan = _allocation_plan(
        invoices=_open_invoices(
            landlord=landlord,
            tenant_id=payment.tenant_id,
            currency=payment.currency,
            credit=holds_credit,
        ),
        amount=payment.amount_minor,
        target_id=payment.invoice_id,
    )
    currency = payment.currency
    debit = AccountKey(_debit_code(payment), currency)
    receivable = AccountKey(AccountCode.RECEIVABLE, currency, payment.tenant_id)
    credit = AccountKey(AccountCode.TENANT_CREDIT, currency, payment.tenant_id)
    # The credit account only when part of the payment becomes credit (its first use
    # creates it: one insert and two reads more).
    keys = [debit, receivable] + ([credit] if any(inv is None for inv, _a in plan) else [])
    with_fee = bool(fee) and payment.fee_minor is None
    if with_fee:
        keys += [_fees_key(currency), _cash_key(currency)]
    accounts = accounts_get_or_create(landlord=landlord, keys=keys)
    entries = [EntrySpec(accounts[debit], payment.amount_minor, currency)]
    for invoice, amount in plan:
        if invoice is None:
            entries.append(EntrySpec(accounts[credit], -amount, currency))
        else:
            entries.append(
                EntrySpec(
                    accounts[receivable],
                    -amount,
                    currency,
                    lease_id=invoice.lease_id,
                    document_kind=INVOICE_DOCUMENT,
                    document_id=invoice.pk,
                )
            )
    with override("en"):  # the ledger is one record for everyone, never a visitor's language
        method = str(payment.get_method_display())
    specs = [
        TransactionSpec(
            idempotency_key=f"payment:{payment.pk}:post",
            effective_at=when,
            description=f"Payment {payment.pk} ({method})"[:300],
            entries=entries,
            document_kind=DOCUMENT_KIND,
            document_id=payment.pk,
        )
    ]
    if with_fee:
        specs.append(
            _fee_spec(
                accounts=accounts,
                payment=payment,
                fee=fee,
                key=f"payment:{payment.pk}:fee",
                when=when,
            )
        )
    # Allocations and receipt first: the ledger post takes the landlord's head lock,
    # held until COMMIT, so every statement before it is one less under the lock.
    _allocations_insert(payment=payment, plan=plan)
    _receipt_queue(payment, plan=plan)
    posted = transactions_post(landlord=landlord, specs=specs)
    payment.posting = posted[0]
    if with_fee:
        payment.fee_minor, payment.fee_posting = fee, posted[1]
    if holds_credit != [False]:
        # Credit can only pay what is still open: a remainder of this payment became
        # credit only if nothing in its currency is left open, so only credit held
        # before can have work to do (and when nothing was open, look as before).
        _credit_apply(landlord=landlord, tenant_id=payment.tenant_id, when=when)
    return plan


@dataclass(frozen=True)
class _Bucket:
    code: str
    document_id: int | None
    lease_id: int | None
    remaining: int
    # Paid on an invoice voided since: voiding moved that money to the tenant's credit
    # (and a replacement may have spent it), so it is taken back from there, never by
    # reopening the void invoice.
    voided: bool = False


def _unwind_buckets(payment: Payment) -> list[_Bucket]:
    """What the payment still has credited, per tenant account and invoice, from the
    ledger itself (its postings, refunds, holds and releases): invoices first, the
    last allocated first, then tenant credit."""
    rows = (
        LedgerEntry.objects.filter(
            landlord_id=payment.landlord_id,
            transaction__landlord_id=payment.landlord_id,
            transaction__document_kind=DOCUMENT_KIND,
            transaction__document_id=payment.pk,
            account__code__in=[AccountCode.RECEIVABLE, AccountCode.TENANT_CREDIT],
        )
        .values("account__code", "document_kind", "document_id", "lease_id")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    )
    positions = dict(
        PaymentAllocation.objects.filter(payment=payment).values_list("invoice_id", "position")
    )
    rows = list(rows)
    documents = {
        row["document_id"]
        for row in rows
        if row["document_id"] and row["document_kind"] != _VOIDED_TAKEN_BACK
    }
    voided = set(
        Invoice.objects.filter(
            landlord_id=payment.landlord_id, pk__in=documents, state=InvoiceState.VOID
        ).values_list("pk", flat=True)
    )
    # What an earlier take-back put back on a replacement of a voided invoice counts
    # against the voided invoice's bucket (`_unwind_post`).
    replaced = dict(
        Invoice.objects.filter(
            landlord_id=payment.landlord_id,
            adjusts_id__in=voided,
            kind=InvoiceKind.RENT,
            pk__in=documents,
        ).values_list("pk", "adjusts_id")
    )
    totals: dict[tuple[str, int | None, int | None], int] = {}
    for row in rows:
        code, document, total = row["account__code"], row["document_id"], int(row["total"])
        if row["document_kind"] == _VOIDED_TAKEN_BACK or document in voided:
            code = "voided"
        elif document in replaced and total > 0:
            code, document = "voided", replaced[document]
        key = (code, document, row["lease_id"])
        totals[key] = totals.get(key, 0) + total
    buckets = [
        _Bucket(AccountCode.TENANT_CREDIT, document, lease_id, -total, voided=True)
        if code == "voided"
        else _Bucket(code, document, lease_id, -total)
        for (code, document, lease_id), total in totals.items()
        if total < 0
    ]
    return sorted(
        buckets,
        key=lambda b: (
            b.code == AccountCode.TENANT_CREDIT,
            -positions.get(b.document_id, -1),
            -(b.document_id or 0),
        ),
    )


def _tenant_keys(payment: Payment) -> dict[str, AccountKey]:
    currency = payment.currency
    return {
        AccountCode.RECEIVABLE: AccountKey(AccountCode.RECEIVABLE, currency, payment.tenant_id),
        AccountCode.TENANT_CREDIT: AccountKey(
            AccountCode.TENANT_CREDIT, currency, payment.tenant_id
        ),
        "debit": AccountKey(_debit_code(payment), currency),
    }


def _credits(*, landlord_id: int, tenant_id: int) -> list[tuple[str, int, int]]:
    """(currency, credit available, last entry id) per currency the tenant ever held
    credit in; available is negative if the account was overdrawn."""
    rows = prepared_rows(
        _CREDIT_BY_CURRENCY_SQL, [landlord_id, AccountCode.TENANT_CREDIT, tenant_id]
    )
    return [(currency, -int(total), last) for currency, total, last in rows]


def _credit_available(*, landlord_id: int, tenant_id: int, currency: str) -> int:
    held = {
        cur: amount for cur, amount, _last in _credits(landlord_id=landlord_id, tenant_id=tenant_id)
    }
    return max(held.get(currency, 0), 0)


def _existing(payment: Payment, key: str) -> LedgerTransaction | None:
    return LedgerTransaction.objects.filter(
        landlord_id=payment.landlord_id, idempotency_key=key
    ).first()


def _unwind_post(
    *, payment: Payment, amount: int, key: str, description: str, when: datetime
) -> LedgerTransaction:
    """Take `amount` of the payment back (a refund, a dispute hold, a bounced cheque):
    credit where the money sat (cash in transit, or bank) and debit what the payment
    paid: its invoices (reopening them, last allocated first), then its credit.

    Credit the tenant has already spent (applied to a later invoice) cannot be taken
    back from the credit account; that part is debited to the receivable without an
    invoice, so the tenant's balance shows it (docs/decisions/0005-payments.md).
    """
    existing = _existing(payment, key)
    if existing is not None:
        return existing
    landlord, currency = payment.landlord, payment.currency
    keys = _tenant_keys(payment)
    accounts = accounts_get_or_create(landlord=landlord, keys=keys.values())
    buckets = _unwind_buckets(payment)
    if amount > sum(b.remaining for b in buckets):
        raise ValueError(
            f"Cannot take back {amount} from payment {payment.pk}: only "
            f"{sum(b.remaining for b in buckets)} of it is still credited to the tenant."
        )
    credit_left = _credit_available(
        landlord_id=payment.landlord_id, tenant_id=payment.tenant_id, currency=currency
    )
    entries = [EntrySpec(accounts[keys["debit"]], -amount, currency)]
    remaining = amount
    for bucket in buckets:
        take = min(bucket.remaining, remaining)
        if bucket.voided and take > 0:
            remaining -= take
            credit_left -= _unwind_voided(
                bucket, take, credit_left=credit_left, accounts=accounts, keys=keys, into=entries
            )
            continue
        if bucket.code == AccountCode.TENANT_CREDIT:
            take = min(take, credit_left)
        if take <= 0:
            continue
        remaining -= take
        if bucket.code == AccountCode.TENANT_CREDIT:
            credit_left -= take
        entries.append(
            EntrySpec(
                accounts[keys[bucket.code]],
                take,
                currency,
                lease_id=bucket.lease_id,
                document_kind=INVOICE_DOCUMENT if bucket.document_id else "",
                document_id=bucket.document_id,
            )
        )
    if remaining > 0:
        entries.append(EntrySpec(accounts[keys[AccountCode.RECEIVABLE]], remaining, currency))
    return transaction_post(
        landlord=landlord,
        idempotency_key=key,
        effective_at=when,
        description=description[:300],
        entries=entries,
        document_kind=DOCUMENT_KIND,
        document_id=payment.pk,
    )


_VOIDED_TAKEN_BACK = "voided-invoice"


def _unwind_voided(
    bucket: _Bucket,
    take: int,
    *,
    credit_left: int,
    accounts: dict,
    keys: dict[str, AccountKey],
    into: list[EntrySpec],
) -> int:
    """Take back `take` paid on an invoice voided since (`_Bucket.voided`): from the
    tenant's credit, where voiding put it, as far as it is still there; then from the
    invoice that replaced it, which that credit paid (reopening it, so it is owed and
    chased again); the rest from the receivable with no invoice, as spent credit is.
    The entries name the voided invoice where they can, so a later take-back of the
    same payment sees what is left. Returns how much came out of credit."""
    currency = keys[AccountCode.RECEIVABLE].currency
    from_credit = min(take, max(credit_left, 0))
    if from_credit:
        into.append(
            EntrySpec(
                accounts[keys[AccountCode.TENANT_CREDIT]],
                from_credit,
                currency,
                lease_id=bucket.lease_id,
                document_kind=INVOICE_DOCUMENT,
                document_id=bucket.document_id,
            )
        )
    rest = take - from_credit
    replacement = (
        Invoice.objects.filter(
            adjusts_id=bucket.document_id, kind=InvoiceKind.RENT, state=InvoiceState.ISSUED
        ).first()
        if rest
        else None
    )
    if replacement is not None:
        owed = invoice_balances(landlord=replacement.landlord, invoices=[replacement])[
            replacement.pk
        ]
        # Entries of this same take-back already reopening it are not in `owed` yet.
        owed += sum(
            e.amount_minor
            for e in into
            if e.document_kind == INVOICE_DOCUMENT and e.document_id == replacement.pk
        )
        reopen = min(rest, max(replacement.total_minor - owed, 0))
        if reopen:
            into.append(
                EntrySpec(
                    accounts[keys[AccountCode.RECEIVABLE]],
                    reopen,
                    currency,
                    lease_id=replacement.lease_id,
                    document_kind=INVOICE_DOCUMENT,
                    document_id=replacement.pk,
                )
            )
            rest -= reopen
    if rest:
        into.append(
            EntrySpec(
                accounts[keys[AccountCode.RECEIVABLE]],
                rest,
                currency,
                lease_id=bucket.lease_id,
                # Not an invoice's balance (the void stays at zero), but counted
                # against the voided invoice's bucket by the next take-back.
                document_kind=_VOIDED_TAKEN_BACK,
                document_id=bucket.document_id,
            )
        )
    return from_credit


def _reallocate_post(
    *,
    payment: Payment,
    taken_back: LedgerTransaction,
    key: str,
    description: str,
    when: datetime,
) -> LedgerTransaction:
    """Give back what an unwind took (a won dispute, a failed refund): the money is
    back where it sat, and is allocated again to the invoices the unwind reopened,
    as far as they are still open, the rest to tenant credit. Not a plain reversal,
    which could push an invoice below zero if the tenant's credit paid it meanwhile."""
    existing = _existing(payment, key)
    if existing is not None:
        return existing
    landlord, currency = payment.landlord, payment.currency
    keys = _tenant_keys(payment)
    accounts = accounts_get_or_create(landlord=landlord, keys=keys.values())
    amount = -sum(
        e.amount_minor
        for e in taken_back.entries.all()
        if e.account_id == accounts[keys["debit"]].pk
    )
    reopened = [
        e.document_id
        for e in taken_back.entries.all().order_by("pk")
        if e.document_kind == INVOICE_DOCUMENT and e.amount_minor > 0
    ]
    open_by_id = {
        inv.pk: inv
        for inv in _open_invoices(landlord=landlord, tenant_id=payment.tenant_id, currency=currency)
    }
    plan = _allocation_plan(
        invoices=[open_by_id[pk] for pk in reopened if pk in open_by_id],
        amount=amount,
        target_id=None,
    )
    entries = [EntrySpec(accounts[keys["debit"]], amount, currency)]
    for invoice, share in plan:
        if invoice is None:
            entries.append(EntrySpec(accounts[keys[AccountCode.TENANT_CREDIT]], -share, currency))
        else:
            entries.append(
                EntrySpec(
                    accounts[keys[AccountCode.RECEIVABLE]],
                    -share,
                    currency,
                    lease_id=invoice.lease_id,
                    document_kind=INVOICE_DOCUMENT,
                    document_id=invoice.pk,
                )
            )
    return transaction_post(
        landlord=landlord,
        idempotency_key=key,
        effective_at=when,
        description=description[:300],
        entries=entries,
        document_kind=DOCUMENT_KIND,
        document_id=payment.pk,
    )


def _fees_key(currency: str) -> AccountKey:
    return AccountKey(AccountCode.PROCESSOR_FEES, currency)


def _cash_key(currency: str) -> AccountKey:
    return AccountKey(AccountCode.CASH_IN_TRANSIT, currency)


def _fee_spec(
    *, accounts: dict, payment: Payment | None, fee: int, key: str, when, currency: str = ""
) -> TransactionSpec:
    currency = currency or payment.currency
    return TransactionSpec(
        idempotency_key=key,
        effective_at=when,
        description=f"Stripe fee{f' for payment {payment.pk}' if payment else ''}",
        entries=[
            EntrySpec(accounts[_fees_key(currency)], fee, currency),
            EntrySpec(accounts[_cash_key(currency)], -fee, currency),
        ],
        document_kind=DOCUMENT_KIND if payment else "",
        document_id=payment.pk if payment else None,
    )


def _fee_post(
    *, landlord: Landlord, payment: Payment | None, currency: str, fee: int, key: str, when
) -> LedgerTransaction | None:
    """Processor fee: debit processor_fees, credit cash in transit (a negative fee, a
    returned dispute fee, the other way round)."""
    if not fee:
        return None
    accounts = accounts_get_or_create(
        landlord=landlord, keys=[_fees_key(currency), _cash_key(currency)]
    )
    spec = _fee_spec(
        accounts=accounts, payment=payment, fee=fee, key=key, when=when, currency=currency
    )
    return transactions_post(landlord=landlord, specs=[spec])[0]


def _payment_fee_record(*, payment: Payment, fee: int | None, when: datetime) -> None:
    if fee is None or payment.fee_minor is not None:
        return
    payment.fee_minor = fee
    if fee > 0:
        payment.fee_posting = _fee_post(
            landlord=payment.landlord,
            payment=payment,
            currency=payment.currency,
            fee=fee,
            key=f"payment:{payment.pk}:fee",
            when=when,
        )


# A posted payment's dispute statuses and what its live refunds took back.
_MONEY_STATE_SQL = (
    "SELECT (SELECT array_agg(d.status::text) FROM payments_dispute d"
    " WHERE d.payment_id = %(payment)s),"
    " (SELECT coalesce(sum(r.amount_minor), 0)::bigint FROM payments_refund r"
    " WHERE r.payment_id = %(payment)s AND r.posting_id IS NOT NULL"
    " AND r.reversal_id IS NULL)"
)


def _money_status(payment: Payment) -> str:
    """The status of a posted payment from its refunds, disputes and reversal."""
    if payment.reversal_id is not None:
        return PaymentStatus.REVERSED
    ((disputes, refunded),) = prepared_rows(_MONEY_STATE_SQL, {"payment": payment.pk})
    disputes = disputes or []
    if DisputeStatus.LOST in disputes:
        return PaymentStatus.REVERSED
    if any(status not in DISPUTE_FINAL_STATUSES for status in disputes):
        return PaymentStatus.DISPUTED
    if refunded >= payment.amount_minor:
        return PaymentStatus.REFUNDED
    if refunded > 0:
        return PaymentStatus.PARTIALLY_REFUNDED
    return PaymentStatus.SUCCEEDED


# --- receipts -----------------------------------------------------------------------


def _receipt_queue(
    payment: Payment, *, plan: Sequence[tuple[Invoice | None, int]] | None = None
) -> None:
    """Queue the receipt email once (outbox dedupe key), sent after commit. `plan`:
    the allocations just written (as `_payment_post` returns them), else read back."""
    tenant = payment.tenant
    if not tenant.email:
        return
    key = f"payment:{payment.pk}:receipt:email"
    if plan is None:
        plan = [
            (a.invoice, a.amount_minor)
            for a in payment.allocations.select_related("invoice").order_by("position")
        ]
    lang = tenant.language or "en"
    with override(lang):
        amount = format_money(payment.amount_minor, payment.currency, lang)
        lines = [
            _("Hello %(name)s,") % {"name": tenant.full_name},
            "",
            _("we received your payment of %(amount)s (%(method)s) on %(day)s. Thank you.")
            % {
                "amount": amount,
                "method": payment.get_method_display(),
                "day": timezone.localtime(payment.succeeded_at, payment.landlord.tz).date(),
            },
            "",
        ]
        for invoice, amount_minor in plan:
            share = format_money(amount_minor, payment.currency, lang)
            if invoice is None:
                lines.append(_("Credit on your account: %(amount)s") % {"amount": share})
            else:
                lines.append(
                    _("Applied to invoice %(number)s: %(amount)s")
                    % {"number": invoice.number, "amount": share}
                )
        if payment.reference:
            lines.append(_("Reference: %(ref)s") % {"ref": payment.reference})
        lines += ["", _("Receipt for payment no. %(id)s") % {"id": payment.pk}]
        lines += [payment.landlord.name]
        subject = _("Payment received: %(amount)s") % {"amount": amount}
    first_invoice = payment.invoice_id or next(
        (invoice.pk for invoice, _amount in plan if invoice is not None), None
    )
    # Exactly once by the outbox key: the sender skips a row no longer queued.
    notification_id = _notification_upsert(
        Notification(
            landlord_id=payment.landlord_id,
            dedupe_key=key,
            kind=RECEIPT_KIND,
            channel=Channel.EMAIL,
            tenant_id=tenant.pk,
            invoice_id=first_invoice,
            to_address=tenant.email,
            subject=subject[:300],
            body="\n".join(lines) + "\n",
        )
    )

    batch = _receipt_batch.get()
    if batch is not None:
        batch.pending.append(notification_id)  # the drain sends it once committed
    else:
        transaction.on_commit(lambda: _receipts_publish([notification_id]))


RECEIPT_BATCH = 50
RECEIPT_BATCH_SECONDS = 2.0


class _ReceiptBatch:
    """While a drain runs, the receipts of its events, sent in one task per
    RECEIPT_BATCH (a task per receipt was a broker round trip per payment): `pending`
    are the current event's (dropped if it rolls back), `ready` those committed and not
    yet published. Rows whose task is never published (the worker dies first) stay
    queued and go out with the notification sweep
    (invoices.notifications.notifications_retry_due)."""

    def __init__(self, now: float) -> None:
        self.pending: list[int] = []
        self.ready: list[int] = []
        self.published_at = now

    def due(self, now: float) -> bool:
        count = len(self.ready) + len(self.pending)
        return count >= RECEIPT_BATCH or bool(
            count and now - self.published_at > RECEIPT_BATCH_SECONDS
        )


_receipt_batch: ContextVar[_ReceiptBatch | None] = ContextVar("receipt_batch", default=None)


def _receipts_publish(notification_ids: list[int]) -> None:
    from invoices.tasks import notifications_send

    if not notification_ids:
        return
    try:
        notifications_send.delay(notification_ids=list(notification_ids))
    except Exception:
        log.warning("Could not queue receipts %s; the sweep will", notification_ids, exc_info=True)


# --- applying Stripe state to a payment ---------------------------------------------


def _charge_of(pi: dict) -> dict | str | None:
    charge = pi.get("latest_charge")
    if charge:
        return charge
    charges = (pi.get("charges") or {}).get("data") or []
    return charges[0] if charges else None


def _fee_in(txn, *, currency: str, source: str) -> int | None:
    """The fee of a Stripe balance transaction in `currency` (the payment's), or None
    when it is in another one. Stripe states fees in the account's settlement currency:
    a GBP charge on an account that settles in EUR has a EUR fee, and posting that
    number as GBP would book a wrong amount. Such a fee stays unknown (shown so on the
    payment) rather than converted at a rate the books cannot reconcile."""
    fee_currency = (txn.get("currency") or currency).upper()
    if fee_currency != currency.upper():
        log.warning(
            "Fee of %s is in %s, the payment in %s: not posted", source, fee_currency, currency
        )
        return None
    return int(txn.get("fee") or 0)


def _fee_from_charge(charge, *, currency: str, stripe_account: str | None) -> int | None:
    """The Stripe fee of a charge, from its balance transaction (one API call when
    the event carries only the charge id), or None while unknown: not settled yet,
    Stripe unreachable, or stated in another currency than the payment's (`_fee_in`).
    The payout reconciliation fills in fees still unknown."""
    if isinstance(charge, dict) and isinstance(charge.get("balance_transaction"), dict):
        return _fee_in(charge["balance_transaction"], currency=currency, source=_id_of(charge))
    charge_id = _id_of(charge)
    if not charge_id:
        return None
    try:
        found = stripe_client.charge_retrieve(charge_id=charge_id, stripe_account=stripe_account)
    except stripe_client.StripeError as exc:
        log.warning("Fee of %s unknown for now: %s", charge_id, exc)
        return None
    txn = found.get("balance_transaction")
    return _fee_in(txn, currency=currency, source=charge_id) if isinstance(txn, dict) else None


def _mark_succeeded(
    *,
    payment: Payment,
    when: datetime,
    charge_id: str = "",
    amount_received: int | None = None,
    fee: int | None = None,
) -> bool:
    """Post a payment Stripe says succeeded; a no-op if it was posted already.
    Returns True when this call posted it."""
    if charge_id and not payment.stripe_charge_id:
        payment.stripe_charge_id = charge_id
    newly = payment.posting_id is None
    if newly:
        if amount_received and amount_received != payment.amount_minor:
            # What arrived is what counts (the intent's amount may have been changed).
            payment.amount_minor = amount_received
        payment.succeeded_at = when
        payment.failure_code = payment.decline_code = payment.failure_message = ""
        _payment_post(payment=payment, when=when, fee=fee)
        payment.status = PaymentStatus.SUCCEEDED
    _payment_fee_record(payment=payment, fee=fee, when=when)
    if not newly:
        payment.status = _money_status(payment)
    _payment_save(payment)
    return newly


# Among non-final states, a later snapshot wins; for the same second, failed wins.
_STATE_RANK = {PaymentStatus.REQUIRES_PAYMENT: 0, PaymentStatus.PROCESSING: 1}


def _newer(payment: Payment, *, when: datetime, status: str) -> bool:
    if payment.stripe_state_at is None:
        return True
    # Stripe stamps events in whole seconds, our API reads to the microsecond: a
    # failure event in the same second as the `processing` we read is not older.
    seen, when = payment.stripe_state_at.replace(microsecond=0), when.replace(microsecond=0)
    if when != seen:
        return when > seen
    return _STATE_RANK.get(status, 2) >= _STATE_RANK.get(payment.status, 2)


def _apply_payment_intent(
    *, payment: Payment, pi: dict, when: datetime, stripe_account: str | None
) -> str:
    """Bring the (locked) payment to the PaymentIntent's state; returns what happened."""
    status = pi.get("status")
    if pi.get("id") and not payment.stripe_payment_intent_id:
        payment.stripe_payment_intent_id = pi["id"]
    if status == "succeeded":
        currency = (pi.get("currency") or payment.currency).upper()
        if currency != payment.currency:
            raise ValueError(
                f"PaymentIntent {pi.get('id')} is in {currency}, payment {payment.pk} in "
                f"{payment.currency}"
            )
        charge = _charge_of(pi)
        fee = (
            _fee_from_charge(charge, currency=payment.currency, stripe_account=stripe_account)
            if payment.fee_minor is None
            else None
        )
        posted = _mark_succeeded(
            payment=payment,
            when=when,
            charge_id=_id_of(charge),
            amount_received=int(pi.get("amount_received") or pi.get("amount") or 0) or None,
            fee=fee,
        )
        return "posted" if posted else "already posted"
    if payment.status in POSTED_STATUSES:
        return f"ignored {status}: the payment already succeeded"
    if status == "processing":
        if not _newer(payment, when=when, status=PaymentStatus.PROCESSING):
            return "ignored older processing snapshot"
        payment.status = PaymentStatus.PROCESSING
        payment.stripe_state_at = when
        _payment_save(payment)
        return "processing"
    error = pi.get("last_payment_error") or {}
    if status == "canceled" or (status == "requires_payment_method" and error):
        if not _newer(payment, when=when, status=PaymentStatus.FAILED):
            return "ignored older failure snapshot"
        payment.status = PaymentStatus.FAILED
        payment.stripe_state_at = when
        payment.failure_code = (error.get("code") or ("canceled" if status == "canceled" else ""))[
            :100
        ]
        payment.decline_code = (error.get("decline_code") or "")[:100]
        payment.failure_message = (
            error.get("message") or pi.get("cancellation_reason") or _("The payment failed.")
        )[:500]
        _payment_save(payment)
        return "failed"
    return f"nothing to do for status {status}"


# --- portal and autopay services ----------------------------------------------------


def methods_for_currency(currency: str) -> list[str]:
    """The Stripe methods a payment in `currency` can use: card always, plus the bank
    debit of that currency's scheme (SEPA for EUR, ACH for USD)."""
    return [
        method for method in STRIPE_METHODS if currency in METHOD_CURRENCIES.get(method, {currency})
    ]


def payment_method_validate(*, method: str, currency: str) -> None:
    """A field error on `method` unless it is a Stripe method that can pay in `currency`
    (a SEPA debit is in euros only, an ACH debit in dollars only)."""
    if method not in STRIPE_METHODS:
        raise ValidationError({"method": _("Choose card or bank debit.")})
    if method not in methods_for_currency(currency):
        raise ValidationError(
            {
                "method": _("%(method)s cannot pay in %(currency)s.")
                % {"method": Method(method).label, "currency": currency}
            }
        )


def _amount_due(*, landlord: Landlord, tenant: Tenant, currency: str, invoice) -> int:
    """The invoice's open balance, or the tenant's balance in `currency`: their open
    invoices minus credit not yet applied (what the portal shows as owed)."""
    if invoice is not None:
        return invoice_balances(landlord=landlord, invoices=[invoice])[invoice.pk]
    owed = sum(
        inv.balance_minor
        for inv in _open_invoices(landlord=landlord, tenant_id=tenant.pk, currency=currency)
    )
    return owed - _credit_available(landlord_id=landlord.pk, tenant_id=tenant.pk, currency=currency)


def _months_rent(*, landlord: Landlord, tenant: Tenant, currency: str) -> int:
    """One month's rent-equivalent: the tenant's largest issued rent invoice in
    `currency`, so tax and every monthly charge count and a prorated first month
    does not stand for a month. 0 before their first invoice."""
    largest = (
        Invoice.objects.for_landlord(landlord)
        .filter(tenant=tenant, currency=currency, kind=InvoiceKind.RENT, state=InvoiceState.ISSUED)
        .aggregate(largest=Max("total_minor"))["largest"]
    )
    return largest or 0


def _amount_ceiling(*, landlord: Landlord, tenant: Tenant, currency: str, invoice, due: int) -> int:
    """The most one online payment may be: what the tenant owes in `currency` (their
    balance, or nothing when they hold credit) plus one month's rent; never less than
    `due`, what the chosen invoice itself asks. Per payment: credit already held does
    not lower it, so a tenant in credit can still pay a month ahead.

    Paying ahead is allowed (the rest becomes credit), but an amount typed wrong
    (1,000,000 for 1,000) would otherwise be charged to the card in full, and giving
    it back is a refund that costs fees and days. A sanity limit, checked before the
    payment exists and outside the tenant lock: two payments started at the same
    moment may each pass it."""
    balance = (
        due
        if invoice is None
        else _amount_due(landlord=landlord, tenant=tenant, currency=currency, invoice=None)
    )
    months_rent = _months_rent(landlord=landlord, tenant=tenant, currency=currency)
    return max(due, max(balance, 0) + months_rent)


def payment_settings_get(*, landlord: Landlord) -> PaymentSettings:
    """The landlord's payment settings; the defaults (unsaved) if never changed."""
    row = PaymentSettings.objects.filter(landlord=landlord).first()
    return row if row is not None else PaymentSettings(landlord=landlord)


@transaction.atomic
def payment_settings_update(*, landlord: Landlord, actor, allow_partial: bool) -> PaymentSettings:
    """Staff decide whether tenants may pay less than the open amount online. It
    applies to payments started from now on; paying more is always allowed (credit)."""
    row, _created = PaymentSettings.objects.select_for_update().get_or_create(landlord=landlord)
    if row.allow_partial != allow_partial:
        row.allow_partial = allow_partial
        row.save(update_fields=["allow_partial", "updated_at"])
        audit(
            landlord=landlord,
            actor=actor,
            action="payment_settings.update",
            obj=row,
            summary=f"Partial payments {'allowed' if allow_partial else 'not allowed'}",
            data={"allow_partial": allow_partial},
        )
    return row


def customer_get_or_create(*, landlord: Landlord, tenant: Tenant) -> StripeCustomer:
    """The tenant's Stripe customer, created at Stripe once (idempotency key per tenant)."""
    if tenant.landlord_id != landlord.pk:
        raise ValidationError("This tenant does not belong to this landlord.")
    existing = StripeCustomer.objects.for_landlord(landlord).filter(tenant=tenant).first()
    if existing is not None:
        return existing
    account = _stripe_account(landlord)
    customer = stripe_client.customer_create(
        email=tenant.email,
        name=tenant.full_name,
        metadata={"landlord_id": str(landlord.pk), "tenant_id": str(tenant.pk)},
        idempotency_key=f"customer:{landlord.pk}:{tenant.pk}",
        stripe_account=account,
    )
    StripeCustomer.objects.bulk_create(
        [
            StripeCustomer(
                landlord=landlord,
                tenant=tenant,
                customer_id=customer["id"],
                stripe_account_id=account or "",
            )
        ],
        ignore_conflicts=True,
    )
    return StripeCustomer.objects.for_landlord(landlord).get(tenant=tenant)


def payment_intent_create(
    *,
    landlord: Landlord,
    tenant: Tenant,
    amount_minor: int,
    currency: str,
    idempotency_key: str,
    invoice: Invoice | None = None,
    method: str = Method.CARD,
    allow_partial: bool = False,
    payment_method_id: str | None = None,
    confirm: bool = False,
) -> tuple[Payment, str]:
    """Start a Stripe payment for an invoice (or the tenant's balance): a Payment row
    (`requires_payment`) and a PaymentIntent whose metadata names landlord, tenant,
    payment and invoice. Returns (payment, client_secret) for Stripe.js.

    Less than what is due is refused (a field error on `amount`) unless
    `allow_partial`: the portal passes the landlord's setting (PaymentSettings, see
    payment_settings_get). More than what is due is accepted and becomes tenant credit,
    up to what the tenant owes plus one month's rent (_amount_ceiling); more than that
    is refused on `amount` too. Nothing is written when an amount is refused.
    `method` must suit the currency (SEPA: EUR, ACH: USD). Calling again with the
    same `idempotency_key` returns the same payment and intent. With
    `payment_method_id` and `confirm` the intent is confirmed server-side; a decline
    raises PaymentDeclined (the payment is marked failed, nothing is posted). A bank
    debit comes back `processing`: it is posted only when Stripe reports success.
    """
    currency = (currency or "").upper()
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise ValidationError({"amount": _("Enter an amount above zero.")})
    if not is_known_currency(currency):
        raise ValidationError({"currency": _("Unknown currency.")})
    if not idempotency_key:
        raise ValidationError("An idempotency key is required.")
    if tenant.landlord_id != landlord.pk:
        raise ValidationError("This tenant does not belong to this landlord.")
    payment_method_validate(method=method, currency=currency)
    if invoice is not None:
        if invoice.landlord_id != landlord.pk or invoice.tenant_id != tenant.pk:
            raise ValidationError({"invoice": _("This invoice is not the tenant's.")})
        if invoice.state != InvoiceState.ISSUED:
            raise ValidationError({"invoice": _("Only an issued invoice can be paid.")})
        if invoice.currency != currency:
            raise ValidationError({"currency": _("Pay the invoice in its own currency.")})

    payment = Payment.objects.for_landlord(landlord).filter(idempotency_key=idempotency_key).first()
    if payment is None:
        due = _amount_due(landlord=landlord, tenant=tenant, currency=currency, invoice=invoice)
        if due <= 0 and invoice is not None:
            raise ValidationError({"invoice": _("This invoice is already paid.")})
        if amount_minor < due and not allow_partial:
            raise ValidationError(
                {
                    "amount": _("Pay the full amount due: %(due)s.")
                    % {"due": format_money(due, currency)}
                }
            )
        ceiling = _amount_ceiling(
            landlord=landlord, tenant=tenant, currency=currency, invoice=invoice, due=due
        )
        if amount_minor > ceiling:
            if ceiling <= 0:
                raise ValidationError({"amount": _("There is nothing to pay in advance now.")})
            raise ValidationError(
                {
                    "amount": _(
                        "You can pay at most %(max)s now: what you owe plus one month's "
                        "rent in advance."
                    )
                    % {"max": format_money(ceiling, currency)}
                }
            )
        account = _stripe_account(landlord)
        try:
            with transaction.atomic():  # a savepoint if the caller is in a transaction
                payment = Payment.objects.create(
                    landlord=landlord,
                    tenant=tenant,
                    invoice=invoice,
                    amount_minor=amount_minor,
                    currency=currency,
                    method=method,
                    source=Source.STRIPE,
                    stripe_account_id=account or "",
                    idempotency_key=idempotency_key,
                )
        except IntegrityError:
            payment = Payment.objects.for_landlord(landlord).get(idempotency_key=idempotency_key)
    if (
        payment.tenant_id != tenant.pk
        or payment.amount_minor != amount_minor
        or payment.invoice_id != (invoice.pk if invoice else None)
        or payment.currency != currency
    ):
        raise ValidationError("This idempotency key was used for a different payment.")
    if payment.stripe_payment_intent_id:
        if confirm:
            raise ValidationError(_("This payment was already started; start a new one."))
        pi = stripe_client.payment_intent_retrieve(
            payment_intent_id=payment.stripe_payment_intent_id,
            stripe_account=payment.stripe_account_id or None,
        )
        return payment, pi.get("client_secret") or ""

    customer = customer_get_or_create(landlord=landlord, tenant=tenant)
    metadata = {
        "landlord_id": str(landlord.pk),
        "tenant_id": str(tenant.pk),
        "payment_id": str(payment.pk),
        "invoice_id": str(invoice.pk) if invoice else "",
    }
    try:
        pi = stripe_client.payment_intent_create(
            amount=payment.amount_minor,
            currency=currency,
            customer=customer.customer_id,
            metadata=metadata,
            payment_method_types=[method],
            idempotency_key=f"payment:{payment.pk}:intent",
            stripe_account=payment.stripe_account_id or None,
            payment_method=payment_method_id,
            confirm=confirm,
        )
    except stripe_client.CardError as exc:
        _record_decline(payment=payment, exc=exc, when=timezone.now())
        raise _declined(exc, payment=payment) from exc
    with transaction.atomic():
        locked = _payments_locked().get(pk=payment.pk)
        if not locked.stripe_payment_intent_id:
            locked.stripe_payment_intent_id = pi["id"]
            locked.save(update_fields=["stripe_payment_intent_id", "updated_at"])
        if confirm:
            _apply_payment_intent(
                payment=locked,
                pi=pi,
                when=timezone.now(),
                stripe_account=locked.stripe_account_id or None,
            )
    return locked, pi.get("client_secret") or ""


def payment_intent_sync(*, payment: Payment) -> Payment:
    """Fetch the payment's PaymentIntent and apply its current state (what the webhook
    would do): for the portal's return page, or when a webhook is late."""
    if not payment.stripe_payment_intent_id:
        return payment
    pi = stripe_client.payment_intent_retrieve(
        payment_intent_id=payment.stripe_payment_intent_id,
        stripe_account=payment.stripe_account_id or None,
    )
    with transaction.atomic():
        locked = _payments_locked().get(pk=payment.pk)
        _apply_payment_intent(
            payment=locked,
            pi=pi,
            when=timezone.now(),
            stripe_account=locked.stripe_account_id or None,
        )
    return locked


def _declined(exc, *, payment: Payment | None) -> PaymentDeclined:
    error = getattr(exc, "error", None)
    return PaymentDeclined(
        getattr(exc, "user_message", None) or str(exc),
        code=getattr(exc, "code", "") or "",
        decline_code=(getattr(error, "decline_code", None) or "") if error else "",
        payment=payment,
    )


def _record_decline(*, payment: Payment, exc, when: datetime) -> None:
    """A synchronous decline from Stripe: mark the payment failed (nothing posted)."""
    error = getattr(exc, "error", None)
    pi = getattr(error, "payment_intent", None) if error else None
    with transaction.atomic():
        locked = _payments_locked().get(pk=payment.pk)
        if pi is not None and getattr(pi, "id", None) and not locked.stripe_payment_intent_id:
            locked.stripe_payment_intent_id = pi.id
        if locked.status in POSTED_STATUSES:
            return
        locked.status = PaymentStatus.FAILED
        locked.stripe_state_at = when
        locked.failure_code = (getattr(exc, "code", "") or "card_declined")[:100]
        locked.decline_code = ((getattr(error, "decline_code", None) or "") if error else "")[:100]
        locked.failure_message = (getattr(exc, "user_message", None) or str(exc))[:500]
        locked.save()
        payment.status = locked.status
        payment.failure_code = locked.failure_code
        payment.decline_code = locked.decline_code
        payment.failure_message = locked.failure_message


def setup_intent_create(
    *, landlord: Landlord, tenant: Tenant, idempotency_key: str, method: str = Method.CARD
) -> str:
    """A SetupIntent to save a card or bank-debit mandate for autopay; returns its
    client secret for Stripe.js (`confirmCardSetup` / `confirmSepaDebitSetup`)."""
    if method not in STRIPE_METHODS:
        raise ValidationError({"method": _("Choose card or bank debit.")})
    customer = customer_get_or_create(landlord=landlord, tenant=tenant)
    intent = stripe_client.setup_intent_create(
        customer_id=customer.customer_id,
        payment_method_types=[method],
        metadata={"landlord_id": str(landlord.pk), "tenant_id": str(tenant.pk)},
        idempotency_key=f"setup:{landlord.pk}:{tenant.pk}:{idempotency_key}",
        stripe_account=customer.stripe_account_id or None,
    )
    return intent.get("client_secret") or ""


def _refuse_foreign_method(
    *, landlord: Landlord, tenant: Tenant, payment_method_id: str, lock: bool = False
) -> None:
    """A saved method that belongs to another tenant is never reassigned (nor sent to
    Stripe again); with `lock`, the row stays locked until the caller's transaction ends."""
    rows = SavedPaymentMethod.objects.filter(stripe_payment_method_id=payment_method_id)
    if lock:
        rows = rows.select_for_update()
    owner = rows.values_list("landlord_id", "tenant_id").first()
    if owner is not None and owner != (landlord.pk, tenant.pk):
        raise ValidationError("This payment method belongs to someone else.")


def payment_method_save(
    *, landlord: Landlord, tenant: Tenant, payment_method_id: str, autopay: bool = False, actor
) -> SavedPaymentMethod:
    """Keep a payment method the tenant set up (attached to their customer at Stripe)
    and optionally make it the one autopay charges."""
    _refuse_foreign_method(landlord=landlord, tenant=tenant, payment_method_id=payment_method_id)
    customer = customer_get_or_create(landlord=landlord, tenant=tenant)
    account = customer.stripe_account_id or None
    pm = stripe_client.payment_method_retrieve(
        payment_method_id=payment_method_id, stripe_account=account
    )
    if _id_of(pm.get("customer")) != customer.customer_id:
        pm = stripe_client.payment_method_attach(
            payment_method_id=payment_method_id,
            customer_id=customer.customer_id,
            idempotency_key=f"pm:{payment_method_id}:attach:{customer.customer_id}",
            stripe_account=account,
        )
    method = pm.get("type") or Method.CARD
    if method not in STRIPE_METHODS:
        raise ValidationError({"method": _("This payment method type is not supported.")})
    details = pm.get(method) or {}
    with transaction.atomic():
        # Ownership first, under a row lock: update_or_create below would otherwise
        # hand another tenant's saved method to this one before any check could run.
        _refuse_foreign_method(
            landlord=landlord, tenant=tenant, payment_method_id=pm["id"], lock=True
        )
        saved, _created = SavedPaymentMethod.objects.update_or_create(
            stripe_payment_method_id=pm["id"],
            defaults={
                "landlord": landlord,
                "tenant": tenant,
                "method": method,
                "brand": (details.get("brand") or details.get("bank_name") or "")[:40],
                "last4": (details.get("last4") or "")[:4],
                "exp_month": details.get("exp_month"),
                "exp_year": details.get("exp_year"),
                "detached_at": None,
            },
        )
        if autopay:
            autopay_set(landlord=landlord, tenant=tenant, saved_method=saved, actor=actor)
        audit(
            landlord=landlord,
            actor=actor,
            action="payment_method.save",
            obj=saved,
            summary=f"Saved {saved} for {tenant}",
        )
    saved.refresh_from_db()
    return saved


@transaction.atomic
def autopay_set(
    *, landlord: Landlord, tenant: Tenant, saved_method: SavedPaymentMethod | None, actor
) -> None:
    """Turn autopay on with `saved_method`, or off with None (one method at most)."""
    if tenant.landlord_id != landlord.pk:
        raise ValidationError("This tenant does not belong to this landlord.")
    _lock_tenant(tenant.pk)
    methods = SavedPaymentMethod.objects.for_landlord(landlord).filter(tenant=tenant)
    methods.filter(autopay=True).update(autopay=False, updated_at=timezone.now())
    if saved_method is not None:
        if saved_method.tenant_id != tenant.pk or saved_method.detached_at is not None:
            raise ValidationError("Choose one of the tenant's saved payment methods.")
        methods.filter(pk=saved_method.pk).update(autopay=True, updated_at=timezone.now())
    audit(
        landlord=landlord,
        actor=actor,
        action="autopay.on" if saved_method else "autopay.off",
        obj=tenant,
        summary=f"Autopay {'on with ' + str(saved_method) if saved_method else 'off'}",
    )


def payment_method_remove(*, landlord: Landlord, saved_method: SavedPaymentMethod, actor) -> None:
    """Detach a saved method at Stripe and forget it (autopay with it stops)."""
    if saved_method.landlord_id != landlord.pk:
        raise ValidationError("Not this landlord's payment method.")
    stripe_client.payment_method_detach(
        payment_method_id=saved_method.stripe_payment_method_id,
        idempotency_key=f"pm:{saved_method.stripe_payment_method_id}:detach",
        stripe_account=_stripe_account(landlord),
    )
    with transaction.atomic():
        SavedPaymentMethod.objects.filter(pk=saved_method.pk).update(
            autopay=False, detached_at=timezone.now(), updated_at=timezone.now()
        )
        audit(
            landlord=landlord,
            actor=actor,
            action="payment_method.remove",
            obj=saved_method,
            summary=f"Removed {saved_method}",
        )


@dataclass(frozen=True)
class AutopayResult:
    """What one off-session charge attempt did, for dunning.

    status: succeeded | processing (bank debit: the outcome comes by webhook) |
    declined | requires_action (3-D Secure needed: the tenant must pay on-session) |
    skipped (nothing due, invoice not issued, no autopay method) | error (Stripe
    unreachable; safe to call again with the same attempt).
    """

    status: str
    payment: Payment | None = None
    failure_code: str = ""
    decline_code: str = ""
    message: str = ""
    hard_decline: bool = False
    reason: str = ""

    @property
    def retryable(self) -> bool:
        return self.status in ("declined", "error") and not self.hard_decline


def _autopay_result(payment: Payment) -> AutopayResult:
    if payment.status in POSTED_STATUSES:
        return AutopayResult("succeeded", payment)
    if payment.status == PaymentStatus.PROCESSING:
        return AutopayResult("processing", payment)
    if payment.status == PaymentStatus.FAILED:
        code = payment.decline_code or payment.failure_code
        status = "requires_action" if code == "authentication_required" else "declined"
        return AutopayResult(
            status,
            payment,
            failure_code=payment.failure_code,
            decline_code=payment.decline_code,
            message=payment.failure_message,
            hard_decline=code in HARD_DECLINE_CODES,
        )
    return AutopayResult("error", payment, reason="not_confirmed")


def autopay_charge(
    *, landlord: Landlord, invoice: Invoice, attempt: int, now: datetime
) -> AutopayResult:
    """Charge an invoice's open balance off-session with the tenant's autopay method,
    after credit held for the tenant has paid what it can.

    Idempotent per (invoice, attempt): the Payment's key and Stripe's idempotency key
    are both `autopay:<invoice>:<attempt>`, so a re-run returns the first outcome and
    never charges twice. A success is posted at once (the webhook then finds it
    posted); a decline returns its code and whether retrying is pointless
    (HARD_DECLINE_CODES). Dunning decides what to do next.
    """
    invoice = Invoice.objects.for_landlord(landlord).select_related("tenant").get(pk=invoice.pk)
    key = f"autopay:{invoice.pk}:{attempt}"
    payment = Payment.objects.for_landlord(landlord).filter(idempotency_key=key).first()
    if payment is not None and payment.status != PaymentStatus.REQUIRES_PAYMENT:
        return _autopay_result(payment)
    if payment is None:
        if invoice.state != InvoiceState.ISSUED:
            return AutopayResult("skipped", reason="invoice_not_issued")
        if invoice_balances(landlord=landlord, invoices=[invoice])[invoice.pk] <= 0:
            return AutopayResult("skipped", reason="nothing_due")
        saved = (
            SavedPaymentMethod.objects.for_landlord(landlord)
            .filter(tenant_id=invoice.tenant_id, autopay=True, detached_at__isnull=True)
            .first()
        )
        if saved is None:
            return AutopayResult("skipped", reason="no_autopay_method")
        try:
            account = _stripe_account(landlord)
        except ValidationError as exc:
            return AutopayResult("error", reason="stripe_not_connected", message=str(exc))
        try:
            with transaction.atomic():
                # Tenant first: the row's deferred foreign-key checks lock the invoice
                # at commit, and dunning holds tenant-then-invoice; without this a
                # concurrent dunning step and this insert deadlock.
                _lock_tenant(invoice.tenant_id)
                # Credit held for the tenant pays first, as the credit sweep would
                # within minutes: charging the card for what their credit covers takes
                # the money twice and leaves it to be paid back.
                _credit_apply(landlord=landlord, tenant_id=invoice.tenant_id, when=now)
                due = invoice_balances(landlord=landlord, invoices=[invoice])[invoice.pk]
                if due <= 0:
                    return AutopayResult("skipped", reason="nothing_due")
                payment = Payment.objects.create(
                    landlord=landlord,
                    tenant_id=invoice.tenant_id,
                    invoice=invoice,
                    amount_minor=due,
                    currency=invoice.currency,
                    method=saved.method,
                    source=Source.STRIPE,
                    stripe_account_id=account or "",
                    idempotency_key=key,
                    stripe_payment_method_id=saved.stripe_payment_method_id,
                )
        except IntegrityError:
            payment = Payment.objects.for_landlord(landlord).get(idempotency_key=key)
            if payment.status != PaymentStatus.REQUIRES_PAYMENT:
                return _autopay_result(payment)
    customer = (
        StripeCustomer.objects.for_landlord(landlord).filter(tenant_id=payment.tenant_id).first()
    )
    if customer is None:
        return AutopayResult("error", payment, reason="no_stripe_customer")
    try:
        pi = stripe_client.payment_intent_create(
            amount=payment.amount_minor,
            currency=payment.currency,
            customer=customer.customer_id,
            metadata={
                "landlord_id": str(landlord.pk),
                "tenant_id": str(payment.tenant_id),
                "payment_id": str(payment.pk),
                "invoice_id": str(invoice.pk),
                "autopay_attempt": str(attempt),
            },
            payment_method_types=[payment.method],
            idempotency_key=key,
            stripe_account=payment.stripe_account_id or None,
            payment_method=payment.stripe_payment_method_id,
            confirm=True,
            off_session=True,
        )
    except stripe_client.CardError as exc:
        _record_decline(payment=payment, exc=exc, when=now)
        payment.refresh_from_db()
        return _autopay_result(payment)
    except stripe_client.StripeError as exc:
        log.warning("Autopay %s could not reach Stripe: %s", key, exc)
        return AutopayResult("error", payment, message=str(exc), reason="stripe_error")
    with transaction.atomic():
        locked = _payments_locked().get(pk=payment.pk)
        if pi.get("status") == "requires_action":
            locked.stripe_payment_intent_id = locked.stripe_payment_intent_id or pi.get("id")
            if locked.status not in POSTED_STATUSES:
                locked.status = PaymentStatus.FAILED
                locked.failure_code = "authentication_required"
                locked.failure_message = _("The bank asks the tenant to confirm this payment.")
                locked.stripe_state_at = now
            locked.save()
        else:
            _apply_payment_intent(
                payment=locked, pi=pi, when=now, stripe_account=locked.stripe_account_id or None
            )
    return _autopay_result(locked)


# --- manual payments ----------------------------------------------------------------


def _manual_money_checked(
    *,
    landlord: Landlord,
    tenant: Tenant,
    amount_minor: int,
    currency: str,
    method: str,
    day: date,
    day_field: str,
) -> str:
    """The checks money staff handled by hand passes (received from or paid back to a
    tenant): an amount above zero in minor units, cash/cheque/transfer, a known
    currency, the landlord's tenant, not in the future. Returns the currency code."""
    currency = (currency or "").upper()
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise ValidationError({"amount_minor": _("Enter an amount above zero.")})
    if method not in MANUAL_METHODS:
        raise ValidationError({"method": _("Choose cash, cheque or bank transfer.")})
    if not is_known_currency(currency):
        raise ValidationError({"currency": _("Unknown currency.")})
    if tenant.landlord_id != landlord.pk:
        raise ValidationError("This tenant does not belong to this landlord.")
    if day > timezone.now().astimezone(landlord.tz).date():
        raise ValidationError({day_field: _("The date cannot be in the future.")})
    return currency


@transaction.atomic
def manual_payment_record(
    *,
    landlord: Landlord,
    tenant: Tenant,
    amount_minor: int,
    currency: str,
    method: str,
    reference: str,
    received_on: date,
    actor,
    invoice: Invoice | None = None,
    idempotency_key: str | None = None,
) -> Payment:
    """Record cash, a cheque or a bank transfer received by staff: posted at once
    (debit bank) through the same allocation as Stripe payments, receipt queued.
    With an `idempotency_key` (e.g. the form's token) a double submit records once."""
    currency = _manual_money_checked(
        landlord=landlord,
        tenant=tenant,
        amount_minor=amount_minor,
        currency=currency,
        method=method,
        day=received_on,
        day_field="received_on",
    )
    # Money is received in a currency the tenant is billed in, during the tenancy (a
    # deposit or prepayment may come up to a year before move-in). Anything else is a
    # typo that would sit as credit nothing can use, or post into years long reported.
    leases = list(
        Lease.objects.for_landlord(landlord)
        .filter(tenants=tenant)
        .values_list("currency", "start_date")
    )
    currencies = sorted({lease_currency for lease_currency, _start in leases})
    if currencies and currency not in currencies:
        raise ValidationError(
            {"currency": _("This tenant is billed in %(list)s.") % {"list": ", ".join(currencies)}}
        )
    earliest = min((start for _c, start in leases), default=received_on) - timedelta(days=365)
    if received_on < earliest or not in_calendar(received_on):
        raise ValidationError(
            {
                "received_on": _("Enter a date from %(day)s (a year before the first lease).")
                % {"day": max(earliest, date(FIRST_YEAR, 1, 1)).isoformat()}
            }
        )
    if invoice is not None and (
        invoice.landlord_id != landlord.pk
        or invoice.tenant_id != tenant.pk
        or invoice.currency != currency
    ):
        raise ValidationError(
            {"invoice": _("Choose one of the tenant's invoices in this currency.")}
        )
    key = idempotency_key or f"manual:{uuid.uuid4().hex}"
    # What this call records: a payment the key already holds must be the same money.
    money = {
        "tenant": tenant,
        "invoice": invoice,
        "amount_minor": amount_minor,
        "currency": currency,
        "method": method,
        "received_on": received_on,
    }
    existing = Payment.objects.for_landlord(landlord).filter(idempotency_key=key).first()
    if existing is not None:
        return _manual_payment_same(existing, **money)
    try:
        with transaction.atomic():
            payment = Payment.objects.create(
                landlord=landlord,
                source=Source.MANUAL,
                status=PaymentStatus.REQUIRES_PAYMENT,
                reference=(reference or "").strip()[:200],
                idempotency_key=key,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
                **money,
            )
    except IntegrityError:
        return _manual_payment_same(
            Payment.objects.for_landlord(landlord).get(idempotency_key=key), **money
        )
    payment = _payments_locked().get(pk=payment.pk)
    when = landlord.day_start(received_on)
    payment.succeeded_at = when
    _payment_post(payment=payment, when=when)
    payment.status = PaymentStatus.SUCCEEDED
    payment.save()
    audit(
        landlord=landlord,
        actor=actor,
        action="payment.record",
        obj=payment,
        summary=f"Recorded {payment.get_method_display()} payment of "
        f"{format_money(amount_minor, currency)} from {tenant}",
        data={"reference": payment.reference, "invoice_id": invoice.pk if invoice else None},
    )
    return payment


def _manual_payment_same(
    payment: Payment,
    *,
    tenant: Tenant,
    amount_minor: int,
    currency: str,
    method: str,
    received_on: date,
    invoice: Invoice | None,
) -> Payment:
    """The payment a key already recorded, if this call records the same money. The
    form's token comes back with other money when staff go Back and type the next
    cheque: returning the first payment then would drop the second unrecorded, while
    the page says it was recorded."""
    if (
        payment.tenant_id != tenant.pk
        or payment.amount_minor != amount_minor
        or payment.currency != currency
        or payment.method != method
        or payment.received_on != received_on
        or payment.invoice_id != (invoice.pk if invoice else None)
    ):
        raise ValidationError(
            _("This form was already used to record a payment; open it again for another.")
        )
    return payment


@transaction.atomic
def payment_reverse(
    *, payment: Payment, reason: str, actor, now: datetime | None = None
) -> Payment:
    """Reverse a recorded manual payment (a bounced cheque, a transfer booked to the
    wrong tenant): the whole amount is taken back from the invoices it paid (they
    reopen) and its credit; the reason is kept. Stripe payments are refunded through
    Stripe instead."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the payment is reversed.")})
    locked = _payments_locked().get(pk=payment.pk)
    if locked.source != Source.MANUAL:
        raise ValidationError(_("A Stripe payment is refunded in Stripe, not reversed here."))
    if locked.posting_id is None:
        raise ValidationError(_("This payment was never posted."))
    if locked.reversal_id is not None:
        raise ValidationError(_("This payment is already reversed."))
    now = now or timezone.now()
    _lock_tenant(locked.tenant_id)
    locked.reversal = _unwind_post(
        payment=locked,
        amount=locked.amount_minor,
        key=f"payment:{locked.pk}:reverse",
        description=f"Payment {locked.pk} reversed: {reason}",
        when=now,
    )
    _credit_apply(landlord=locked.landlord, tenant_id=locked.tenant_id, when=now)
    locked.status = PaymentStatus.REVERSED
    locked.reversal_reason = reason[:300]
    locked.reversed_at = now
    locked.save()
    audit(
        landlord=locked.landlord,
        actor=actor,
        action="payment.reverse",
        obj=locked,
        summary=f"Reversed payment {locked.pk}: {reason}",
    )
    return locked


@transaction.atomic
def tenant_credit_apply(
    *, landlord: Landlord, tenant: Tenant, now: datetime | None = None
) -> list[LedgerTransaction]:
    """Apply the tenant's credit (overpayments) to their open issued invoices, oldest
    due first: debit tenant_credit, credit the receivable naming each invoice.

    Payments, refunds and disputes apply credit themselves after they post; credit
    that waits for invoices issued later is applied by `tenant_credits_apply_due`
    (beat). Idempotent: keyed by the credit account's last entry, under the tenant lock."""
    if tenant.landlord_id != landlord.pk:
        raise ValidationError("This tenant does not belong to this landlord.")
    _lock_tenant(tenant.pk)
    return _credit_apply(landlord=landlord, tenant_id=tenant.pk, when=now or timezone.now())


def _credit_apply(*, landlord: Landlord, tenant_id: int, when: datetime) -> list[LedgerTransaction]:
    """`tenant_credit_apply` for a caller that already holds the tenant lock."""
    posted = []
    for currency, available, last in _credits(landlord_id=landlord.pk, tenant_id=tenant_id):
        if available <= 0:
            continue
        plan = [
            (invoice, amount)
            for invoice, amount in _allocation_plan(
                invoices=_open_invoices(landlord=landlord, tenant_id=tenant_id, currency=currency),
                amount=available,
                target_id=None,
            )
            if invoice is not None
        ]
        if not plan:
            continue
        receivable = AccountKey(AccountCode.RECEIVABLE, currency, tenant_id)
        credit = AccountKey(AccountCode.TENANT_CREDIT, currency, tenant_id)
        accounts = accounts_get_or_create(landlord=landlord, keys=[receivable, credit])
        entries = [EntrySpec(accounts[credit], sum(amount for _inv, amount in plan), currency)]
        entries += [
            EntrySpec(
                accounts[receivable],
                -amount,
                currency,
                lease_id=invoice.lease_id,
                document_kind=INVOICE_DOCUMENT,
                document_id=invoice.pk,
            )
            for invoice, amount in plan
        ]
        posted.append(
            transaction_post(
                landlord=landlord,
                idempotency_key=f"tenant:{tenant_id}:credit:{currency}:{last}",
                effective_at=when,
                description=f"Credit applied to {', '.join(i.number for i, _a in plan)}"[:300],
                entries=entries,
            )
        )
    return posted


@transaction.atomic
def tenant_credit_pay_back(
    *,
    landlord: Landlord,
    tenant: Tenant,
    amount_minor: int,
    currency: str,
    method: str,
    reference: str,
    paid_on: date,
    actor,
    idempotency_key: str,
) -> LedgerTransaction:
    """Record that staff paid a tenant's credit back to them (by bank transfer, cheque
    or cash), e.g. after they moved out: tenant credit → bank, on the day it was paid.

    Credit pays the tenant's open invoices first (applied here, under the tenant lock
    the credit sweep also takes), and what is paid back never exceeds what the tenant
    is owed on balance (`payments.selectors.tenant_credits`). The ledger's unique
    idempotency key (`credit-payback:<tenant>:<currency>:<key>`) makes a double submit
    record once: the second call returns the first posting. Decision 0018.
    """
    currency = _manual_money_checked(
        landlord=landlord,
        tenant=tenant,
        amount_minor=amount_minor,
        currency=currency,
        method=method,
        day=paid_on,
        day_field="paid_on",
    )
    today = timezone.now().astimezone(landlord.tz).date()
    if not in_calendar(paid_on) or paid_on < today - timedelta(days=365):
        raise ValidationError({"paid_on": _("Enter a date within the last year.")})
    # The tenant and currency are part of the key: the same form token sent again for
    # another currency (the browser's Back) is another pay-back, not this one.
    key = f"{selectors.CREDIT_PAY_BACK_KEY}{tenant.pk}:{currency}:{idempotency_key}"
    _lock_tenant(tenant.pk)
    done = LedgerTransaction.objects.for_landlord(landlord).filter(idempotency_key=key).first()
    if done is not None:
        recorded = done.entries.filter(account__code=AccountCode.TENANT_CREDIT).aggregate(
            total=Sum("amount_minor")
        )["total"]
        if recorded != amount_minor:
            raise ValidationError(
                _("This form was already used to record a pay-back; open it again for another.")
            )
        if done.reversals.exists():
            # The stale form sent again after its pay-back was undone: answering
            # "recorded" with the undone posting would record nothing.
            raise ValidationError(
                _("The pay-back this form recorded was undone; open the form again to record it.")
            )
        return done
    now = timezone.now()
    _credit_apply(landlord=landlord, tenant_id=tenant.pk, when=now)
    # What the page offers, read now under the tenant lock, after the credit paid
    # what it could.
    available = selectors.tenant_credits(landlord=landlord, tenant=tenant).get(currency, 0)
    if amount_minor > available:
        raise ValidationError(
            {
                "amount_minor": _(
                    "At most %(credit)s can be paid back to %(tenant)s: the rest of their credit pays what they owe."
                )
                % {"tenant": tenant.full_name, "credit": format_money(available, currency)}
                if available
                else _(
                    "%(tenant)s has no credit in %(currency)s left to pay back once what they owe is paid from it."
                )
                % {"tenant": tenant.full_name, "currency": currency}
            }
        )
    credit = AccountKey(AccountCode.TENANT_CREDIT, currency, tenant.pk)
    bank = AccountKey(AccountCode.BANK, currency)
    accounts = accounts_get_or_create(landlord=landlord, keys=[credit, bank])
    reference = (reference or "").strip()[:200]
    with override("en"):  # the ledger is written in English, whoever reads the page
        method_label = str(Method(method).label).lower()
    posting = transaction_post(
        landlord=landlord,
        idempotency_key=key,
        effective_at=landlord.day_start(paid_on),
        description=(
            f"Credit paid back to {tenant.full_name} by {method_label}"
            + (f" ({reference})" if reference else "")
        )[:300],
        entries=[
            EntrySpec(accounts[credit], amount_minor, currency),
            EntrySpec(accounts[bank], -amount_minor, currency),
        ],
    )
    audit(
        landlord=landlord,
        actor=actor,
        action="credit.pay_back",
        obj=tenant,
        summary=f"Paid back {format_money(amount_minor, currency)} of credit to {tenant}",
        data={"reference": reference, "method": method, "paid_on": paid_on.isoformat()},
    )
    return posting


@transaction.atomic
def tenant_credit_pay_back_reverse(
    *,
    landlord: Landlord,
    posting: LedgerTransaction,
    reason: str,
    actor,
    now: datetime | None = None,
) -> LedgerTransaction:
    """Undo a pay-back recorded in error (the wrong amount, the wrong tenant, a transfer
    that was never sent): its reversing posting, bank → tenant credit, effective now, so
    months already reported keep what they said. The credit is the tenant's again and,
    as any credit, first pays what they owe. Once per pay-back: the reversal's key is
    the pay-back's, so a repeated submit returns the same reversal. Decision 0018.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": _("Say why the pay-back is undone.")})
    if posting.landlord_id != landlord.pk or not selectors.is_credit_pay_back(
        posting.idempotency_key
    ):
        raise ValidationError(_("This posting is not a pay-back of this landlord's."))
    # Whose credit it paid back is on the posting's credit entry; the key's shape has
    # changed before (`credit-payback:<form key>`) and is no record of the tenant.
    tenant_id = posting.entries.values_list("account__tenant_id", flat=True).get(
        account__code=AccountCode.TENANT_CREDIT
    )
    _lock_tenant(tenant_id)
    now = now or timezone.now()
    key = f"credit-payback-reversal:{posting.pk}"
    done = LedgerTransaction.objects.filter(reverses=posting).first()
    if done is not None:
        if done.idempotency_key == key:
            return done
        raise ValidationError(_("This pay-back is already reversed."))
    reversal = transaction_reverse(
        landlord=landlord,
        transaction=posting,
        reason=f"pay-back undone: {reason}"[:200],
        effective_at=now,
        idempotency_key=key,
    )
    _credit_apply(landlord=landlord, tenant_id=tenant_id, when=now)
    audit(
        landlord=landlord,
        actor=actor,
        action="credit.pay_back_reverse",
        obj=Tenant.objects.for_landlord(landlord).get(pk=tenant_id),
        summary=f"Undid pay-back #{posting.seq}: {reason}"[:300],
        data={"posting": posting.pk, "reversal": reversal.pk},
    )
    return reversal


def tenant_credits_apply_due(*, now: datetime) -> int:
    """Let credit pay invoices issued since it arrived (the beat sweep).

    The billing run sits below payments and cannot call it, so this sweep finds, in
    one query, every tenant whose credit accounts hold money and applies it, one
    transaction per tenant. Returns the number of postings made."""
    holders = (
        LedgerEntry.objects.filter(account__code=AccountCode.TENANT_CREDIT)
        .values("landlord_id", "account__tenant_id")
        .annotate(total=Sum("amount_minor"))
        .filter(total__lt=0)  # a liability: below zero is money held for the tenant
        .order_by("landlord_id", "account__tenant_id")
    )
    landlords = {}
    posted = 0
    for row in holders:
        landlord = landlords.get(row["landlord_id"])
        if landlord is None:
            landlord = landlords[row["landlord_id"]] = Landlord.objects.get(pk=row["landlord_id"])
        tenant = Tenant.objects.for_landlord(landlord).get(pk=row["account__tenant_id"])
        posted += len(tenant_credit_apply(landlord=landlord, tenant=tenant, now=now))
    return posted


def tenant_credit_balance(*, landlord: Landlord, tenant: Tenant, currency: str) -> int:
    """Credit held for the tenant in `currency` (positive = in the tenant's favour)."""
    account = (
        Account.objects.for_landlord(landlord)
        .filter(code=AccountCode.TENANT_CREDIT, currency=currency, tenant=tenant)
        .first()
    )
    return -account_balance(account=account) if account else 0


# --- Stripe Connect -----------------------------------------------------------------


def stripe_connection_set(
    *, landlord: Landlord, account_id: str, actor, charges_enabled: bool = False
) -> StripeConnection:
    """Link the landlord to a connected account id (after onboarding, or by an
    operator), then retry the account's events that arrived before we knew it."""
    account_id = (account_id or "").strip()
    if not account_id.startswith("acct_"):
        raise ValidationError({"account_id": _("A Stripe account id starts with acct_.")})
    with transaction.atomic():
        conn, _created = StripeConnection.objects.update_or_create(
            landlord=landlord,
            defaults={"account_id": account_id, "charges_enabled": charges_enabled},
        )
        audit(
            landlord=landlord,
            actor=actor,
            action="stripe.connect",
            obj=conn,
            summary=f"Connected Stripe account {account_id}",
        )
        ids = list(
            StripeEvent.objects.filter(
                account=account_id, status=EventStatus.UNMATCHED
            ).values_list("event_id", flat=True)
        )
        if ids:
            transaction.on_commit(lambda: _enqueue(ids))
    return conn


def stripe_connect_onboarding_link(
    *, landlord: Landlord, refresh_url: str, return_url: str, actor
) -> str:
    """The Stripe-hosted onboarding URL for the landlord's connected account, creating
    the account on first use. localstripe has no Connect: StripeUnavailable."""
    conn = StripeConnection.objects.filter(landlord=landlord).first()
    try:
        if conn is None:
            account = stripe_client.account_create(
                email=landlord.email,
                country=landlord.country,
                idempotency_key=f"landlord:{landlord.pk}:account",
            )
            conn = stripe_connection_set(landlord=landlord, account_id=account["id"], actor=actor)
        link = stripe_client.account_link_create(
            account_id=conn.account_id,
            refresh_url=refresh_url,
            return_url=return_url,
            idempotency_key=f"landlord:{landlord.pk}:link:{uuid.uuid4().hex}",
        )
    except stripe_client.StripeError as exc:
        status = getattr(exc, "http_status", None)
        if settings.STRIPE_LOCAL or status == 404:
            raise StripeUnavailable(
                _("Stripe Connect onboarding is not available on this Stripe server.")
            ) from exc
        raise StripeUnavailable(_("Stripe could not start onboarding: %(e)s") % {"e": exc}) from exc
    return link["url"]


# --- Stripe events: processing ------------------------------------------------------


class _Unmatched(Exception):
    """The event names an account or object we do not know: kept for follow-up."""

    def __init__(self, message: str, landlord: Landlord | None = None):
        super().__init__(message)
        self.landlord = landlord


@dataclass
class _Outcome:
    status: str
    landlord: Landlord | None = None
    note: str = ""


def _landlord_from_account(event: StripeEvent) -> Landlord | None:
    if not event.account:
        return None
    conn = (
        StripeConnection.objects.select_related("landlord").filter(account_id=event.account).first()
    )
    if conn is None:
        raise _Unmatched(f"Unknown connected account {event.account}")
    return conn.landlord


def _landlord_hint(event: StripeEvent) -> Landlord | None:
    """Best effort, never raising: the connected account's landlord, else the landlord
    named in the object's metadata if a payment of that landlord carries that id too."""
    try:
        if event.account:
            conn = StripeConnection.objects.filter(account_id=event.account).first()
            return conn.landlord if conn else None
        obj = ((event.payload or {}).get("data") or {}).get("object") or {}
        metadata = obj.get("metadata") or {}
        landlord_id = _metadata_int(metadata, "landlord_id")
        payment_id = _metadata_int(metadata, "payment_id")
        if landlord_id and payment_id:
            found = Payment.objects.filter(pk=payment_id, landlord_id=landlord_id).first()
            return found.landlord if found else None
    except Exception:  # a hint for the event log; the failure itself is already recorded
        log.exception("Could not resolve the landlord of Stripe event %s", event.event_id)
    return None


def _payment_for_intent(*, pi: dict, landlord: Landlord | None) -> Payment:
    """The payment of a PaymentIntent, locked: by PI id, else by the payment id in its
    metadata (the PI was created but saving its id was lost), else created from the
    metadata (a PI made outside the portal that still names landlord and tenant)."""
    pi_id = pi.get("id") or ""
    metadata = pi.get("metadata") or {}
    payment = _payment_locked("intent", pi_id) if pi_id else None
    meta_landlord = _metadata_int(metadata, "landlord_id")
    if payment is None:
        payment_id = _metadata_int(metadata, "payment_id")
        if payment_id is not None:
            payment = _payment_locked("unlinked", payment_id)
            if payment is not None and (
                payment.landlord_id != meta_landlord
                or payment.source != Source.STRIPE
                or str(payment.tenant_id) != str(metadata.get("tenant_id"))
            ):
                payment = None
    if payment is None:
        payment = _payment_from_metadata(pi=pi, landlord=landlord)
    if landlord is not None and payment.landlord_id != landlord.pk:
        raise _Unmatched(f"PaymentIntent {pi_id} belongs to another landlord", landlord)
    if meta_landlord is not None and meta_landlord != payment.landlord_id:
        raise _Unmatched(f"PaymentIntent {pi_id} metadata names another landlord", landlord)
    if pi.get("status") == "succeeded":
        # Before the posting: the lock order. Other states only touch the payment row.
        _lock_tenant(payment.tenant_id)
    return payment


def _payment_from_metadata(*, pi: dict, landlord: Landlord | None) -> Payment:
    pi_id = pi.get("id") or ""
    metadata = pi.get("metadata") or {}
    landlord_id = _metadata_int(metadata, "landlord_id")
    tenant_id = _metadata_int(metadata, "tenant_id")
    if landlord_id is None or tenant_id is None:
        raise _Unmatched(f"No payment for PaymentIntent {pi_id}", landlord)
    if landlord is not None and landlord.pk != landlord_id:
        raise _Unmatched(f"PaymentIntent {pi_id} metadata names another landlord", landlord)
    tenant = (
        Tenant.objects.select_related("landlord")
        .filter(pk=tenant_id, landlord_id=landlord_id)
        .first()
    )
    if tenant is None:
        raise _Unmatched(f"PaymentIntent {pi_id} names an unknown tenant", landlord)
    invoice_id = _metadata_int(metadata, "invoice_id")
    invoice = (
        Invoice.objects.filter(pk=invoice_id, landlord_id=landlord_id, tenant_id=tenant_id).first()
        if invoice_id
        else None
    )
    types = pi.get("payment_method_types") or [Method.CARD]
    method = types[0] if types and types[0] in STRIPE_METHODS else Method.CARD
    amount = int(pi.get("amount") or 0)
    if amount <= 0:
        raise _Unmatched(f"PaymentIntent {pi_id} has no amount", landlord)
    Payment.objects.bulk_create(
        [
            Payment(
                landlord_id=landlord_id,
                tenant=tenant,
                invoice=invoice,
                amount_minor=amount,
                currency=(pi.get("currency") or "").upper(),
                method=method,
                source=Source.STRIPE,
                stripe_payment_intent_id=pi_id,
                idempotency_key=f"stripe:{pi_id}",
            )
        ],
        ignore_conflicts=True,
    )
    return _payment_locked("intent", pi_id)


def _payment_for_charge(*, charge_id: str, pi_id: str, landlord: Landlord | None) -> Payment:
    payment = None
    if pi_id:
        payment = _payment_locked("intent", pi_id)
    if payment is None and charge_id:
        payment = _payment_locked("charge", charge_id)
    if payment is None:
        raise _Unmatched(f"No payment for charge {charge_id or '?'} / {pi_id or '?'}", landlord)
    if landlord is not None and payment.landlord_id != landlord.pk:
        raise _Unmatched(f"Charge {charge_id} belongs to another landlord", landlord)
    _lock_tenant(payment.tenant_id)  # before any posting: the lock order
    return payment


def _on_payment_intent(event: StripeEvent, obj: dict, landlord: Landlord | None) -> _Outcome:
    payment = _payment_for_intent(pi=obj, landlord=landlord)
    note = _apply_payment_intent(
        payment=payment,
        pi=obj,
        when=event.created,
        stripe_account=event.account or payment.stripe_account_id or None,
    )
    return _Outcome(EventStatus.PROCESSED, payment.landlord, note)


def _ensure_succeeded(*, payment: Payment, charge_id: str, when: datetime) -> None:
    """A refund or dispute proves the charge succeeded, even if we have not seen
    payment_intent.succeeded yet (events arrive in any order)."""
    if payment.posting_id is None:
        _mark_succeeded(payment=payment, when=when, charge_id=charge_id)


def _on_charge_refunded(event: StripeEvent, obj: dict, landlord: Landlord | None) -> _Outcome:
    charge_id = obj.get("id") or ""
    payment = _payment_for_charge(
        charge_id=charge_id, pi_id=_id_of(obj.get("payment_intent")), landlord=landlord
    )
    account = event.account or payment.stripe_account_id or None
    _ensure_succeeded(payment=payment, charge_id=charge_id, when=event.created)
    listed = obj.get("refunds") if isinstance(obj.get("refunds"), dict) else None
    refunds = (listed or {}).get("data") or []
    known = sum(
        int(r.get("amount") or 0) for r in refunds if r.get("status") not in REFUND_FINAL_STATUSES
    )
    if listed is None or listed.get("has_more") or known < int(obj.get("amount_refunded") or 0):
        # Newer API versions leave the list out of the charge: ask Stripe for it.
        refunds = stripe_client.refund_list(charge_id=charge_id, stripe_account=account)
    for refund in refunds:
        _refund_apply(payment=payment, refund=refund, when=event.created)
    _status_refresh(payment, when=event.created)
    return _Outcome(EventStatus.PROCESSED, payment.landlord, f"{len(refunds)} refund(s)")


def _on_refund(event: StripeEvent, obj: dict, landlord: Landlord | None) -> _Outcome:
    payment = _payment_for_charge(
        charge_id=_id_of(obj.get("charge")),
        pi_id=_id_of(obj.get("payment_intent")),
        landlord=landlord,
    )
    _ensure_succeeded(payment=payment, charge_id=_id_of(obj.get("charge")), when=event.created)
    _refund_apply(payment=payment, refund=obj, when=event.created)
    _status_refresh(payment, when=event.created)
    return _Outcome(EventStatus.PROCESSED, payment.landlord, f"refund {obj.get('id')}")


def _refund_apply(*, payment: Payment, refund: dict, when: datetime) -> None:
    """Post a refund once, and reverse it if Stripe reports it failed/canceled."""
    refund_id = refund.get("id") or ""
    status = refund.get("status") or RefundStatus.SUCCEEDED
    amount = int(refund.get("amount") or 0)
    if not refund_id or amount <= 0:
        return
    Refund.objects.bulk_create(
        [
            Refund(
                landlord_id=payment.landlord_id,
                payment=payment,
                stripe_refund_id=refund_id,
                amount_minor=amount,
                currency=(refund.get("currency") or payment.currency).upper(),
                status=status,
                reason=(refund.get("reason") or "")[:100],
            )
        ],
        ignore_conflicts=True,
    )
    row = Refund.objects.select_for_update().get(stripe_refund_id=refund_id)
    if row.payment_id != payment.pk:
        raise ValueError(f"Refund {refund_id} belongs to payment {row.payment_id}")
    if row.status in REFUND_FINAL_STATUSES and status != row.status:
        return  # final states are sticky: an older snapshot cannot revive it
    row.status = status
    if status not in REFUND_FINAL_STATUSES and row.posting_id is None:
        row.posting = _unwind_post(
            payment=payment,
            amount=row.amount_minor,
            key=f"refund:{refund_id}",
            description=f"Refund {refund_id} of payment {payment.pk}",
            when=when,
        )
    if status in REFUND_FINAL_STATUSES and row.posting_id and row.reversal_id is None:
        row.reversal = _reallocate_post(
            payment=payment,
            taken_back=row.posting,
            key=f"refund:{refund_id}:{status}",
            description=f"Refund {refund_id} {status}: payment {payment.pk} stands again",
            when=when,
        )
    row.save()


def _status_refresh(payment: Payment, *, when: datetime) -> None:
    """After refunds or disputes changed what the payment pays: apply any credit to
    reopened invoices, and derive the payment's status."""
    _credit_apply(landlord=payment.landlord, tenant_id=payment.tenant_id, when=when)
    if payment.posting_id is not None:
        payment.status = _money_status(payment)
        _payment_save(payment)


def _on_dispute(event: StripeEvent, obj: dict, landlord: Landlord | None) -> _Outcome:
    dispute_id = obj.get("id") or ""
    charge_id = _id_of(obj.get("charge"))
    payment = _payment_for_charge(
        charge_id=charge_id, pi_id=_id_of(obj.get("payment_intent")), landlord=landlord
    )
    status = obj.get("status") or DisputeStatus.NEEDS_RESPONSE
    amount = int(obj.get("amount") or 0)
    if status in DISPUTE_FUNDS_WITHDRAWN or status == DisputeStatus.WON:
        _ensure_succeeded(payment=payment, charge_id=charge_id, when=event.created)
    Dispute.objects.bulk_create(
        [
            Dispute(
                landlord_id=payment.landlord_id,
                payment=payment,
                stripe_dispute_id=dispute_id,
                amount_minor=amount,
                currency=(obj.get("currency") or payment.currency).upper(),
                reason=(obj.get("reason") or "")[:100],
                status=status,
            )
        ],
        ignore_conflicts=True,
    )
    row = Dispute.objects.select_for_update().get(stripe_dispute_id=dispute_id)
    if row.payment_id != payment.pk:
        raise ValueError(f"Dispute {dispute_id} belongs to payment {row.payment_id}")
    if row.status in DISPUTE_FINAL_STATUSES and status != row.status:
        return _Outcome(EventStatus.PROCESSED, payment.landlord, "dispute already closed")
    row.status = status
    if status in DISPUTE_FUNDS_WITHDRAWN and row.hold_id is None:
        row.hold = _unwind_post(
            payment=payment,
            amount=row.amount_minor,
            key=f"dispute:{dispute_id}:hold",
            description=f"Dispute {dispute_id} ({row.reason or 'chargeback'}) on payment {payment.pk}",
            when=event.created,
        )
    if status == DisputeStatus.WON and row.hold_id and row.release_id is None:
        row.release = _reallocate_post(
            payment=payment,
            taken_back=row.hold,
            key=f"dispute:{dispute_id}:won",
            description=f"Dispute {dispute_id} won: payment {payment.pk} stands again",
            when=event.created,
        )
    if status in DISPUTE_FINAL_STATUSES and row.closed_at is None:
        row.closed_at = event.created
    row.save()
    for txn in obj.get("balance_transactions") or []:
        if isinstance(txn, dict) and txn.get("id") and txn.get("fee"):
            _fee_post(
                landlord=payment.landlord,
                payment=payment,
                currency=(txn.get("currency") or payment.currency).upper(),
                fee=int(txn["fee"]),
                key=f"dispute:{dispute_id}:fee:{txn['id']}",
                when=event.created,
            )
    _status_refresh(payment, when=event.created)
    return _Outcome(EventStatus.PROCESSED, payment.landlord, f"dispute {status}")


def _on_payout(event: StripeEvent, obj: dict, landlord: Landlord | None) -> _Outcome:
    if landlord is None:
        landlord_id = _metadata_int(obj.get("metadata") or {}, "landlord_id")
        landlord = Landlord.objects.filter(pk=landlord_id).first() if landlord_id else None
    if landlord is None:
        raise _Unmatched(f"Payout {obj.get('id')} has no connected account we know")
    payout_id = obj.get("id") or ""
    status = obj.get("status") or PayoutStatus.PENDING
    currency = (obj.get("currency") or landlord.default_currency).upper()
    Payout.objects.bulk_create(
        [
            Payout(
                landlord=landlord,
                stripe_payout_id=payout_id,
                amount_minor=int(obj.get("amount") or 0),
                currency=currency,
                status=status,
            )
        ],
        ignore_conflicts=True,
    )
    row = Payout.objects.select_for_update().get(stripe_payout_id=payout_id)
    if row.landlord_id != landlord.pk:
        raise _Unmatched(f"Payout {payout_id} belongs to another landlord", landlord)
    if row.status in PAYOUT_FINAL_STATUSES and status != row.status:
        return _Outcome(EventStatus.PROCESSED, landlord, "payout already final")
    row.status = status
    if obj.get("arrival_date"):
        row.arrival_date = _from_unix(obj["arrival_date"]).date()
    row.failure_code = (obj.get("failure_code") or "")[:100]
    row.failure_message = (obj.get("failure_message") or "")[:500]
    if status == PayoutStatus.PAID and not row.items_reconciled:
        # Before the payout's own posting: it locks payments, which must come before
        # the ledger head in the lock order.
        _payout_items_reconcile(payout=row, stripe_account=event.account or None)
    if status == PayoutStatus.PAID and row.posting_id is None:
        bank = AccountKey(AccountCode.BANK, currency)
        cash = AccountKey(AccountCode.CASH_IN_TRANSIT, currency)
        accounts = accounts_get_or_create(landlord=landlord, keys=[bank, cash])
        row.posting = transaction_post(
            landlord=landlord,
            idempotency_key=f"payout:{payout_id}:paid",
            effective_at=event.created,
            description=f"Stripe payout {payout_id}",
            entries=[
                EntrySpec(accounts[bank], row.amount_minor, currency),
                EntrySpec(accounts[cash], -row.amount_minor, currency),
            ],
        )
    if status in PAYOUT_FINAL_STATUSES and row.posting_id and row.reversal_id is None:
        row.reversal = transaction_reverse(
            landlord=landlord,
            transaction=row.posting,
            reason=f"payout {payout_id} {status}: {row.failure_code}",
            effective_at=event.created,
            idempotency_key=f"payout:{payout_id}:{status}",
        )
    row.save()
    return _Outcome(EventStatus.PROCESSED, landlord, f"payout {status}")


def _payout_items_reconcile(*, payout: Payout, stripe_account: str | None) -> bool:
    """Record which balance transactions (charges, refunds, disputes) the payout
    settled, and fill in fees still unknown. Best effort: localstripe cannot list a
    payout's transactions, and the payout stays `items_reconciled=False`."""
    try:
        txns = [
            t
            for t in stripe_client.payout_balance_transactions(
                payout_id=payout.stripe_payout_id, stripe_account=stripe_account
            )
            if t.get("type") != "payout"
        ]
    except stripe_client.StripeError as exc:
        log.info("Items of payout %s not listed: %s", payout.stripe_payout_id, exc)
        return False
    sources = {_id_of(t.get("source")) for t in txns} - {""}
    # All at once and in id order: payments are locked before the ledger head.
    by_charge = {
        p.stripe_charge_id: p
        for p in _payments_locked()
        .filter(landlord_id=payout.landlord_id, stripe_charge_id__in=sources)
        .order_by("pk")
    }
    items = []
    for txn in txns:
        source = _id_of(txn.get("source"))
        payment = by_charge.get(source)
        fee = int(txn.get("fee") or 0)
        items.append(
            PayoutItem(
                landlord_id=payout.landlord_id,
                payout=payout,
                balance_transaction_id=txn.get("id") or "",
                type=(txn.get("type") or "")[:40],
                source_id=source,
                payment=payment,
                amount_minor=int(txn.get("amount") or 0),
                fee_minor=fee,
                net_minor=int(txn.get("net") or 0),
            )
        )
        settles_payment = payment is not None and txn.get("type") in ("charge", "payment")
        if settles_payment and payment.posting_id and payment.fee_minor is None:
            _payment_fee_record(
                payment=payment,
                fee=_fee_in(txn, currency=payment.currency, source=source),
                when=timezone.now(),
            )
            payment.save()
    PayoutItem.objects.bulk_create(items, ignore_conflicts=True)
    payout.items_reconciled = True
    return True


def _on_account_updated(event: StripeEvent, obj: dict, landlord: Landlord | None) -> _Outcome:
    account_id = obj.get("id") or event.account
    conn = (
        StripeConnection.objects.select_for_update()
        .select_related("landlord")
        .filter(account_id=account_id)
        .first()
    )
    if conn is None:
        raise _Unmatched(f"Unknown connected account {account_id}")
    if conn.account_state_at is not None and event.created < conn.account_state_at:
        return _Outcome(EventStatus.PROCESSED, conn.landlord, "older account snapshot ignored")
    conn.charges_enabled = bool(obj.get("charges_enabled"))
    conn.payouts_enabled = bool(obj.get("payouts_enabled"))
    conn.details_submitted = bool(obj.get("details_submitted"))
    conn.account_state_at = event.created
    conn.save()
    return _Outcome(EventStatus.PROCESSED, conn.landlord, "account flags updated")


HANDLERS = {
    "payment_intent.succeeded": _on_payment_intent,
    "payment_intent.processing": _on_payment_intent,
    "payment_intent.payment_failed": _on_payment_intent,
    "payment_intent.canceled": _on_payment_intent,
    "charge.refunded": _on_charge_refunded,
    "charge.refund.updated": _on_refund,
    "refund.created": _on_refund,
    "refund.updated": _on_refund,
    "refund.failed": _on_refund,
    "charge.dispute.created": _on_dispute,
    "charge.dispute.updated": _on_dispute,
    "charge.dispute.closed": _on_dispute,
    "charge.dispute.funds_withdrawn": _on_dispute,
    "charge.dispute.funds_reinstated": _on_dispute,
    "payout.paid": _on_payout,
    "payout.failed": _on_payout,
    "payout.canceled": _on_payout,
    "payout.updated": _on_payout,
    "account.updated": _on_account_updated,
}


def _dispatch(event: StripeEvent) -> _Outcome:
    handler = HANDLERS.get(event.type)
    if handler is None:
        return _Outcome(EventStatus.IGNORED, note=f"type {event.type} not handled")
    obj = ((event.payload or {}).get("data") or {}).get("object")
    if not isinstance(obj, dict):
        raise ValueError("The event has no data.object")
    landlord = _landlord_from_account(event)
    return handler(event, obj, landlord)


def stripe_event_process(*, event_id: str) -> StripeEvent | None:
    """Process one stored Stripe event in one transaction, and record the outcome on
    its row: processed, ignored (type not handled), unmatched (unknown account or
    object: kept for follow-up) or failed (the handler's work is rolled back with the
    transaction; the status and error are recorded after it). Processed and ignored
    events are left alone, so any number of calls has the effect of one."""
    event = None
    try:
        with transaction.atomic():
            event = _events_for_processing().filter(event_id=event_id).first()
            if event is None or event.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
                return event
            claimed = event.status
            _event_apply(event)
    except Exception as exc:
        if event is None:
            raise
        _event_refused(event, claimed_status=claimed, exc=exc)
    return event


def _events_for_processing():
    # The raw body is for people and for replays; processing reads the parsed payload.
    return StripeEvent.objects.select_for_update().defer("raw_body")


def _event_apply(event: StripeEvent) -> None:
    """Run the handler of a locked event and record its outcome on the row, in the
    caller's transaction. If the handler raises, the caller rolls that transaction
    back and records why with `_event_refused`: no savepoint per event (two round
    trips on every event, for the rare one that fails)."""
    event.attempts += 1
    outcome = _dispatch(event)
    event.status = outcome.status
    if outcome.landlord is not None:
        event.landlord = outcome.landlord
    event.error = ""
    _event_finish(event)


_EVENT_RELOCK_SQL = "SELECT id FROM payments_stripeevent WHERE id = %s AND status = %s FOR UPDATE"


def _event_refused(event: StripeEvent, *, claimed_status: str, exc: Exception) -> None:
    """Record, in a transaction of its own, why the handler of `event` raised (its work
    went with the rolled-back transaction): unmatched (unknown account or object, kept
    for follow-up) or failed, with the error. Nothing is written if the row has left
    `claimed_status` since (another drain processed it meanwhile)."""
    if isinstance(exc, _Unmatched):
        status, error = EventStatus.UNMATCHED, str(exc)[:2000]
    else:
        log.error("Stripe event %s (%s) failed", event.event_id, event.type, exc_info=exc)
        tail = "".join(traceback.format_exception(exc, limit=-3))
        status, error = EventStatus.FAILED, f"{type(exc).__name__}: {exc}\n\n{tail}"[:4000]
    with transaction.atomic():
        if not prepared_rows(_EVENT_RELOCK_SQL, [event.pk, claimed_status]):
            return
        if isinstance(exc, _Unmatched):
            event.landlord = exc.landlord
        else:
            # Keep whose event it is, so the landlord's event log shows the failure
            # and its Reprocess button.
            event.landlord = event.landlord or _landlord_hint(event)
        event.status, event.error = status, error
        _event_finish(event)


def _event_finish(event: StripeEvent) -> None:
    event.processed_at = event.updated_at = timezone.now()
    prepared_rows(
        _EVENT_FINISH_SQL,
        [
            event.status,
            event.landlord_id,
            event.error,
            event.attempts,
            event.processed_at,
            event.updated_at,
            event.pk,
        ],
    )


_EVENT_FINISH_SQL = (
    "UPDATE payments_stripeevent SET status = %s, landlord_id = %s, error = %s,"
    " attempts = %s, processed_at = %s, updated_at = %s WHERE id = %s"
)
# What processing reads of an event (the raw body is for people and for replays), in
# the model's field order for `Model.from_db`.
_EVENT_CLAIM_FIELDS = tuple(
    f.attname
    for f in StripeEvent._meta.concrete_fields
    if f.attname not in ("raw_body", "created_at", "updated_at", "livemode", "api_version")
)
# The oldest received event nobody else holds, locked until the caller's commit; and
# the caller's transaction set to commit without waiting for the disk (see the drain).
_EVENT_CLAIM_SQL = (
    f"SELECT {', '.join(_EVENT_CLAIM_FIELDS)},"  # noqa: S608
    " set_config('synchronous_commit', 'off', true) FROM payments_stripeevent"
    " WHERE status = %s ORDER BY status, created_at LIMIT 1 FOR UPDATE SKIP LOCKED"
)
_COMMIT_DURABLY_SQL = "SELECT set_config('synchronous_commit', 'on', true)"
# A transaction that writes, committed synchronously: its commit waits until the WAL is
# on disk up to its commit record, so every earlier commit is durable too. It must
# write WAL (PostgreSQL commits a transaction that wrote none without waiting, even
# with an id), so it touches the outbox rows about to be published.
_WAL_FLUSH_SQL = (
    f"UPDATE {Notification._meta.db_table} SET updated_at = now()"  # noqa: S608
    " WHERE id = ANY(%s::bigint[])"
)


def _event_claim() -> StripeEvent | None:
    """Claim the next received event for the caller's transaction, which then commits
    asynchronously unless `_COMMIT_DURABLY_SQL` runs before its end."""
    rows = prepared_rows(_EVENT_CLAIM_SQL, [EventStatus.RECEIVED])
    if not rows:
        return None
    values = list(rows[0])[:-1]
    at = _EVENT_CLAIM_FIELDS.index("payload")
    if isinstance(values[at], str | bytes):  # Django's connection loads jsonb as text
        values[at] = json.loads(values[at])
    return StripeEvent.from_db(connection.alias, _EVENT_CLAIM_FIELDS, values)


# A drain stops after this many events or seconds and queues its successor, so one
# task never holds a worker process for long (billing chunks share the workers).
DRAIN_MAX_EVENTS = 2_000
DRAIN_MAX_SECONDS = 30.0
# "A drain is queued and has not started yet": while set, new events need no task of
# their own. Expires in case the queued drain is lost; the sweep is the backstop.
DRAIN_FLAG_SECONDS = 30


def _drain_flag_key() -> str:
    # Per database: test runs and benchmarks share the Redis server.
    return f"stripe-events:drain-queued:{connection.settings_dict['NAME']}"


def stripe_events_drain(
    *, max_events: int = DRAIN_MAX_EVENTS, max_seconds: float = DRAIN_MAX_SECONDS
) -> int:
    """Process received events, oldest first, each in its own transaction, until none
    is left (or the budget is spent: then the next drain is queued). Returns how many
    were processed.

    Events are claimed with `FOR UPDATE SKIP LOCKED`, so drains running in parallel
    share the work without waiting for each other's events; a drain that finds a
    backlog queues a partner (at most one drain waits in the queue at any time, so
    under load every worker process drains and no more). A failed event is rolled
    back and recorded `failed` in a transaction of its own (the sweep retries it with
    back-off), so a drain never loops on it.
    The queued-flag is cleared *before* the first claim:
    an event stored after that either finds the flag clear and queues a drain, or
    finds it set by a drain that has not started, which will see it.

    An event's transaction commits asynchronously (`synchronous_commit = off`: it does
    not wait for the WAL to reach the disk, and releases the ledger head and payment
    locks ~0.3 ms sooner). Nothing is lost by that: the event row was stored durably
    by the webhook, and its processing (postings, payment, outbox rows and the
    `processed` status) commits or vanishes as one; a crash can take the last few
    hundred milliseconds of commits, whose events are then `received` again and
    processed again by the next drain or the sweep. Nothing may leave the database
    before the commits it describes are durable, so a transaction after which a task
    is published (a batch of receipts, or a handler's on-commit hook) commits
    synchronously, which flushes every earlier commit too (decision 0012)."""
    from time import monotonic

    from django.core.cache import cache

    cache.delete(_drain_flag_key())
    deadline = monotonic() + max_seconds
    done = 0
    batch = _ReceiptBatch(monotonic())
    # Called inside a transaction (tests, a shell), each event's block is a savepoint
    # and nothing commits before the caller does.
    nested = connection.in_atomic_block
    token = _receipt_batch.set(batch)
    try:
        while done < max_events:
            event = None
            publish = False
            try:
                with transaction.atomic():
                    event = _event_claim()
                    if event is None:
                        return done
                    _event_apply(event)
                    publish = batch.due(monotonic())
                    if publish or connection.run_on_commit:
                        prepared_rows(_COMMIT_DURABLY_SQL, [])
                    if batch.pending:
                        ids, batch.pending = batch.pending, []
                        if nested:  # only the outer commit makes them real: send then
                            transaction.on_commit(lambda ids=ids: _receipts_publish(ids))
                        else:
                            transaction.on_commit(lambda ids=ids: batch.ready.extend(ids))
            except Exception as exc:
                batch.pending.clear()
                publish = False
                if event is None:
                    raise
                _event_refused(event, claimed_status=EventStatus.RECEIVED, exc=exc)
            done += 1
            if done == 2:
                # A backlog: ask for a partner, so every worker process can join in.
                _drain_request()
            now = monotonic()
            if publish:
                _receipts_publish(batch.ready)
                batch.ready.clear()
                batch.published_at = now
            if now > deadline:
                break
        _drain_request()
        return done
    finally:
        _receipt_batch.reset(token)
        if batch.ready:
            _receipts_publish_durably(batch.ready)


def _receipts_publish_durably(notification_ids: list[int]) -> None:
    """Publish receipts whose transactions may have committed asynchronously: first
    wait until they are on disk. If the database cannot be reached for that, publish
    nothing: the rows stay queued for the notification sweep."""
    try:
        with transaction.atomic():
            prepared_rows(_WAL_FLUSH_SQL, [list(notification_ids)])
    except Exception:
        log.warning("Receipts %s left for the sweep", notification_ids, exc_info=True)
        return
    _receipts_publish(notification_ids)


def _drain_request(key: str | None = None) -> None:
    """After new events were stored: make sure a drain will run. One Redis round trip
    (SET NX); a task only when no drain is queued. If Redis is unreachable the events
    stay `received` and the sweep queues them. `key`: the drain flag of the database
    the events are in (default: this thread's)."""
    from django.core.cache import cache

    from payments.tasks import stripe_events_drain as task

    key = key or _drain_flag_key()
    try:
        if not cache.add(key, 1, timeout=DRAIN_FLAG_SECONDS):
            return
        task.delay()
    except Exception:
        log.warning("Could not queue the Stripe event drain; the sweep will", exc_info=True)
        try:
            cache.delete(key)  # so the next event tries again
        except Exception:
            log.debug("Could not clear the drain flag", exc_info=True)


def _enqueue(event_ids: Iterable[str]) -> None:
    from payments.tasks import stripe_event_process as task

    for event_id in event_ids:
        task.delay(event_id=event_id)


def _processing_request(event_id: str) -> None:
    from payments.tasks import stripe_event_process as task

    if task.app.conf.task_always_eager:
        # No broker (tests, a shell): nothing to batch; process this event inline.
        _enqueue([event_id])
    else:
        _drain_requests.ask()


class _DrainRequests:
    """The drain requests of one process, coalesced off the request path.

    A webhook delivery must make sure, after its commit, that a drain will run
    (`_drain_request`: a Redis SET NX, ~0.2 ms of the web worker's CPU per delivery,
    a quarter of its whole cost). Here the delivery only sets a flag; one thread per
    process makes the request for every delivery committed since its last one, then
    waits `COALESCE_SECONDS`, so under load one Redis round trip serves many
    deliveries. Every `ask()` is followed by a `_drain_request()` that starts after
    it (the flag is cleared before the request is made), so no event is left without
    a drain. A process that dies with a request pending leaves its last events
    `received` for the sweep, as an unreachable Redis does; a web worker or command
    that exits normally makes it first (atexit; Celery's pool children exit without
    running atexit). A forked child starts afresh (no thread, lock or keys of the
    parent)."""

    COALESCE_SECONDS = 0.02

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._keys: set[str] = set()

    def ask(self) -> None:
        key = _drain_flag_key()  # the caller's database (tests use another one)
        with self._lock:
            self._keys.add(key)
            if self._pid != os.getpid():  # first use in this process (or after a fork)
                self._pid = os.getpid()
                threading.Thread(
                    target=self._run, name="stripe-drain-requests", daemon=True
                ).start()
        self._wanted.set()

    def flush(self) -> None:
        """Make the pending request now, in the calling thread."""
        # Clear the flag first: an ask() after this point sets it again (and its key is
        # either taken below or left for the next round), so no key is left unserved.
        self._wanted.clear()
        with self._lock:
            keys, self._keys = self._keys, set()
        for key in keys:
            try:
                _drain_request(key)
            except Exception:  # the other keys still get their request
                log.exception("Could not request a Stripe event drain")

    def _run(self) -> None:
        from time import sleep

        while True:
            self._wanted.wait()
            self.flush()  # logs, never raises, a failed request: the sweep is the backstop
            sleep(self.COALESCE_SECONDS)


_drain_requests = _DrainRequests()
atexit.register(_drain_requests.flush)
os.register_at_fork(after_in_child=_drain_requests._reset)


# The webhook's single statement: store the event unless its id is known. Prepared,
# with the body sent once (a text parameter, not escaped into the statement).
INSERT_EVENT_SQL = (
    "INSERT INTO payments_stripeevent (landlord_id, created_at, updated_at, event_id, type,"
    " account, livemode, api_version, created, payload, raw_body, status, error, attempts,"
    " processed_at) VALUES (NULL, now(), now(), %(id)s, %(type)s, %(account)s, %(livemode)s,"
    # ::text first: a parameter's type is inferred from its first use, and as jsonb
    # the raw body would be stored normalised (key order, spacing), not as signed.
    " %(api_version)s, to_timestamp(%(created)s), %(body)s::text::jsonb, %(body)s::text,"
    " 'received', '', 0, NULL) ON CONFLICT (event_id) DO NOTHING RETURNING id"
)


def stripe_event_store(*, event: dict, raw_body: str, enqueue: bool = True) -> bool:
    """Insert a verified event (raw body kept) unless its id is already stored; on a
    new row, queue its processing after commit. Returns True if it was new. One
    statement, no other query: the webhook must answer fast."""
    inserted = bool(
        prepared_rows(
            INSERT_EVENT_SQL,
            {
                "id": event["id"],
                "type": str(event.get("type") or "")[:100],
                "account": str(event.get("account") or "")[:255],
                "livemode": bool(event.get("livemode")),
                "api_version": str(event.get("api_version") or "")[:40],
                "created": int(event.get("created") or 0),
                "body": raw_body,
            },
        )
    )
    if inserted and enqueue:
        event_id = event["id"]
        transaction.on_commit(lambda: _processing_request(event_id))
    return inserted


def stripe_events_reprocess(
    *, statuses: Sequence[str], limit: int | None = None
) -> list[StripeEvent]:
    """Process again the events in `statuses` (failed, unmatched, received), oldest
    first, inline. For the `stripe_events` command and the admin action."""
    ids = list(
        StripeEvent.objects.filter(status__in=statuses)
        .order_by("created", "pk")
        .values_list("event_id", flat=True)[:limit]
    )
    return [e for e in (stripe_event_process(event_id=event_id) for event_id in ids) if e]


def stripe_events_sweep(*, now: datetime) -> int:
    """Queue events whose processing never ran (their on-commit task was lost) and
    failed events whose back-off has passed (2, 4, 8, ... minutes; at most
    SWEEP_MAX_ATTEMPTS tries, then they wait for `stripe_events --reprocess-failed`)."""
    stale = list(
        StripeEvent.objects.filter(
            status=EventStatus.RECEIVED, created_at__lt=now - SWEEP_RECEIVED_AFTER
        )
        .order_by("pk")
        .values_list("event_id", flat=True)[:SWEEP_BATCH]
    )
    failed = [
        event_id
        for event_id, attempts, processed_at in StripeEvent.objects.filter(
            status=EventStatus.FAILED, attempts__lt=SWEEP_MAX_ATTEMPTS
        )
        .order_by("pk")
        .values_list("event_id", "attempts", "processed_at")[:SWEEP_BATCH]
        if processed_at is None or processed_at <= now - timedelta(minutes=2**attempts)
    ]
    _enqueue(stale + failed)
    return len(stale) + len(failed)


def stripe_events_recover(*, now: datetime) -> int:
    """List the last 3 days of events from Stripe (the platform account and every
    connected account), store those of a handled type that never arrived, and
    process them inline."""
    since = int((now - RECOVER_WINDOW).timestamp())
    accounts: list[str | None] = [None]
    accounts += list(StripeConnection.objects.order_by("pk").values_list("account_id", flat=True))
    new_ids: list[str] = []
    for account in accounts:
        try:
            events = list(stripe_client.events_list(created_gte=since, stripe_account=account))
        except stripe_client.StripeError as exc:
            log.warning("Listing events of %s failed: %s", account or "the platform", exc)
            continue
        known = set(
            StripeEvent.objects.filter(event_id__in=[e["id"] for e in events]).values_list(
                "event_id", flat=True
            )
        )
        for event in events:
            # Only the types we handle: the endpoint is not subscribed to the rest.
            if event["id"] in known or event.get("type") not in HANDLERS:
                continue
            if account and not event.get("account"):
                event["account"] = account
            raw = json.dumps(event, separators=(",", ":"))
            with transaction.atomic():
                if stripe_event_store(event=event, raw_body=raw, enqueue=False):
                    new_ids.append(event["id"])
    for event_id in new_ids:
        stripe_event_process(event_id=event_id)
    return len(new_ids)
