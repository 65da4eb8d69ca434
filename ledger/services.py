"""Write actions on the ledger: accounts, postings, reversals.

Every posting is validated here (readable errors) and again by PostgreSQL at commit
(migration 0002), which has the last word. A landlord's postings serialise on its
`LedgerHead` row, which makes `seq` gapless and the hash chain linear; idempotency
keys are unique per landlord in the database, so a retried posting is a no-op.

Callers above the ledger (invoices, payments, dunning) append their own audit
records; the ledger itself is the audit trail of money.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple
from weakref import WeakKeyDictionary

import psycopg
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ledger.hashing import EntryContent, chain_hash, content_hash
from ledger.models import (
    GENESIS_HASH,
    TENANT_ACCOUNT_CODES,
    Account,
    LedgerCheck,
    LedgerCheckKind,
    LedgerTransaction,
    account_kind_for,
)
from ledger.selectors import VerifyResult, ledger_verify
from money.currency import is_known_currency
from tenants.models import Landlord, Lease, Tenant

log = logging.getLogger(__name__)

# Accounts per INSERT (`bulk_create` sends one array per column on PostgreSQL, far
# below the 65,535 bind-parameter limit; the batch bounds memory). Postings use COPY.
BULK_BATCH_SIZE = 5_000

MAX_KEY_LENGTH = LedgerTransaction._meta.get_field("idempotency_key").max_length
MAX_DESCRIPTION_LENGTH = LedgerTransaction._meta.get_field("description").max_length
MAX_DOCUMENT_KIND_LENGTH = LedgerTransaction._meta.get_field("document_kind").max_length


@dataclass(frozen=True, slots=True)
class EntrySpec:
    """One line of a posting. `amount_minor`: debit positive, credit negative, never zero.

    `tenant_id` defaults to the account's tenant (per-tenant accounts); `document_*`
    names the document the entry belongs to (e.g. the invoice a payment settles).
    """

    account: Account
    amount_minor: int
    currency: str
    tenant_id: int | None = None
    lease_id: int | None = None
    document_kind: str = ""
    document_id: int | None = None


@dataclass(frozen=True, slots=True)
class TransactionSpec:
    """One posting for `transactions_post_bulk`."""

    idempotency_key: str
    effective_at: datetime
    description: str
    entries: Sequence[EntrySpec]
    document_kind: str = ""
    document_id: int | None = None


@dataclass(frozen=True, slots=True)
class AccountKey:
    """Identifies an account within one landlord: code, currency and (per-tenant codes) tenant."""

    code: str
    currency: str
    tenant_id: int | None = None


@dataclass(slots=True)
class _Prepared:
    """A validated posting with its normalised entries and content hash."""

    spec: TransactionSpec
    entries: list[EntrySpec]
    content_hash: str
    reverses: LedgerTransaction | None = None
    extra_ids: dict[str, set[int]] = field(default_factory=dict)


# --- accounts -----------------------------------------------------------------------


def _validate_account_key(*, code: str, currency: str, tenant_id: int | None) -> str:
    kind = account_kind_for(code)
    if kind is None:
        raise ValidationError(
            "%(code)s is not an account code of the chart of accounts.",
            code="account_code",
            params={"code": code},
        )
    if not is_known_currency(currency):
        raise ValidationError(
            "%(currency)s is not an ISO 4217 currency code.",
            code="currency",
            params={"currency": currency},
        )
    if code in TENANT_ACCOUNT_CODES and tenant_id is None:
        raise ValidationError(
            "A %(code)s account belongs to one tenant: pass the tenant.",
            code="account_tenant",
            params={"code": code},
        )
    if code not in TENANT_ACCOUNT_CODES and tenant_id is not None:
        raise ValidationError(
            "A %(code)s account is landlord-wide: it cannot belong to a tenant.",
            code="account_tenant",
            params={"code": code},
        )
    return kind


def _check_tenants_belong(*, landlord: Landlord, tenant_ids: set[int]) -> None:
    _check_ids_belong(landlord=landlord, model=Tenant, ids=tenant_ids, label="tenant")


def _check_ids_belong(*, landlord: Landlord, model, ids: set[int], label: str) -> None:
    if not ids:
        return
    table = model._meta.db_table
    with connection.cursor() as cursor:
        # One array parameter (`= ANY`), not an IN list of thousands of placeholders.
        cursor.execute(
            f"SELECT id FROM {table} WHERE landlord_id = %s AND id = ANY(%s)",  # noqa: S608
            [landlord.pk, sorted(ids)],
        )
        found = {row[0] for row in cursor.fetchall()}
    missing = ids - found
    if missing:
        raise ValidationError(
            "No %(label)s %(ids)s for this landlord.",
            code=f"{label}_scope",
            params={"label": label, "ids": ", ".join(map(str, sorted(missing)[:10]))},
        )


def account_get_or_create(
    *, landlord: Landlord, code: str, currency: str, tenant: Tenant | None = None
) -> Account:
    """The landlord's account `code` in `currency` (for `tenant` if it is a per-tenant code).

    Race-safe: the insert is `ON CONFLICT DO NOTHING` against the unique
    (landlord, code, currency, tenant) constraint, then the row is read back.
    """
    tenant_id = tenant.pk if tenant is not None else None
    return accounts_get_or_create(
        landlord=landlord, keys=[AccountKey(code=code, currency=currency, tenant_id=tenant_id)]
    )[AccountKey(code=code, currency=currency, tenant_id=tenant_id)]


_ACCOUNT_ATTNAMES = [f.attname for f in Account._meta.concrete_fields]
# The accounts of one landlord named by (code, currency, tenant), per-tenant and
# landlord-wide keys apart so each probe uses the whole unique index.
_ACCOUNTS_BY_KEY_SQL = (
    f"SELECT {', '.join('a.' + name for name in _ACCOUNT_ATTNAMES)}"  # noqa: S608
    " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS k(code, currency, tenant_id)"
    " JOIN ledger_account a ON a.landlord_id = %s AND a.code = k.code"
    " AND a.currency = k.currency AND a.tenant_id = k.tenant_id"
    " UNION ALL"
    f" SELECT {', '.join('a.' + name for name in _ACCOUNT_ATTNAMES)}"
    " FROM unnest(%s::text[], %s::text[]) AS k(code, currency)"
    " JOIN ledger_account a ON a.landlord_id = %s AND a.code = k.code"
    " AND a.currency = k.currency AND a.tenant_id IS NULL"
)


def _accounts_fetch(*, landlord: Landlord, keys: set[AccountKey]) -> dict[AccountKey, Account]:
    """The existing accounts among `keys`, in one query (plain SQL: this runs for every
    payment event, where the ORM's query building cost ten times the query)."""
    per_tenant = [k for k in keys if k.tenant_id is not None]
    wide = [k for k in keys if k.tenant_id is None]
    rows = prepared_rows(
        _ACCOUNTS_BY_KEY_SQL,
        [
            [k.code for k in per_tenant],
            [k.currency for k in per_tenant],
            [k.tenant_id for k in per_tenant],
            landlord.pk,
            [k.code for k in wide],
            [k.currency for k in wide],
            landlord.pk,
        ],
    )
    found: dict[AccountKey, Account] = {}
    for row in rows:
        account = Account.from_db(connection.alias, _ACCOUNT_ATTNAMES, row)
        found[AccountKey(account.code, account.currency, account.tenant_id)] = account
    return found


def accounts_get_or_create(
    *, landlord: Landlord, keys: Iterable[AccountKey]
) -> dict[AccountKey, Account]:
    """Many accounts at once (e.g. the receivable of every tenant in a billing chunk).

    One SELECT when all accounts exist; the missing ones are inserted with one
    `INSERT ... ON CONFLICT DO NOTHING` and read back.
    """
    wanted = set(keys)
    kinds = {
        key: _validate_account_key(code=key.code, currency=key.currency, tenant_id=key.tenant_id)
        for key in wanted
    }
    found = _accounts_fetch(landlord=landlord, keys=wanted)
    missing = wanted - found.keys()
    if not missing:
        return found
    _check_tenants_belong(
        landlord=landlord, tenant_ids={k.tenant_id for k in missing if k.tenant_id is not None}
    )
    Account.objects.bulk_create(
        [
            Account(
                landlord=landlord,
                code=key.code,
                kind=kinds[key],
                currency=key.currency,
                tenant_id=key.tenant_id,
            )
            for key in missing
        ],
        ignore_conflicts=True,
        batch_size=BULK_BATCH_SIZE,
    )
    found.update(_accounts_fetch(landlord=landlord, keys=missing))
    return found


# --- validation and hashing ---------------------------------------------------------


def _invalid(message: str, code: str, **params) -> ValidationError:
    return ValidationError(message, code=code, params=params)


def _check_document_ref(kind: str, doc_id: int | None, *, where: str) -> None:
    if bool(kind) != (doc_id is not None):
        raise _invalid(
            "%(where)s: document_kind and document_id go together.", "document_ref", where=where
        )
    if len(kind) > MAX_DOCUMENT_KIND_LENGTH:
        raise _invalid("%(where)s: document_kind is too long.", "document_ref", where=where)


def _prepare(
    *, landlord: Landlord, spec: TransactionSpec, reverses: LedgerTransaction | None = None
) -> _Prepared:
    """Validate one posting in Python and compute its content hash (no queries)."""
    key = spec.idempotency_key
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise _invalid(
            "The idempotency key must be 1 to %(n)s characters.",
            "idempotency_key",
            n=MAX_KEY_LENGTH,
        )
    where = f"Posting {key!r}"
    if not isinstance(spec.effective_at, datetime) or timezone.is_naive(spec.effective_at):
        raise _invalid(
            "%(where)s: effective_at must be a timezone-aware datetime.",
            "effective_at",
            where=where,
        )
    if len(spec.description) > MAX_DESCRIPTION_LENGTH:
        raise _invalid("%(where)s: the description is too long.", "description", where=where)
    _check_document_ref(spec.document_kind, spec.document_id, where=where)
    if len(spec.entries) < 2:
        raise _invalid("%(where)s needs at least two entries.", "too_few_entries", where=where)

    entries: list[EntrySpec] = []
    contents: list[EntryContent] = []
    totals: dict[str, int] = defaultdict(int)
    tenant_ids: set[int] = set()
    lease_ids: set[int] = set()
    landlord_id = landlord.id
    for entry in spec.entries:
        account = entry.account
        amount = entry.amount_minor
        currency = entry.currency
        if type(amount) is not int or amount == 0:
            raise _invalid(
                "%(where)s: every amount must be a non-zero integer of minor units (got %(amount)r).",
                "amount",
                where=where,
                amount=amount,
            )
        if account.id is None or account.landlord_id != landlord_id:
            raise _invalid(
                "%(where)s: account %(account)s does not belong to this landlord.",
                "account_scope",
                where=where,
                account=account,
            )
        if currency != account.currency:
            raise _invalid(
                "%(where)s: a %(currency)s amount cannot be booked on %(account)s.",
                "currency_mismatch",
                where=where,
                currency=currency,
                account=account,
            )
        if entry.document_kind or entry.document_id is not None:
            _check_document_ref(entry.document_kind, entry.document_id, where=where)
        tenant_id = entry.tenant_id
        if tenant_id is None:
            tenant_id = account.tenant_id
            if tenant_id is not None:
                entry = replace(entry, tenant_id=tenant_id)
        elif tenant_id != account.tenant_id:
            tenant_ids.add(tenant_id)
        if entry.lease_id is not None:
            lease_ids.add(entry.lease_id)
        entries.append(entry)
        contents.append(
            EntryContent(
                account.code,
                account.currency,
                account.tenant_id,
                amount,
                currency,
                tenant_id,
                entry.lease_id,
                entry.document_kind,
                entry.document_id,
            )
        )
        totals[currency] += amount
    unbalanced = {currency: total for currency, total in totals.items() if total}
    if unbalanced:
        raise _invalid(
            "%(where)s does not balance: %(totals)s (debits and credits must sum to 0 per currency).",
            "unbalanced",
            where=where,
            totals=", ".join(f"{c} {t:+d}" for c, t in sorted(unbalanced.items())),
        )
    digest = content_hash(
        idempotency_key=key,
        effective_at=spec.effective_at,
        description=spec.description,
        document_kind=spec.document_kind,
        document_id=spec.document_id,
        reverses_key=reverses.idempotency_key if reverses is not None else None,
        entries=contents,
    )
    return _Prepared(
        spec=spec,
        entries=entries,
        content_hash=digest,
        reverses=reverses,
        extra_ids={"tenant": tenant_ids, "lease": lease_ids},
    )


def _check_references(*, landlord: Landlord, prepared: Iterable[_Prepared]) -> None:
    """Tenants and leases named by entries must be the landlord's (one query per kind)."""
    tenant_ids: set[int] = set()
    lease_ids: set[int] = set()
    for p in prepared:
        tenant_ids |= p.extra_ids["tenant"]
        lease_ids |= p.extra_ids["lease"]
    if tenant_ids:
        _check_ids_belong(landlord=landlord, model=Tenant, ids=tenant_ids, label="tenant")
    if lease_ids:
        _check_ids_belong(landlord=landlord, model=Lease, ids=lease_ids, label="lease")


def _same_or_conflict(existing: LedgerTransaction, prepared: _Prepared) -> LedgerTransaction:
    if existing.content_hash != prepared.content_hash:
        raise _invalid(
            "Idempotency key %(key)s was already used for a different posting (#%(seq)s).",
            "idempotency_conflict",
            key=existing.idempotency_key,
            seq=existing.seq,
        )
    return existing


# Column order of the COPY streams; the transaction columns are the model's concrete
# fields in order, so a written row doubles as the values of `LedgerTransaction.from_db`.
TRANSACTION_COLUMNS = (
    ("id", "int8"),
    ("landlord_id", "int8"),
    ("seq", "int8"),
    ("idempotency_key", "text"),
    ("description", "text"),
    ("effective_at", "timestamptz"),
    ("created_at", "timestamptz"),
    ("document_kind", "text"),
    ("document_id", "int8"),
    ("reverses_id", "int8"),
    ("content_hash", "text"),
    ("prev_hash", "text"),
    ("hash", "text"),
)
ENTRY_COLUMNS = (
    ("transaction_id", "int8"),
    ("landlord_id", "int8"),
    ("account_id", "int8"),
    ("amount_minor", "int8"),
    ("currency", "text"),
    ("tenant_id", "int8"),
    ("lease_id", "int8"),
    ("document_kind", "text"),
    ("document_id", "int8"),
)
_TRANSACTION_ATTNAMES = [f.attname for f in LedgerTransaction._meta.concrete_fields]
assert [name for name, _ in TRANSACTION_COLUMNS] == _TRANSACTION_ATTNAMES, "update the COPY columns"


def _copy(cursor, table: str, columns: tuple[tuple[str, str], ...], rows: list[tuple]) -> None:
    names = ", ".join(name for name, _ in columns)
    with cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([pg_type for _, pg_type in columns])
        for row in rows:
            copy.write_row(row)


# A post of up to this many transactions is written by one prepared statement (both
# tables and the head); bigger ones (draft issue, bench) by binary COPY.
SMALL_POST = 16

_SMALL_WRITE_SQL = (
    "WITH t AS ("
    " INSERT INTO ledger_ledgertransaction (landlord_id, seq, idempotency_key, description,"
    " effective_at, created_at, document_kind, document_id, reverses_id, content_hash,"
    " prev_hash, hash)"
    " SELECT %(landlord)s, k.seq, k.key, k.description, k.effective_at, %(now)s,"
    " k.document_kind, k.document_id, k.reverses_id, k.content_hash, k.prev_hash, k.hash"
    " FROM unnest(%(seq)s::bigint[], %(key)s::text[], %(description)s::text[],"
    " %(effective_at)s::timestamptz[], %(document_kind)s::text[], %(document_id)s::bigint[],"
    " %(reverses_id)s::bigint[], %(content_hash)s::text[], %(prev_hash)s::text[],"
    " %(hash)s::text[]) AS k(seq, key, description, effective_at, document_kind, document_id,"
    " reverses_id, content_hash, prev_hash, hash)"
    " ORDER BY k.seq RETURNING id, seq),"
    " e AS ("
    " INSERT INTO ledger_ledgerentry (transaction_id, landlord_id, account_id, amount_minor,"
    " currency, tenant_id, lease_id, document_kind, document_id)"
    " SELECT t.id, %(landlord)s, x.account_id, x.amount_minor, x.currency, x.tenant_id,"
    " x.lease_id, x.document_kind, x.document_id"
    " FROM unnest(%(e_seq)s::bigint[], %(e_account)s::bigint[], %(e_amount)s::bigint[],"
    " %(e_currency)s::text[], %(e_tenant)s::bigint[], %(e_lease)s::bigint[],"
    " %(e_document_kind)s::text[], %(e_document_id)s::bigint[]) WITH ORDINALITY"
    " AS x(seq, account_id, amount_minor, currency, tenant_id, lease_id, document_kind,"
    " document_id, n)"
    " JOIN t ON t.seq = x.seq ORDER BY x.n),"
    " h AS (UPDATE ledger_ledgerhead SET last_seq = %(last_seq)s, last_hash = %(last_hash)s,"
    " updated_at = %(now)s WHERE landlord_id = %(landlord)s)"
    " SELECT seq, id FROM t"
)


def _write(
    *, landlord: Landlord, head: tuple[int, str], prepared: Sequence[_Prepared]
) -> list[LedgerTransaction]:
    """Append `prepared` to the landlord's chain under the held head lock (`head`:
    its last seq and hash, from `_heads_lock_raw`).

    A small post (a payment and its fee, a reversal) is one prepared statement: both
    inserts and the head move, where the COPY path took four round trips, each COPY
    with its own setup. Bigger posts use binary COPY: about twice as fast as
    `bulk_create` end to end (docs/decisions/0003-ledger.md); their ids are drawn
    from the sequence first so entries can reference their transaction in the same
    round of COPY.
    """
    created_at = timezone.now()
    seq, prev_hash = head
    txn_rows: list[tuple] = []
    entry_rows: list[tuple] = []
    for p in prepared:
        spec = p.spec
        seq += 1
        link = chain_hash(prev_hash=prev_hash, seq=seq, content_hash=p.content_hash)
        txn_rows.append(
            (
                None,  # the id, filled in below
                landlord.pk,
                seq,
                spec.idempotency_key,
                spec.description,
                spec.effective_at,
                created_at,
                spec.document_kind,
                spec.document_id,
                p.reverses.pk if p.reverses is not None else None,
                p.content_hash,
                prev_hash,
                link,
            )
        )
        prev_hash = link
        entry_rows.extend(
            (
                seq,  # the transaction, by its seq until its id is known
                landlord.pk,
                e.account.pk,
                e.amount_minor,
                e.currency,
                e.tenant_id,
                e.lease_id,
                e.document_kind,
                e.document_id,
            )
            for e in p.entries
        )
    if len(prepared) <= SMALL_POST:
        ids = _write_small(landlord, txn_rows, entry_rows, last=(seq, prev_hash), now=created_at)
    else:
        ids = _write_copy(landlord, txn_rows, entry_rows, last=(seq, prev_hash), now=created_at)
    return [
        LedgerTransaction.from_db(connection.alias, _TRANSACTION_ATTNAMES, (ids[row[2]], *row[1:]))
        for row in txn_rows
    ]


def _write_small(landlord, txn_rows, entry_rows, *, last, now) -> dict[int, int]:
    """One statement; returns seq -> id."""
    columns = list(zip(*txn_rows, strict=True))
    entry_columns = list(zip(*entry_rows, strict=True))
    params = {
        "landlord": landlord.pk,
        "now": now,
        "seq": list(columns[2]),
        "key": list(columns[3]),
        "description": list(columns[4]),
        "effective_at": list(columns[5]),
        "document_kind": list(columns[7]),
        "document_id": list(columns[8]),
        "reverses_id": list(columns[9]),
        "content_hash": list(columns[10]),
        "prev_hash": list(columns[11]),
        "hash": list(columns[12]),
        "e_seq": list(entry_columns[0]),
        "e_account": list(entry_columns[2]),
        "e_amount": list(entry_columns[3]),
        "e_currency": list(entry_columns[4]),
        "e_tenant": list(entry_columns[5]),
        "e_lease": list(entry_columns[6]),
        "e_document_kind": list(entry_columns[7]),
        "e_document_id": list(entry_columns[8]),
        "last_seq": last[0],
        "last_hash": last[1],
    }
    return dict(prepared_rows(_SMALL_WRITE_SQL, params))


def _write_copy(landlord, txn_rows, entry_rows, *, last, now) -> dict[int, int]:
    """Ids drawn first, then one binary COPY per table and the head moved; seq -> id."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence('ledger_ledgertransaction', 'id'))"
            " FROM generate_series(1, %s)",
            [len(txn_rows)],
        )
        ids = {row[2]: txn_id for row, (txn_id,) in zip(txn_rows, cursor.fetchall(), strict=True)}
        with connection.wrap_database_errors:
            _copy(
                cursor,
                "ledger_ledgertransaction",
                TRANSACTION_COLUMNS,
                [(ids[row[2]], *row[1:]) for row in txn_rows],
            )
            _copy(
                cursor,
                "ledger_ledgerentry",
                ENTRY_COLUMNS,
                [(ids[row[0]], *row[1:]) for row in entry_rows],
            )
        cursor.execute(
            "UPDATE ledger_ledgerhead SET last_seq = %s, last_hash = %s, updated_at = %s"
            " WHERE landlord_id = %s",
            [last[0], last[1], now, landlord.pk],
        )
    return ids


def _constraint_name(exc: IntegrityError) -> str | None:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


# --- posting ------------------------------------------------------------------------


_BY_KEYS_SQL = (
    f"SELECT {', '.join(_TRANSACTION_ATTNAMES)} FROM ledger_ledgertransaction"  # noqa: S608
    " WHERE landlord_id = %s AND idempotency_key = ANY(%s::text[])"
)


def _by_keys(cursor, landlord: Landlord, keys: Sequence[str]) -> dict[str, LedgerTransaction]:
    cursor.execute(_BY_KEYS_SQL, [landlord.pk, list(keys)], prepare=True)
    key_at = _TRANSACTION_ATTNAMES.index("idempotency_key")
    return {
        row[key_at]: LedgerTransaction.from_db(connection.alias, _TRANSACTION_ATTNAMES, row)
        for row in cursor.fetchall()
    }


def _post(
    *, landlord: Landlord, prepared: Sequence[_Prepared]
) -> list[tuple[LedgerTransaction, bool]]:
    """`_post_joined` in a transaction: the caller's when it holds one (no savepoint of
    its own: a savepoint is two more round trips, paid by every Stripe payment event),
    else a new one."""
    if connection.in_atomic_block:
        return _post_joined(landlord=landlord, prepared=prepared)
    with transaction.atomic():
        return _post_joined(landlord=landlord, prepared=prepared)


def _post_joined(
    *, landlord: Landlord, prepared: Sequence[_Prepared]
) -> list[tuple[LedgerTransaction, bool]]:
    """Post each of `prepared` once: the existing transaction for a key already used
    (same content; other content raises), else a new one; with each, whether this call
    wrote it. One head lock, one key look-up and one write for all of them (single
    posts and the bulk path alike). The key is looked up under the head lock,
    so a replay waits for a concurrent poster of the same landlord (replays are rare).

    Plain SQL on a preparing cursor: this is the per-event path of Stripe webhooks,
    where building ORM queries cost more than running them. The references of entries
    to tenants and leases are checked by PostgreSQL (migration 0005, set-based
    references); a violation is turned into the readable error here, once the write's
    savepoint is rolled back. A refusal before the write (a key reused for other
    content, a transaction reversed twice) leaves the caller's transaction usable,
    still holding the head lock until it ends."""
    keys = [p.spec.idempotency_key for p in prepared]
    if len(set(keys)) != len(keys):
        seen: set[str] = set()
        dupe = next(k for k in keys if k in seen or seen.add(k))
        raise _invalid(
            "Idempotency key %(key)s appears twice in one post.", "idempotency_key", key=dupe
        )
    with prepared_cursor() as cursor:
        head = _heads_lock_raw(cursor, [landlord.pk])[landlord.pk]
        existing = _by_keys(cursor, landlord, keys)
    results: dict[str, LedgerTransaction] = {}
    fresh: list[_Prepared] = []
    for p in prepared:
        found = existing.get(p.spec.idempotency_key)
        if found is not None:
            results[p.spec.idempotency_key] = _same_or_conflict(found, p)
        else:
            if p.reverses is not None:
                _check_not_reversed(p.reverses)
            fresh.append(p)
    if fresh:
        try:
            with transaction.atomic():
                written = _write(landlord=landlord, head=head, prepared=fresh)
        except IntegrityError as exc:
            name = _constraint_name(exc)
            if name in ("ledger_entry_tenant_ref", "ledger_entry_lease_ref"):
                _check_references(landlord=landlord, prepared=fresh)
            for p in fresh:
                if p.reverses is not None:
                    _check_not_reversed(p.reverses)
            raise
        results.update(zip((p.spec.idempotency_key for p in fresh), written, strict=True))
    return [(results[key], key not in existing) for key in keys]


def transaction_post(
    *,
    landlord: Landlord,
    idempotency_key: str,
    effective_at: datetime,
    description: str,
    entries: Sequence[EntrySpec],
    document_kind: str = "",
    document_id: int | None = None,
) -> LedgerTransaction:
    """Post one balanced transaction to the landlord's ledger, exactly once.

    Rules: at least two entries; non-zero integer amounts; entries sum to zero per
    currency; accounts are the landlord's and in the entry's currency. Posting again
    with the same idempotency key returns the first transaction and creates nothing;
    reusing the key for different content raises ValidationError.
    """
    spec = TransactionSpec(
        idempotency_key=idempotency_key,
        effective_at=effective_at,
        description=description,
        entries=list(entries),
        document_kind=document_kind,
        document_id=document_id,
    )
    return transactions_post(landlord=landlord, specs=[spec])[0]


def transactions_post(
    *, landlord: Landlord, specs: Sequence[TransactionSpec]
) -> list[LedgerTransaction]:
    """Post several transactions of one landlord together, each exactly as
    `transaction_post` would (same rules; an already used key returns its first
    transaction), all or none: one head lock, one key look-up and one write for all.
    Returns one transaction per spec, in spec order (a payment and its processor fee
    are posted this way: half the round trips of two posts)."""
    prepared = [_prepare(landlord=landlord, spec=spec) for spec in specs]
    return [txn for txn, _created in _post(landlord=landlord, prepared=prepared)] if specs else []


def transactions_post_bulk(
    *, landlord: Landlord, specs: Sequence[TransactionSpec]
) -> list[LedgerTransaction]:
    """Post many transactions in one database transaction (the bulk billing path).

    Each spec follows the rules of `transaction_post`. Specs whose idempotency key
    already exists are skipped (a retried chunk writes nothing twice; a reused key
    with different content raises). Returns the transactions created, in spec order,
    with `pk` set. One head lock, set-based inserts; the caller chooses the chunk size.
    """
    if not specs:
        return []
    prepared = [_prepare(landlord=landlord, spec=spec) for spec in specs]
    return [txn for txn, created in _post(landlord=landlord, prepared=prepared) if created]


# --- bulk posting by account key (the billing run's path) ---------------------------


class Posting(NamedTuple):
    """One posting for `postings_post_bulk`, as plain values.

    Each entry is the `EntryContent` that is hashed: its account is named by (code,
    currency, tenant), not by a loaded `Account`, so a caller needs no account lookups
    and the ledger resolves the ids once per call.
    """

    idempotency_key: str
    effective_at: datetime
    description: str
    document_kind: str
    document_id: int | None
    entries: Sequence[EntryContent]


def _check_posting(p: Posting, aware_checked: set[datetime]) -> list[EntryContent]:
    """`_prepare`'s rules for one `Posting` (no queries); its entries with each entry's
    tenant defaulted to its account's."""
    key = p.idempotency_key
    if type(key) is not str or not key or len(key) > MAX_KEY_LENGTH:
        raise _invalid(
            "The idempotency key must be 1 to %(n)s characters.",
            "idempotency_key",
            n=MAX_KEY_LENGTH,
        )
    if p.effective_at not in aware_checked:
        if not isinstance(p.effective_at, datetime) or timezone.is_naive(p.effective_at):
            raise _invalid(
                "%(where)s: effective_at must be a timezone-aware datetime.",
                "effective_at",
                where=f"Posting {key!r}",
            )
        aware_checked.add(p.effective_at)
    if len(p.description) > MAX_DESCRIPTION_LENGTH:
        raise _invalid(
            "%(where)s: the description is too long.", "description", where=f"Posting {key!r}"
        )
    _check_document_ref(p.document_kind, p.document_id, where=f"Posting {key!r}")
    entries = list(p.entries)
    if len(entries) < 2:
        raise _invalid(
            "%(where)s needs at least two entries.", "too_few_entries", where=f"Posting {key!r}"
        )
    totals: dict[str, int] = {}
    for i, e in enumerate(entries):
        amount = e.amount_minor
        if type(amount) is not int or amount == 0:
            raise _invalid(
                "%(where)s: every amount must be a non-zero integer of minor units (got %(amount)r).",
                "amount",
                where=f"Posting {key!r}",
                amount=amount,
            )
        if e.currency != e.account_currency:
            raise _invalid(
                "%(where)s: a %(currency)s amount cannot be booked on %(account)s.",
                "currency_mismatch",
                where=f"Posting {key!r}",
                currency=e.currency,
                account=f"{e.account_code} {e.account_currency}",
            )
        if e.document_kind or e.document_id is not None:
            _check_document_ref(e.document_kind, e.document_id, where=f"Posting {key!r}")
        if e.tenant_id is None and e.account_tenant_id is not None:
            entries[i] = e._replace(tenant_id=e.account_tenant_id)
        totals[e.currency] = totals.get(e.currency, 0) + amount
    if any(totals.values()):
        unbalanced = {currency: total for currency, total in totals.items() if total}
        raise _invalid(
            "%(where)s does not balance: %(totals)s (debits and credits must sum to 0 per currency).",
            "unbalanced",
            where=f"Posting {key!r}",
            totals=", ".join(f"{c} {t:+d}" for c, t in sorted(unbalanced.items())),
        )
    return entries


