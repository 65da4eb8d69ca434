"""The billing benchmark's dataset, generated inside PostgreSQL (INSERT ... SELECT over
generate_series), so 100,000 leases take seconds, not minutes.

Shape: `landlords` landlords with slug `bench-0001`..., one property each, one unit,
tenant and active lease per lease slot (all leases open-ended from 2026-01-01, billed
on the 1st, due in 14 days), and two monthly charges per lease: rent and parking.
Every tenant already has a receivable account and every landlord its income
accounts (a steady-state month, not the first one).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from bench.common import log, raw_cursor

SLUG_PREFIX = "bench-"
TIMEZONES = ("Europe/Berlin", "Europe/Paris", "Europe/London", "America/New_York")
LEASE_START = "2026-01-01"

# Billing output: emptied before every measured run, so each run bills the same month
# from the same state. The four ledger tables go in one statement (migration 0002 only
# accepts a full reset of the ledger).
OUTPUT_TABLES = (
    "invoices_notification",
    "invoices_invoiceline",
    "invoices_invoice",
    "invoices_billingrunissue",
    "invoices_billingrun",
    "invoices_invoicenumbercounter",
    "ledger_ledgerentry",
    "ledger_ledgertransaction",
    "ledger_ledgerhead",
    "ledger_account",
    "tenants_auditevent",
)


@dataclass(frozen=True)
class Shape:
    leases: int
    landlords: int

    @property
    def per_landlord(self) -> int:
        return self.leases // self.landlords


def dataset_present(shape: Shape) -> bool:
    with raw_cursor() as cur:
        landlords, leases, charges = cur.execute(
            """
            SELECT (SELECT count(*) FROM tenants_landlord WHERE slug LIKE 'bench-%'),
                   (SELECT count(*) FROM tenants_lease),
                   (SELECT count(*) FROM tenants_charge)
            """
        ).fetchone()
    return (landlords, leases, charges) == (shape.landlords, shape.leases, 2 * shape.leases)


def dataset_is_empty() -> bool:
    with raw_cursor() as cur:
        return cur.execute("SELECT NOT EXISTS (SELECT 1 FROM tenants_landlord)").fetchone()[0]


@transaction.atomic
def dataset_create(shape: Shape) -> None:
    """Landlords, properties, units, tenants, leases, lease tenants and charges."""
    per = shape.per_landlord
    with raw_cursor() as cur:
        cur.execute(
            """
            INSERT INTO tenants_landlord (name, slug, timezone, default_currency, email, phone,
                address_line1, address_line2, city, postal_code, country, tax_id, brand_color,
                logo, invoice_footer, payment_instructions, created_at)
            SELECT 'Bench landlord ' || g, 'bench-' || lpad(g::text, 4, '0'),
                   (%(tz)s::text[])[1 + g %% %(ntz)s], 'EUR', 'owner' || g || '@bench.test', '',
                   g || ' Bench Street', '', 'Berlin', '10115', 'DE', '', '#1f4e79', '', '', '',
                   now()
              FROM generate_series(1, %(landlords)s) g
            """,
            {"tz": list(TIMEZONES), "ntz": len(TIMEZONES), "landlords": shape.landlords},
        )
        cur.execute(
            """
            INSERT INTO tenants_property (created_at, updated_at, name, address_line1,
                address_line2, city, postal_code, country, landlord_id)
            SELECT now(), now(), 'Bench block', '1 Bench Street', '', 'Berlin', '10115', 'DE', id
              FROM tenants_landlord WHERE slug LIKE 'bench-%'
            """
        )
        cur.execute(
            """
            INSERT INTO tenants_unit (created_at, updated_at, name, bedrooms, floor_area_m2,
                landlord_id, property_id)
            SELECT now(), now(), 'Apt ' || k, 1 + k %% 4, 40 + k %% 60, p.landlord_id, p.id
              FROM tenants_property p CROSS JOIN generate_series(1, %(per)s) k
             ORDER BY p.landlord_id, k
            """,
            {"per": per},
        )
        cur.execute(
            """
            INSERT INTO tenants_lease (created_at, updated_at, start_date, end_date, currency,
                billing_day, due_days, deposit_minor, status, ended_reason, landlord_id, unit_id)
            SELECT now(), now(), %(start)s, NULL, 'EUR', 1, 14, 0, 'active', '', landlord_id, id
              FROM tenants_unit ORDER BY id
            """,
            {"start": LEASE_START},
        )
        # Tenant ids drawn from the sequence up front, so tenants and the lease-tenant
        # links are two plain inserts from one mapping.
        cur.execute(
            """
            CREATE TEMP TABLE bench_lease_tenant ON COMMIT DROP AS
            SELECT id AS lease_id, landlord_id,
                   nextval(pg_get_serial_sequence('tenants_tenant', 'id')) AS tenant_id
              FROM tenants_lease ORDER BY id
            """
        )
        cur.execute(
            """
            INSERT INTO tenants_tenant (id, created_at, updated_at, full_name, email, phone,
                language, timezone, landlord_id, user_id)
            OVERRIDING SYSTEM VALUE
            SELECT tenant_id, now(), now(), 'Renter ' || tenant_id,
                   'renter' || tenant_id || '@bench.test', '', 'en', '', landlord_id, NULL
              FROM bench_lease_tenant ORDER BY tenant_id
            """
        )
        cur.execute(
            """
            INSERT INTO tenants_lease_tenants (lease_id, tenant_id)
            SELECT lease_id, tenant_id FROM bench_lease_tenant ORDER BY lease_id
            """
        )
        cur.execute(
            """
            INSERT INTO tenants_charge (created_at, updated_at, kind, description, amount_minor,
                currency, frequency, start_date, end_date, landlord_id, lease_id)
            SELECT now(), now(), c.kind, '', c.base + (l.id %% 997) * c.step, 'EUR', 'monthly',
                   %(start)s, NULL, l.landlord_id, l.id
              FROM tenants_lease l
              CROSS JOIN (VALUES ('rent', 80000, 100), ('parking', 5000, 0)) AS c(kind, base, step)
             ORDER BY l.id, c.kind DESC
            """,
            {"start": LEASE_START},
        )


def output_reset() -> None:
    """Empty every table the billing run writes and recreate what a landlord who has
    billed before already has: tenant and income accounts, and the ledger chain head."""
    with transaction.atomic(), raw_cursor() as cur:
        cur.execute(f"TRUNCATE {', '.join(OUTPUT_TABLES)} RESTART IDENTITY CASCADE")
        cur.execute(
            """
            INSERT INTO ledger_account (created_at, updated_at, code, kind, currency,
                landlord_id, tenant_id)
            SELECT now(), now(), 'receivable', 'asset', 'EUR', landlord_id, id
              FROM tenants_tenant ORDER BY id
            """
        )
        cur.execute(
            """
            INSERT INTO ledger_account (created_at, updated_at, code, kind, currency,
                landlord_id, tenant_id)
            SELECT now(), now(), a.code, 'income', 'EUR', l.id, NULL
              FROM tenants_landlord l
             CROSS JOIN (VALUES ('rent_income'), ('income:parking')) AS a(code)
            """
        )
        # Every landlord has posted before: its chain head exists (at the genesis hash).
        cur.execute(
            """
            INSERT INTO ledger_ledgerhead (landlord_id, last_seq, last_hash, updated_at)
            SELECT id, 0, repeat('0', 64), now() FROM tenants_landlord
            """
        )


INPUT_TABLES = (
    "tenants_landlord",
    "tenants_property",
    "tenants_unit",
    "tenants_tenant",
    "tenants_lease",
    "tenants_lease_tenants",
    "tenants_charge",
    "ledger_account",
    "ledger_ledgerhead",
)


def analyze() -> None:
    """Statistics for the loaded tables. The emptied output tables are left as TRUNCATE
    leaves them (size unknown, like a fresh database): analyzed while empty, the ledger's
    deferred-check triggers cache sequential-scan plans in each worker session and a
    chunk's commit takes 160 ms instead of 10 ms until autovacuum analyzes again."""
    with raw_cursor() as cur:
        for table in INPUT_TABLES:
            cur.execute(f"ANALYZE {table}")


def dataset_ensure(shape: Shape) -> bool:
    """Reuse the dataset if it has this shape, else build it. True if it was built.

    A database holding a dataset of another shape must be reset first (`--reset`):
    the caller drops and recreates it.
    """
    if dataset_present(shape):
        log(f"reusing dataset: {shape.leases} leases, {shape.landlords} landlords")
        return False
    if not dataset_is_empty():
        raise RuntimeError("the bench database holds another dataset")
    log(f"creating dataset: {shape.leases} leases, {shape.landlords} landlords")
    dataset_create(shape)
    return True
