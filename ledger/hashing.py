"""Canonical content and hashes of ledger transactions (the per-landlord hash chain).

The content is independent of database ids of ledger rows (which do not exist yet
when the hash is computed, before the insert) and of entry order:

    content_hash = sha256(canonical JSON of the transaction and its sorted entries)
    hash         = sha256(prev_hash ":" seq ":" content_hash)

Changing this serialisation breaks every stored chain: bump `VERSION` and teach
`ledger_verify` the old one instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

VERSION = 1


@dataclass(frozen=True, slots=True)
class EntryContent:
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

    def as_list(self) -> list:
        return [
            self.account_code,
            self.account_currency,
            self.account_tenant_id,
            self.amount_minor,
            self.currency,
            self.tenant_id,
            self.lease_id,
            self.document_kind,
            self.document_id,
        ]


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
    rows = sorted(_dumps(entry.as_list()) for entry in entries)
    parts = [
        f'"v":{VERSION}',
        f'"key":{_dumps(idempotency_key)}',
        f'"at":{_dumps(canonical_timestamp(effective_at))}',
        f'"desc":{_dumps(description)}',
        f'"doc":{_dumps([document_kind, document_id])}',
        f'"rev":{_dumps(reverses_key)}',
        f'"entries":[{",".join(rows)}]',
    ]
    payload = "{" + ",".join(parts) + "}"
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def chain_hash(*, prev_hash: str, seq: int, content_hash: str) -> str:
    """The link: binds a transaction's content to its position and to everything before it."""
    return hashlib.sha256(f"{prev_hash}:{seq}:{content_hash}".encode("ascii")).hexdigest()