# Per-landlord lookups of a bulk post, one index probe per key (LATERAL ... LIMIT 1)
# whatever the statistics say: keys already posted, and the ids of accounts named by
# (code, currency, tenant) in the order given (NULL where none exists), per-tenant and
# landlord-wide keys apart so each probe uses the whole unique index.
_EXISTING_KEYS = (
    "ARRAY(SELECT ARRAY[k.landlord_id::text, k.key, t.content_hash]"
    " FROM unnest(%s::bigint[], %s::text[]) AS k(landlord_id, key) CROSS JOIN LATERAL"
    " (SELECT content_hash FROM ledger_ledgertransaction WHERE landlord_id = k.landlord_id"
    " AND idempotency_key = k.key LIMIT 1) t)"
)
_TENANT_ACCOUNT_IDS = (
    "ARRAY(SELECT a.id FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::bigint[])"
    " WITH ORDINALITY AS k(landlord_id, code, currency, tenant_id, i) LEFT JOIN LATERAL"
    " (SELECT id FROM ledger_account WHERE landlord_id = k.landlord_id AND code = k.code"
    " AND currency = k.currency AND tenant_id = k.tenant_id LIMIT 1) a ON true ORDER BY k.i)"
)
_WIDE_ACCOUNT_IDS = (
    "ARRAY(SELECT a.id FROM unnest(%s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY"
    " AS k(landlord_id, code, currency, i) LEFT JOIN LATERAL (SELECT id FROM ledger_account"
    " WHERE landlord_id = k.landlord_id AND code = k.code AND currency = k.currency"
    " AND tenant_id IS NULL LIMIT 1) a ON true ORDER BY k.i)"
)
# The (landlord, tenant) and (landlord, lease) pairs named whose tenant or lease is not
# that landlord's, asked once PostgreSQL has refused a bulk post's entries.
_FOREIGN = (
    "ARRAY(SELECT ARRAY[k.landlord_id, k.id] FROM unnest(%s::bigint[], %s::bigint[])"
    " AS k(landlord_id, id) WHERE NOT EXISTS (SELECT 1 FROM tenants_tenant t"
    " WHERE t.id = k.id AND t.landlord_id = k.landlord_id) LIMIT 10),"
    " ARRAY(SELECT ARRAY[k.landlord_id, k.id] FROM unnest(%s::bigint[], %s::bigint[])"
    " AS k(landlord_id, id) WHERE NOT EXISTS (SELECT 1 FROM tenants_lease t"
    " WHERE t.id = k.id AND t.landlord_id = k.landlord_id) LIMIT 10)"
)
_NEXT_TRANSACTION_IDS = (
    "ARRAY(SELECT nextval((SELECT pg_get_serial_sequence('ledger_ledgertransaction', 'id')"
    "::regclass)) FROM generate_series(1, %s))"
)


