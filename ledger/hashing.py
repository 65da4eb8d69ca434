"""Canonical content and hashes of ledger transactions (the per-landlord hash chain).

The content is independent of database ids of ledger rows (which do not exist yet
when the hash is computed, before the insert) and of entry order:

    content_hash = sha256(canonical JSON of the transaction and its sorted entries)
    hash         = sha256(prev_hash ":" seq ":" content_hash)

The canonical JSON (version 1) is
    {"v":1,"key":…,"at":…,"desc":…,"doc":[document_kind,document_id],"rev":…,"entries":[…]}
with `at` in UTC ISO 8601 with microseconds, `rev` the reversed transaction's key or
null, and each entry the array
    [account code, account currency, account tenant id, amount_minor, currency,
     tenant_id, lease_id, document_kind, document_id]
entries sorted by their serialisation; compact separators, UTF-8, no ASCII escaping.
Changing a byte of this breaks every stored chain: bump `VERSION` and teach
`ledger_verify` the old format instead (a test pins a known hash).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import NamedTuple

VERSION = 1

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
# The C string escaper the encoder above uses for every str (ensure_ascii=False).
_encode_str = json.encoder.encode_basestring


class EntryContent(NamedTuple):
    """What of an entry is hashed: the account by code/currency/tenant, not by id."""

    account_code: str
    account_currency: str
    account_tenant_id: int | None
    amount_minor: int
    currency: str
    tenant_id: int | None
    lease_id: int | None
    document_kind: str
    document_id: int | None


def entry_json(entry: EntryContent) -> str:
    """The canonical JSON array of one entry: byte for byte `_encode(entry)` (a test
    compares the two over generated entries), written directly for the field types an
    entry has, since `JSONEncoder.encode` builds a C encoder for every list it encodes."""
    code, account_currency, account_tenant, amount, currency, tenant, lease, doc_kind, doc_id = (
        entry
    )
    if (
        type(code) is str
        and type(account_currency) is str
        and type(currency) is str
        and type(doc_kind) is str
        and type(amount) is int
        and (account_tenant is None or type(account_tenant) is int)
        and (tenant is None or type(tenant) is int)
        and (lease is None or type(lease) is int)
        and (doc_id is None or type(doc_id) is int)
    ):
        return (
            f"[{_encode_str(code)},{_encode_str(account_currency)},"
            f"{'null' if account_tenant is None else account_tenant},{amount},"
            f"{_encode_str(currency)},{'null' if tenant is None else tenant},"
            f"{'null' if lease is None else lease},{_encode_str(doc_kind)},"
            f"{'null' if doc_id is None else doc_id}]"
        )
    return _encode(entry)


def canonical_timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds: what PostgreSQL's timestamptz stores exactly."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def content_hash(
    *,
    idempotency_key: str,
    effective_at: datetime,
    description: str,
    document_kind: str,
    document_id: int | None,
    reverses_key: str | None,
    entries: list[EntryContent],
) -> str:
    """sha256 (hex) of the canonical serialisation of one transaction."""
    # Entries serialised field by field (`entry_json`): hashing is most of the Python
    # time of a bulk post, and the encoder's set-up per list cost more than the fields.
    rows = sorted(map(entry_json, entries))
    payload = (
        f'{{"v":{VERSION},"key":{_encode(idempotency_key)}'
        f',"at":{_encode(canonical_timestamp(effective_at))}'
        f',"desc":{_encode(description)},"doc":{_encode([document_kind, document_id])}'
        f',"rev":{_encode(reverses_key)},"entries":[{",".join(rows)}]}}'
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def chain_hash(*, prev_hash: str, seq: int, content_hash: str) -> str:
    """The link: binds a transaction's content to its position and to everything before it."""
    return hashlib.sha256(f"{prev_hash}:{seq}:{content_hash}".encode("ascii")).hexdigest()
