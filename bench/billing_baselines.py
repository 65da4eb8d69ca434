"""Baselines the billing run is compared with, measured in the same process and run:

- `naive_bill`: the straightforward per-lease ORM loop a first version would write
  (one transaction per lease, one INSERT per row, `ledger.transaction_post` per invoice).
- `copy_limit`: binary COPY of the same row shapes (an invoice, two lines, a ledger
  transaction with three entries, one outbox row) into index-free TEMP tables — the
  fastest PostgreSQL can take these rows on this machine, an upper bound no real path
  (with indexes, constraints and the ledger's checks) can reach.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from psycopg import sql

from bench.common import raw_cursor
from invoices import rules
from invoices.models import Invoice, InvoiceLine, InvoiceNumberCounter, Notification, TaxRate
from invoices.services import invoice_settings_get
from ledger import services as ledger
from ledger.models import AccountCode, income_account_code
from tenants.models import Charge, Lease


def naive_bill(*, leases: Sequence[Lease], period_start: date) -> tuple[int, float, int]:
    """Bill `leases` for the month one by one. Returns (invoices created, seconds, and
    the queries the first invoice took, counted outside the timing)."""
    period_start, period_end = rules.billing_period(month=period_start)
    first, rest = leases[0], leases[1:]
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        _naive_bill_one(lease=first, period_start=period_start, period_end=period_end)
    created = 0
    started = time.perf_counter()
    for lease in rest:
        with transaction.atomic():
            if _naive_bill_one(lease=lease, period_start=period_start, period_end=period_end):
                created += 1
    return created, time.perf_counter() - started, len(queries)


def _naive_bill_one(*, lease: Lease, period_start: date, period_end: date) -> bool:
    landlord = lease.landlord
    charges = tuple(
        rules.ChargeTerms(
            charge_id=c.pk,
            kind=c.kind,
            description=c.description,
            amount_minor=c.amount_minor,
            currency=c.currency,
            frequency=c.frequency,
            start_date=c.start_date,
            end_date=c.end_date,
        )
        for c in Charge.objects.filter(lease=lease).order_by("pk")
    )
    terms = rules.LeaseTerms(
        lease_id=lease.pk,
        start_date=lease.start_date,
        end_date=lease.end_date,
        currency=lease.currency,
        billing_day=lease.billing_day,
        due_days=lease.due_days,
        charges=charges,
    )
    tax_rates = dict(TaxRate.objects.filter(landlord=landlord).values_list("kind", "rate_bp"))
    draft = rules.invoice_lines_for(
        lease=terms,
        period_start=period_start,
        period_end=period_end,
        tax_rates=tax_rates,
        already_billed_one_off_ids=frozenset(),
    )
    if not isinstance(draft, rules.InvoiceDraft):
        return False
    links = Lease.tenants.through.objects.filter(lease=lease).select_related("tenant")
    tenants = [link.tenant for link in links.order_by("pk")]
    settings_row = invoice_settings_get(landlord=landlord)
    counter, _ = InvoiceNumberCounter.objects.get_or_create(
        landlord=landlord, series=settings_row.number_prefix, year=period_start.year
    )
    counter = InvoiceNumberCounter.objects.select_for_update().get(pk=counter.pk)
    counter.last_number += 1  # the row is locked until commit
    counter.save(update_fields=["last_number", "updated_at"])
    invoice = Invoice.objects.create(
        landlord=landlord,
        lease=lease,
        tenant=tenants[0],
        period_start=draft.period_start,
        period_end=draft.period_end,
        issue_date=draft.issue_date,
        due_date=draft.due_date,
        currency=draft.currency,
        number=f"{counter.series}-{counter.year}-{counter.last_number:06d}",
        state="issued",
        subtotal_minor=draft.subtotal_minor,
        tax_minor=draft.tax_minor,
        total_minor=draft.total_minor,
        bill_to_name=", ".join(t.full_name for t in tenants),
    )
    for position, line in enumerate(draft.lines, start=1):
        InvoiceLine.objects.create(
            invoice=invoice,
            position=position,
            charge_id=line.charge_id,
            kind=line.kind,
            description=line.description,
            quantity=line.quantity,
            unit_amount_minor=line.unit_amount_minor,
            amount_minor=line.amount_minor,
            tax_rate_bp=line.tax_rate_bp,
            tax_minor=line.tax_minor,
            service_start=line.service_start,
            service_end=line.service_end,
        )
    ref = {"document_kind": "invoice", "document_id": invoice.pk}

    def entry(code, amount, tenant=None):
        account = ledger.account_get_or_create(
            landlord=landlord, code=code, currency=invoice.currency, tenant=tenant
        )
        return ledger.EntrySpec(
            account=account,
            amount_minor=amount,
            currency=invoice.currency,
            tenant_id=invoice.tenant_id,
            lease_id=lease.pk,
            **ref,
        )

    entries = [entry(AccountCode.RECEIVABLE, invoice.total_minor, tenants[0])]
    for line in draft.lines:
        entries.append(entry(income_account_code(line.kind), -line.amount_minor))
        if line.tax_minor:
            entries.append(entry(AccountCode.TAX_PAYABLE, -line.tax_minor))
    ledger.transaction_post(
        landlord=landlord,
        idempotency_key=f"invoice:{invoice.pk}:issue",
        effective_at=landlord.day_start(invoice.issue_date),
        description=f"Invoice {invoice.number}",
        entries=entries,
        **ref,
    )
    if tenants[0].email and settings_row.send_emails:
        Notification.objects.create(
            landlord=landlord,
            dedupe_key=f"invoice:{invoice.pk}:issued:email",
            kind="invoice_issued",
            channel="email",
            tenant=tenants[0],
            invoice=invoice,
            to_address=tenants[0].email,
        )
    return True


# --- COPY limit ---------------------------------------------------------------------

_COPY_TABLES = (
    "invoices_invoice",
    "invoices_invoiceline",
    "ledger_ledgertransaction",
    "ledger_ledgerentry",
    "invoices_notification",
)
_BINARY_TYPES = {
    "bigint": "int8",
    "integer": "int4",
    "smallint": "int2",
    "boolean": "bool",
    "date": "date",
    "timestamp with time zone": "timestamptz",
    "character varying": "text",
    "text": "text",
}


def copy_limit(*, invoices: int, indexes: bool = False) -> float:
    """Seconds to generate and binary-COPY `invoices` invoices' rows into TEMP tables
    (with `indexes`, tables that have the real tables' indexes too)."""
    like = "LIKE {} INCLUDING INDEXES" if indexes else "LIKE {}"
    with transaction.atomic(), raw_cursor() as cur:
        columns: dict[str, list[tuple[str, str]]] = {}
        for table in _COPY_TABLES:
            cur.execute(
                sql.SQL("CREATE TEMP TABLE {} (" + like + ") ON COMMIT DROP").format(
                    sql.Identifier(f"bench_copy_{table}"), sql.Identifier(table)
                )
            )
            columns[table] = cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = 'public' ORDER BY ordinal_position",
                [table],
            ).fetchall()
        started = time.perf_counter()
        for table, rows in _row_streams(invoices).items():
            names = [name for name, _type in columns[table]]
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.Identifier(f"bench_copy_{table}"),
                sql.SQL(", ").join(map(sql.Identifier, names)),
            )
            with cur.copy(statement) as copy:
                copy.set_types([_BINARY_TYPES[kind] for _name, kind in columns[table]])
                for row in rows:
                    copy.write_row([row[name] for name in names])
        elapsed = time.perf_counter() - started
        for table in _COPY_TABLES:
            copied = cur.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(f"bench_copy_{table}"))
            ).fetchone()[0]
            expected = {"invoices_invoiceline": 2, "ledger_ledgerentry": 3}.get(table, 1)
            if copied != expected * invoices:
                raise RuntimeError(f"COPY limit: {copied} rows in {table}")
    return elapsed