def _columns_of(rows: Sequence[tuple], width: int) -> list[list]:
    """Tuples as `width` parallel lists (one array parameter per column for unnest)."""
    return [[row[i] for row in rows] for i in range(width)]


def postings_post_bulk(*, landlord: Landlord, postings: Sequence[Posting]) -> int:
    """`postings_post_bulk_many` for one landlord."""
    return postings_post_bulk_many(batches=[(landlord, postings)])


def postings_post_bulk_many(
    *, batches: Sequence[tuple[Landlord, Sequence[Posting]]], keys_known_new: bool = False
) -> int:
    """Post many balanced transactions, of one or several landlords, in one database
    transaction, exactly once each: `transactions_post_bulk` for callers that name
    accounts by key (the billing run, several landlords' chunks at a time).

    Same rules: validated in Python first (readable errors), then by PostgreSQL at
    commit; keys that already exist are skipped and a key reused for other content
    raises; each landlord's chain head is locked once, in landlord id order. Accounts
    that do not exist yet are created. Returns how many transactions were created. Rows
    go from plain tuples to two binary COPYs, with no model instances on the way (the
    billing run posts 100,000 of these at month end), and the lookups of every landlord
    are one round trip.

    `keys_known_new`: the caller guarantees no key was posted before (the billing run's
    keys name invoices created in this transaction), so the keys are not looked up;
    the unique (landlord, key) constraint stays the backstop, and a key posted after
    all raises IntegrityError instead of being skipped. Tenants and leases of another
    landlord are refused by PostgreSQL (the entries' set-based references) and reported
    here as the same readable error as single posts.
    """
    batches = [(landlord, postings) for landlord, postings in batches if postings]
    if not batches:
        return 0
    if len({landlord.pk for landlord, _ in batches}) != len(batches):
        raise ValueError("postings_post_bulk_many takes each landlord once")
    batches.sort(key=lambda batch: batch[0].pk)
    checked: set[datetime] = set()
    account_keys: set[tuple[int, str, str, int | None]] = set()  # (landlord, code, ...)
    prepared: list[tuple[int, Posting, list[EntryContent], str]] = []
    for landlord, postings in batches:
        owner = landlord.pk
        keys = [p.idempotency_key for p in postings]
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            dupe = next(k for k in keys if k in seen or seen.add(k))
            raise _invalid(
                "Idempotency key %(key)s appears twice in one bulk post.",
                "idempotency_key",
                key=dupe,
            )
        for p in postings:
            entries = _check_posting(p, checked)
            for e in entries:
                account_keys.add((owner, e.account_code, e.account_currency, e.account_tenant_id))
            digest = content_hash(
                idempotency_key=p.idempotency_key,
                effective_at=p.effective_at,
                description=p.description,
                document_kind=p.document_kind,
                document_id=p.document_id,
                reverses_key=None,
                entries=entries,
            )
            prepared.append((owner, p, entries, digest))
    # No savepoint (two round trips) when the caller has a transaction open; so the
    # refusals below are raised after the block, before anything is written, which
    # leaves the caller's transaction usable (as `transactions_post_bulk` does).
    refusal: ValidationError | None = None
    for _owner, code, currency, tenant_id in account_keys:
        _validate_account_key(code=code, currency=currency, tenant_id=tenant_id)
    per_tenant = sorted(k for k in account_keys if k[3] is not None)
    wide = sorted(k for k in account_keys if k[3] is None)
    landlords = {landlord.pk: landlord for landlord, _ in batches}
    with (
        transaction.atomic(savepoint=False),
        # Prepared once per connection: these fixed statements took longer to plan
        # than to run.
        prepared_cursor() as cursor,
    ):
        heads = _heads_lock_raw(cursor, sorted(landlords))
        # Under the head locks (every poster of a landlord takes its head), in one round
        # trip: keys already posted (unless known new), transaction ids for every posting
        # (ids of skipped ones stay unused) and the accounts' ids.
        ids_and_accounts = [
            len(prepared),
            *_columns_of(per_tenant, 4),
            *_columns_of(wide, 3),
        ]
        if keys_known_new:
            cursor.execute(
                f"SELECT NULL, {_NEXT_TRANSACTION_IDS}, {_TENANT_ACCOUNT_IDS}, {_WIDE_ACCOUNT_IDS}",
                ids_and_accounts,
                prepare=True,
            )
        else:
            cursor.execute(
                f"SELECT {_EXISTING_KEYS}, {_NEXT_TRANSACTION_IDS},"
                f" {_TENANT_ACCOUNT_IDS}, {_WIDE_ACCOUNT_IDS}",
                [
                    [owner for owner, *_ in prepared],
                    [p.idempotency_key for _, p, *_ in prepared],
                    *ids_and_accounts,
                ],
                prepare=True,
            )
        existing_rows, txn_ids, tenant_accounts, wide_accounts = cursor.fetchone()
        account_ids = {
            key: pk
            for key, pk in zip(per_tenant + wide, tenant_accounts + wide_accounts, strict=True)
            if pk is not None
        }
        if len(account_ids) < len(account_keys):  # first use: create them
            missing_by_owner: dict[int, list[AccountKey]] = defaultdict(list)
            for owner, code, currency, tenant_id in account_keys - account_ids.keys():
                missing_by_owner[owner].append(AccountKey(code, currency, tenant_id))
            for owner, missing in sorted(missing_by_owner.items()):
                created = accounts_get_or_create(landlord=landlords[owner], keys=missing)
                account_ids.update(
                    ((owner, k.code, k.currency, k.tenant_id), a.pk) for k, a in created.items()
                )
        existing = {(int(owner), key): digest for owner, key, digest in existing_rows or ()}
        created_at = timezone.now()
        txn_rows: list[tuple] = []
        entry_rows: list[tuple] = []
        chain = dict(heads)
        for (owner, p, entries, digest), txn_id in zip(prepared, txn_ids, strict=True):
            stored = existing.get((owner, p.idempotency_key))
            if stored is not None:
                if stored != digest and refusal is None:
                    refusal = _invalid(
                        "Idempotency key %(key)s was already used for a different posting.",
                        "idempotency_conflict",
                        key=p.idempotency_key,
                    )
                continue
            seq, prev_hash = chain[owner]
            seq += 1
            link = chain_hash(prev_hash=prev_hash, seq=seq, content_hash=digest)
            chain[owner] = (seq, link)
            txn_rows.append(
                (
                    txn_id,
                    owner,
                    seq,
                    p.idempotency_key,
                    p.description,
                    p.effective_at,
                    created_at,
                    p.document_kind,
                    p.document_id,
                    None,
                    digest,
                    prev_hash,
                    link,
                )
            )
            entry_rows.extend(
                (
                    txn_id,
                    owner,
                    account_ids[(owner, e.account_code, e.account_currency, e.account_tenant_id)],
                    e.amount_minor,
                    e.currency,
                    e.tenant_id,
                    e.lease_id,
                    e.document_kind,
                    e.document_id,
                )
                for e in entries
            )
        if refusal is None and txn_rows:
            try:
                # A savepoint (two round trips per call, not per posting), so a refusal
                # by PostgreSQL leaves the caller's transaction usable, as one found above.
                with transaction.atomic():
                    _copy(cursor, "ledger_ledgertransaction", TRANSACTION_COLUMNS, txn_rows)
                    _copy(cursor, "ledger_ledgerentry", ENTRY_COLUMNS, entry_rows)
            # psycopg's own error: Django's wrapper is applied where the cursor closes.
            except psycopg.errors.IntegrityError as exc:
                if exc.diag.constraint_name not in (
                    "ledger_entry_tenant_ref",
                    "ledger_entry_lease_ref",
                ):
                    raise
                refusal = _foreign_refusal(cursor, prepared)
                if refusal is None:  # not ours to explain after all
                    raise
            else:
                moved = [owner for owner in sorted(chain) if chain[owner] != heads[owner]]
                cursor.execute(
                    "UPDATE ledger_ledgerhead h SET last_seq = v.seq, last_hash = v.hash,"
                    " updated_at = %s FROM unnest(%s::bigint[], %s::bigint[], %s::text[])"
                    " AS v(landlord_id, seq, hash) WHERE h.landlord_id = v.landlord_id",
                    [
                        created_at,
                        moved,
                        [chain[owner][0] for owner in moved],
                        [chain[owner][1] for owner in moved],
                    ],
                    prepare=True,
                )
    if refusal is not None:
        raise refusal
    return len(txn_rows)


