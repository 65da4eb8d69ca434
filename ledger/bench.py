"""Throughput of the bulk posting path, for `make bench`-style measurements.

Writes a new landlord with `transactions` rent postings (3 entries each: receivable,
rent income, tax) in chunks, each chunk one database transaction, like a billing
run. Ledger rows cannot be deleted: run it against a scratch database.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from django.db import connection, transaction

from ledger.models import AccountCode
from ledger.services import (
    AccountKey,
    EntrySpec,
    TransactionSpec,
    account_get_or_create,
    accounts_get_or_create,
    transactions_post_bulk,
)
from tenants.models import Landlord, Tenant


def bench_bulk_post(
    *, transactions: int = 100_000, chunk: int = 1_000, tenants: int = 10_000
) -> dict[str, float]:
    """Post `transactions` postings in chunks; return timings and entries per second."""
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    landlord = Landlord.objects.create(name=slug, slug=slug)
    Tenant.objects.bulk_create(
        [Tenant(landlord=landlord, full_name=f"T{i}") for i in range(tenants)], batch_size=5_000
    )
    tenant_ids = list(Tenant.objects.filter(landlord=landlord).values_list("pk", flat=True))

    started = time.perf_counter()
    receivables = accounts_get_or_create(
        landlord=landlord,
        keys=[AccountKey(AccountCode.RECEIVABLE, "EUR", tid) for tid in tenant_ids],
    )
    accounts_seconds = time.perf_counter() - started
    income = account_get_or_create(landlord=landlord, code=AccountCode.RENT_INCOME, currency="EUR")
    tax = account_get_or_create(landlord=landlord, code=AccountCode.TAX_PAYABLE, currency="EUR")

    when = datetime(2026, 2, 1, tzinfo=UTC)
    specs = []
    for n in range(transactions):
        receivable = receivables[AccountKey(AccountCode.RECEIVABLE, "EUR", tenant_ids[n % tenants])]
        doc = {"document_kind": "invoice", "document_id": n + 1}
        specs.append(
            TransactionSpec(
                idempotency_key=f"invoice:{n + 1}",
                effective_at=when,
                description=f"Invoice {n + 1}",
                entries=[
                    EntrySpec(receivable, 119_000, "EUR", **doc),
                    EntrySpec(income, -100_000, "EUR", tenant_id=receivable.tenant_id, **doc),
                    EntrySpec(tax, -19_000, "EUR", **doc),
                ],
                **doc,
            )
        )

    started = time.perf_counter()
    for start in range(0, transactions, chunk):
        with transaction.atomic():  # the deferred checks run at this commit
            transactions_post_bulk(landlord=landlord, specs=specs[start : start + chunk])
    seconds = time.perf_counter() - started
    entries = transactions * 3
    connection.close()
    return {
        "landlord": slug,
        "tenant_accounts_seconds": round(accounts_seconds, 3),
        "transactions": transactions,
        "entries": entries,
        "chunk": chunk,
        "seconds": round(seconds, 3),
        "entries_per_second": round(entries / seconds),
    }