def _row_streams(n: int):
    """Generators of dict rows per table, shaped like the billing run's output."""
    now = datetime.now(UTC)
    start, end = date(2027, 1, 1), date(2027, 2, 1)
    due = start + timedelta(days=14)
    at = datetime(2026, 12, 31, 23, tzinfo=UTC)
    landlord = 1

    def invoices():
        for i in range(1, n + 1):
            yield {
                "id": i,
                "created_at": now,
                "updated_at": now,
                "landlord_id": landlord,
                "lease_id": i,
                "tenant_id": i,
                "billing_run_id": 1,
                "kind": "rent",
                "adjusts_id": None,
                "period_start": start,
                "period_end": end,
                "issue_date": start,
                "due_date": due,
                "currency": "EUR",
                "number": f"INV-2027-{i:06d}",
                "state": "issued",
                "subtotal_minor": 125_000,
                "tax_minor": 0,
                "total_minor": 125_000,
                "bill_to_name": f"Renter {i}",
                "void_reason": "",
                "voided_at": None,
            }

    def lines():
        for i in range(1, n + 1):
            for position, (kind, amount) in enumerate((("rent", 120_000), ("parking", 5_000)), 1):
                yield {
                    "id": 2 * i + position,
                    "invoice_id": i,
                    "position": position,
                    "charge_id": 2 * i + position,
                    "kind": kind,
                    "description": kind.capitalize(),
                    "quantity": 1,
                    "unit_amount_minor": amount,
                    "amount_minor": amount,
                    "tax_rate_bp": 0,
                    "tax_minor": 0,
                    "service_start": start,
                    "service_end": end,
                    "meter_reading_id": None,
                }

    def transactions():
        prev = "0" * 64
        for i in range(1, n + 1):
            content = hashlib.sha256(f"invoice:{i}".encode()).hexdigest()
            link = hashlib.sha256(f"{prev}:{i}:{content}".encode()).hexdigest()
            yield {
                "id": i,
                "landlord_id": landlord,
                "seq": i,
                "idempotency_key": f"invoice:{i}:issue",
                "description": f"Invoice INV-2027-{i:06d}",
                "effective_at": at,
                "created_at": now,
                "document_kind": "invoice",
                "document_id": i,
                "reverses_id": None,
                "content_hash": content,
                "prev_hash": prev,
                "hash": link,
            }
            prev = link

    def entries():
        for i in range(1, n + 1):
            for k, (account, amount) in enumerate(((1, 125_000), (2, -120_000), (3, -5_000))):
                yield {
                    "id": 3 * i + k,
                    "transaction_id": i,
                    "landlord_id": landlord,
                    "account_id": account,
                    "amount_minor": amount,
                    "currency": "EUR",
                    "tenant_id": i,
                    "lease_id": i,
                    "document_kind": "invoice",
                    "document_id": i,
                }

    def notifications():
        for i in range(1, n + 1):
            yield {
                "id": i,
                "created_at": now,
                "updated_at": now,
                "landlord_id": landlord,
                "dedupe_key": f"invoice:{i}:issued:email",
                "kind": "invoice_issued",
                "channel": "email",
                "tenant_id": i,
                "invoice_id": i,
                "to_address": f"renter{i}@bench.test",
                "subject": "",
                "body": "",
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": None,
                "last_error": "",
                "sent_at": None,
            }

    return {
        "invoices_invoice": invoices(),
        "invoices_invoiceline": lines(),
        "ledger_ledgertransaction": transactions(),
        "ledger_ledgerentry": entries(),
        "invoices_notification": notifications(),
    }