def _foreign_refusal(
    cursor, prepared: Sequence[tuple[int, Posting, list[EntryContent], str]]
) -> ValidationError | None:
    """The readable error for the (landlord, tenant) or (landlord, lease) pairs of a
    bulk post that PostgreSQL refused: looked up only once it has refused some."""
    tenant_ids: set[tuple[int, int]] = set()
    lease_ids: set[tuple[int, int]] = set()
    for owner, _p, entries, _digest in prepared:
        for e in entries:
            if e.tenant_id is not None:
                tenant_ids.add((owner, e.tenant_id))
            if e.lease_id is not None:
                lease_ids.add((owner, e.lease_id))
    cursor.execute(
        f"SELECT {_FOREIGN}",
        [*_columns_of(sorted(tenant_ids), 2), *_columns_of(sorted(lease_ids), 2)],
    )
    for label, foreign in zip(("tenant", "lease"), cursor.fetchone(), strict=True):
        if foreign:
            return ValidationError(
                "No %(label)s %(ids)s for this landlord.",
                code=f"{label}_scope",
                params={"label": label, "ids": ", ".join(str(pk) for _, pk in foreign)},
            )
    return None


def prepared_connection() -> psycopg.Connection:
    """Django's psycopg connection (same session and transaction), able to prepare.

    Django disables psycopg's prepared statements (`prepare_threshold=None`) for the
    sake of connection poolers; its own cursors bind client-side and could not prepare
    anyway. A `psycopg.Cursor` on this connection with `execute(..., prepare=True)`
    prepares a statement once per session: for the bulk path's fixed statements,
    planning cost more than running (0.3-1 ms each, 1,000 chunks at month end). The
    threshold only lets explicit `prepare=True` through (nothing else here reaches
    it). A pooler in transaction mode would need prepared-statement support
    (PgBouncer 1.21+); the project uses none.
    """
    connection.ensure_connection()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = 2**31 - 1
    return raw


# One reusable server-binding cursor per psycopg connection, for `prepared_rows`.
_statement_cursors: WeakKeyDictionary[psycopg.Connection, psycopg.Cursor] = WeakKeyDictionary()


def prepared_rows(statement: str, params: Sequence | dict) -> list[tuple]:
    """Run one fixed statement as a prepared statement on Django's connection (same
    transaction) and return its rows ([] for a statement without any).

    The cursor is kept per connection: a new psycopg cursor copies the connection's
    adapter map, and asking a result for its description builds a column object per
    column; the per-event path of Stripe webhooks runs a dozen statements an event."""
    raw = prepared_connection()
    cursor = _statement_cursors.get(raw)
    if cursor is None or cursor.closed:
        cursor = _statement_cursors[raw] = psycopg.Cursor(raw)
    with connection.wrap_database_errors:
        cursor.execute(statement, params, prepare=True)
        result = cursor.pgresult
        if result is None or result.status != psycopg.pq.ExecStatus.TUPLES_OK:
            return []
        return cursor.fetchall()


@contextmanager
def prepared_cursor() -> Iterator[psycopg.Cursor]:
    """A cursor on Django's connection (same session and transaction) that binds
    server-side, so `execute(..., prepare=True)` really prepares; database errors are
    raised as Django's, as from the ORM.

    Not `prepared_connection().cursor()`: Django sets the connection's cursor factory
    to its client-side binding cursor, which accepts `prepare=True` and silently sends
    each statement as text with its values inlined, to be parsed and planned anew
    (the per-event path of Stripe webhooks did that until decision 0011)."""
    with connection.wrap_database_errors, psycopg.Cursor(prepared_connection()) as cursor:
        yield cursor


def _heads_lock_raw(cursor, landlord_ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    """`_head_lock` in plain SQL for several landlords, locked in id order until commit:
    landlord id -> (last seq, last hash). Creates the heads that do not exist yet."""
    statement = (
        "SELECT landlord_id, last_seq, last_hash FROM ledger_ledgerhead"
        " WHERE landlord_id = ANY(%s::bigint[]) ORDER BY landlord_id FOR UPDATE"
    )
    for _attempt in range(2):
        cursor.execute(statement, [list(landlord_ids)], prepare=True)
        heads = {landlord_id: (seq, last) for landlord_id, seq, last in cursor.fetchall()}
        missing = [pk for pk in landlord_ids if pk not in heads]
        if not missing:
            return heads
        cursor.execute(
            "INSERT INTO ledger_ledgerhead (landlord_id, last_seq, last_hash, updated_at)"
            " SELECT id, 0, %s, now() FROM unnest(%s::bigint[]) AS l(id) ORDER BY id"
            " ON CONFLICT DO NOTHING",
            [GENESIS_HASH, missing],
        )
    raise RuntimeError(f"no ledger head for landlords {missing}")


# --- reversal -----------------------------------------------------------------------


def _check_not_reversed(original: LedgerTransaction) -> None:
    reversal = LedgerTransaction.objects.filter(reverses=original).only("seq").first()
    if reversal is not None:
        raise _invalid(
            "Transaction #%(seq)s was already reversed by #%(by)s; it can be reversed only once.",
            "already_reversed",
            seq=original.seq,
            by=reversal.seq,
        )


def transaction_reverse(
    *,
    landlord: Landlord,
    transaction: LedgerTransaction,
    reason: str,
    effective_at: datetime,
    idempotency_key: str | None = None,
) -> LedgerTransaction:
    """Cancel a posting the only way an append-only ledger allows: post its negation.

    The reversal has every entry of the original with the opposite sign (same
    accounts, tenants, leases and document references) and points at it through
    `reverses`, which is unique: a transaction can be reversed once. With an
    idempotency key, a retry returns the existing reversal; without one, a second
    reversal raises ValidationError.
    """
    original = transaction
    if original.landlord_id != landlord.pk:
        raise _invalid("This transaction does not belong to this landlord.", "transaction_scope")
    if idempotency_key is not None:
        replay = (
            LedgerTransaction.objects.for_landlord(landlord)
            .filter(idempotency_key=idempotency_key, reverses=original)
            .first()
        )
        if replay is not None:
            return replay
    _check_not_reversed(original)
    entries = [
        EntrySpec(
            account=e.account,
            amount_minor=-e.amount_minor,
            currency=e.currency,
            tenant_id=e.tenant_id,
            lease_id=e.lease_id,
            document_kind=e.document_kind,
            document_id=e.document_id,
        )
        for e in original.entries.select_related("account").order_by("pk")
    ]
    description = f"Reversal of #{original.seq}: {reason}"[:MAX_DESCRIPTION_LENGTH]
    spec = TransactionSpec(
        idempotency_key=idempotency_key or f"reversal:{original.seq}:{uuid.uuid4().hex}",
        effective_at=effective_at,
        description=description,
        entries=entries,
        document_kind=original.document_kind,
        document_id=original.document_id,
    )
    ((posted, _created),) = _post(
        landlord=landlord, prepared=[_prepare(landlord=landlord, spec=spec, reverses=original)]
    )
    return posted


# --- checks -------------------------------------------------------------------------


def _check_problem(result: VerifyResult) -> str:
    problems = []
    if result.chain_break is not None:
        b = result.chain_break
        problems.append(f"Transaction #{b.seq}: {b.reason}")
    if result.unbalanced_currencies:
        totals = ", ".join(f"{c} {t:+d}" for c, t in sorted(result.unbalanced_currencies.items()))
        problems.append(f"The trial balance is not zero: {totals}")
    return "; ".join(problems)[:500]


def ledger_check_record(
    *,
    landlord: Landlord,
    now: datetime,
    kind: str = LedgerCheckKind.NIGHTLY,
    requested_by=None,
) -> LedgerCheck:
    """Recompute the landlord's hash chain, transaction balances and trial balance
    (`ledger_verify`: reads the books in chunks, writes nothing) and record what it found.

    The nightly check is recorded once per landlord and local day (a unique row): when
    that night's check is already recorded, it is returned without checking again, so a
    re-delivered task is harmless. Every on-demand check is a row of its own, and no
    check overwrites another, so a failure stays on record whatever comes after it. A
    failure is also logged as an error, for whoever watches the logs."""
    day = now.astimezone(landlord.tz).date()
    nightly = LedgerCheck.objects.for_landlord(landlord).filter(
        kind=LedgerCheckKind.NIGHTLY, day=day
    )
    if kind == LedgerCheckKind.NIGHTLY and (done := nightly.first()) is not None:
        return done
    result = ledger_verify(landlord=landlord)
    fields = {
        "checked_at": now,
        "ok": result.ok,
        "transactions_checked": result.transactions_checked,
        "last_seq": result.last_seq,
        "last_hash": result.last_hash,
        "problem": "" if result.ok else _check_problem(result) or "The ledger did not verify.",
        "requested_by": requested_by,
    }
    with transaction.atomic():
        if kind == LedgerCheckKind.NIGHTLY:
            check, _created = LedgerCheck.objects.get_or_create(
                landlord=landlord, kind=kind, day=day, defaults=fields
            )
        else:
            check = LedgerCheck.objects.create(landlord=landlord, kind=kind, day=day, **fields)
    if not check.ok:
        log.error("Ledger check failed for landlord %s: %s", landlord.slug, check.problem)
    return check


def ledger_check_run(
    *, landlord_id: int, now: datetime, kind: str, requested_by_id: int | None = None
) -> LedgerCheck | None:
    """`ledger_check_record` for a landlord id (the Celery task's edge); None if the
    landlord no longer exists."""
    from django.contrib.auth import get_user_model

    landlord = Landlord.objects.filter(pk=landlord_id).first()
    if landlord is None:
        return None
    user = get_user_model().objects.filter(pk=requested_by_id).first() if requested_by_id else None
    return ledger_check_record(landlord=landlord, now=now, kind=kind, requested_by=user)
