"""Every reference between two landlord-owned rows names a row of the same landlord, and
no row moves to another landlord: PostgreSQL holds both for every table, not only the
services (`billing_site.db_references`, docs/decisions/0015-same-landlord-everywhere.md).

The row checks are BEFORE triggers, so they run before NOT NULL, CHECK and unique
constraints: a bare `INSERT (landlord_id, <reference>)` reaches them without building a
valid row of every table. The control insert of the parent's own landlord passes the
check and is stopped by NOT NULL instead, which proves the check lets it through.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import date

import psycopg
import pytest
from django.apps import apps
from django.db import IntegrityError, connection, transaction

from billing_site.db_references import (
    Reference,
    RowReference,
    existing_pairs_check_sql,
    existing_rows_check_sql,
)
from dunning.models import DunningPolicy, DunningStep
from invoices.models import Invoice, InvoiceKind
from ledger.models import Account, AccountCode, AccountKind
from payments.models import Method, Payment, PaymentStatus, Payout, PayoutStatus, Source
from tenants.models import Landlord, Lease
from tests.factories import TenantFactory
from tests.test_db_references import InvoiceFactory, Rows, rows_for

MISSING = 2**40  # an id no row has


def _migration(app: str, name: str):
    return importlib.import_module(f"{app}.migrations.{name}")


ROW_MIGRATIONS = [
    _migration("tenants", "0003_same_landlord_rows"),
    _migration("invoices", "0005_same_landlord_rows"),
    _migration("payments", "0004_same_landlord_rows"),
    _migration("portal", "0002_same_landlord_rows"),
    _migration("dunning", "0002_same_landlord_rows"),
]
ROW_REFERENCES: list[RowReference] = [
    ref
    for module in ROW_MIGRATIONS
    for ref in getattr(module, "REFERENCES", getattr(module, "ROW_REFERENCES", []))
]
FIXED_TABLES: list[str] = [
    table
    for module in [*ROW_MIGRATIONS, _migration("ledger", "0008_account_tenant_same_landlord")]
    for table in module.FIXED
]
# The per-statement checks of the tables the billing run writes (decision 0009).
STATEMENT_REFERENCES: list[Reference] = [
    *_migration("invoices", "0004_set_based_references").REFERENCES,
    _migration("invoices", "0005_same_landlord_rows").ADJUSTS,
    *_migration("ledger", "0005_set_based_references").REFERENCES,
    *_migration("ledger", "0008_account_tenant_same_landlord").REFERENCES,
]
# Held by the ledger's commit check (ledger migrations 0002-0004): an entry's transaction
# and account, and a reversal's original, are the transaction's landlord's.
LEDGER_COMMIT_CHECKED = {
    ("ledger_ledgerentry", "transaction_id"),
    ("ledger_ledgerentry", "account_id"),
    ("ledger_ledgertransaction", "reverses_id"),
}
# Link tables without a landlord of their own (the lease-tenant many-to-many, a run's
# recorded issue), as (table, "left_column+right_column"): their two rows must be one
# landlord's.
PAIRS = {
    (table, f"{left}+{right}")
    for table, _name, (left, _), (right, _) in [
        _migration("tenants", "0003_same_landlord_rows").LEASE_TENANTS,
        _migration("invoices", "0006_billing_run_issue_same_landlord").RUN_ISSUE,
    ]
}


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def count(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        return cursor.fetchone()[0]


def refused_as(constraint: str, statement: str, params=()) -> None:
    """`statement` fails with foreign_key_violation naming `constraint`, writing nothing."""
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        sql(statement, params)
    cause = caught.value.__cause__
    assert isinstance(cause, psycopg.errors.ForeignKeyViolation), cause
    assert cause.diag.constraint_name == constraint


@dataclass
class World:
    """A landlord's rows of every table that other landlord-owned rows reference."""

    rows: Rows
    ids: dict[str, int]


def world_for(landlord: Landlord) -> World:
    rows = rows_for(landlord)
    payment = Payment.objects.create(
        landlord=landlord,
        tenant=rows.tenant,
        invoice=rows.invoice,
        amount_minor=5_000,
        currency=rows.invoice.currency,
        method=Method.BANK_TRANSFER,
        source=Source.MANUAL,
        status=PaymentStatus.FAILED,
        idempotency_key=f"test-{landlord.slug}",
    )
    payout = Payout.objects.create(
        landlord=landlord,
        stripe_payout_id=f"po_{landlord.slug}",
        amount_minor=5_000,
        currency=rows.invoice.currency,
        status=PayoutStatus.PENDING,
    )
    policy = DunningPolicy.objects.create(landlord=landlord, name="Strict")
    ids = {
        "tenants_property": rows.lease.unit.property_id,
        "tenants_unit": rows.lease.unit_id,
        "tenants_lease": rows.lease.pk,
        "tenants_tenant": rows.tenant.pk,
        "invoices_invoice": rows.invoice.pk,
        "ledger_ledgertransaction": rows.txn.pk,
        "payments_payment": payment.pk,
        "payments_payout": payout.pk,
        "dunning_dunningpolicy": policy.pk,
    }
    return World(rows, ids)


@pytest.fixture
def b(other_landlord) -> World:
    return world_for(other_landlord)


@pytest.fixture
def a(landlord, b) -> World:
    return world_for(landlord)


# --- every reference is covered -----------------------------------------------------


def _landlord_owned(model) -> bool:
    return any(f.name == "landlord" for f in model._meta.concrete_fields)


def test_every_reference_between_landlord_owned_tables_is_checked_by_postgresql():
    """A new model referencing a landlord's row must come with its check: this lists
    every such column from Django's registry and finds its check."""
    wanted = set()
    for model in apps.get_models():
        if not _landlord_owned(model):
            continue
        for field in model._meta.concrete_fields:
            if (
                field.is_relation
                and field.name != "landlord"
                and _landlord_owned(field.related_model)
            ):
                wanted.add((model._meta.db_table, field.column))
        for field in model._meta.many_to_many:
            if _landlord_owned(field.related_model):
                link = f"{field.m2m_column_name()}+{field.m2m_reverse_name()}"
                wanted.add((field.m2m_db_table(), link))
    for model in apps.get_models():
        # A row without a landlord linking two landlords' rows (not a many-to-many's
        # auto-created table, listed above from its field).
        if _landlord_owned(model) or model._meta.auto_created:
            continue
        links = [
            f.column
            for f in model._meta.concrete_fields
            if f.is_relation and _landlord_owned(f.related_model)
        ]
        if len(links) >= 2:
            wanted.add((model._meta.db_table, "+".join(links)))
    checked = (
        {(r.child, r.column) for r in ROW_REFERENCES}
        | {(r.child, r.column) for r in STATEMENT_REFERENCES if r.same_landlord}
        | LEDGER_COMMIT_CHECKED
        | PAIRS
    )
    assert wanted - checked == set()
    assert wanted == checked, "a check names a column that is not a reference"


@pytest.mark.django_db
def test_every_row_check_and_landlord_guard_is_installed():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t"
            " JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
        )
        triggers = {(table, name): definition for table, name, definition in cursor.fetchall()}
    for ref in ROW_REFERENCES:
        update = triggers[(ref.child, f"{ref.child}_same_landlord_update")]
        assert f"old.{ref.column} IS DISTINCT FROM new.{ref.column}" in update
        assert (ref.child, f"{ref.child}_same_landlord_insert") in triggers
    assert ("tenants_lease_tenants", "tenants_lease_tenants_same_landlord_update") in triggers
    for table in FIXED_TABLES:
        assert (table, f"{table}_landlord_fixed") in triggers, table


# --- the row checks, tried ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("ref", ROW_REFERENCES, ids=lambda ref: ref.name)
def test_a_row_naming_another_landlords_row_is_refused(a, b, ref):
    before = count(ref.child)
    insert = f"INSERT INTO {ref.child} (landlord_id, {ref.column}) VALUES (%s, %s)"
    refused_as(ref.name, insert, [a.rows.landlord.pk, b.ids[ref.parent]])
    refused_as(ref.name, insert, [a.rows.landlord.pk, MISSING])
    # The parent's own landlord passes the check: NOT NULL on the other columns stops it.
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        sql(insert, [b.rows.landlord.pk, b.ids[ref.parent]])
    assert isinstance(caught.value.__cause__, psycopg.errors.NotNullViolation)
    assert count(ref.child) == before


@pytest.mark.django_db
def test_repointing_a_payment_at_another_landlords_invoice_or_posting_is_refused(a, b):
    payment = Payment.objects.get(pk=a.ids["payments_payment"])
    with pytest.raises(IntegrityError, match="payment_invoice_ref"), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(invoice_id=b.ids["invoices_invoice"])
    with pytest.raises(IntegrityError, match="payment_reversal_ref"), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(reversal_id=b.ids["ledger_ledgertransaction"])
    payment.refresh_from_db()
    assert (payment.invoice_id, payment.reversal_id) == (a.ids["invoices_invoice"], None)
    # A save that changes no reference (every column is in Django's UPDATE) still passes.
    payment.failure_message = "Declined"
    payment.save()
    Payment.objects.filter(pk=payment.pk).update(reversal_id=a.ids["ledger_ledgertransaction"])


@pytest.mark.django_db
def test_a_lease_cannot_move_to_another_landlords_unit(a, b):
    with pytest.raises(IntegrityError, match="lease_unit_ref"), transaction.atomic():
        Lease.objects.filter(pk=a.ids["tenants_lease"]).update(unit_id=b.ids["tenants_unit"])
    assert Lease.objects.get(pk=a.ids["tenants_lease"]).unit_id == a.ids["tenants_unit"]


@pytest.mark.django_db
def test_a_dunning_step_naming_another_landlords_payment_is_refused(a, b):
    with pytest.raises(IntegrityError, match="dunning_step_payment_ref"), transaction.atomic():
        DunningStep.objects.create(
            landlord=a.rows.landlord,
            invoice=a.rows.invoice,
            tenant=a.rows.tenant,
            payment_id=b.ids["payments_payment"],
            key="retry+1",
            action="retry",
        )
    assert not DunningStep.objects.exists()


@pytest.mark.django_db
@pytest.mark.django_db
def test_a_billing_run_issue_cannot_name_another_landlords_lease(a, b):
    insert = (
        "INSERT INTO invoices_billingrunissue (created_at, run_id, lease_id, kind, message)"
        " VALUES (now(), %s, %s, 'error', 'No charges')"
    )
    refused_as("run_issue_lease_ref", insert, [a.rows.run.pk, b.rows.lease.pk])
    assert sql(insert, [a.rows.run.pk, a.rows.lease.pk]) == 1


def test_a_lease_cannot_list_another_landlords_tenant(a, b):
    lease = a.rows.lease
    with pytest.raises(IntegrityError, match="lease_tenant_ref"), transaction.atomic():
        lease.tenants.add(b.rows.tenant)
    with pytest.raises(IntegrityError, match="lease_tenant_ref"), transaction.atomic():
        sql(
            "UPDATE tenants_lease_tenants SET tenant_id = %s WHERE lease_id = %s",
            [b.rows.tenant.pk, lease.pk],
        )
    lease.tenants.add(TenantFactory(landlord=a.rows.landlord))
    assert sorted(t.landlord_id for t in lease.tenants.all()) == [a.rows.landlord.pk] * 2


# --- rows never move between landlords ----------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "table",
    [
        "tenants_property",
        "tenants_unit",
        "tenants_lease",
        "tenants_tenant",
        "invoices_invoice",
        "payments_payment",
        "payments_payout",
        "dunning_dunningpolicy",
    ],
)
def test_a_row_cannot_move_to_another_landlord(a, b, table):
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        sql(
            f"UPDATE {table} SET landlord_id = %s WHERE id = %s",
            [b.rows.landlord.pk, a.ids[table]],
        )
    assert "rows never move between landlords" in str(caught.value) or (
        "never change" in str(caught.value)
    )
    still = f"SELECT 1 FROM {table} WHERE id = %s AND landlord_id = %s"
    assert sql(still, [a.ids[table], a.rows.landlord.pk]) == 1


@pytest.mark.django_db
def test_a_payment_cannot_move_even_with_its_references_cleared(a, b):
    """The landlord guard alone: no reference of the row names anything of A's now."""
    Payment.objects.filter(pk=a.ids["payments_payment"]).update(invoice=None)
    with pytest.raises(IntegrityError, match="rows never move"), transaction.atomic():
        sql(
            "UPDATE payments_payment SET landlord_id = %s, tenant_id = %s WHERE id = %s",
            [b.rows.landlord.pk, b.rows.tenant.pk, a.ids["payments_payment"]],
        )


# --- the statement checks added with these ------------------------------------------


@pytest.mark.django_db
def test_an_account_of_another_landlords_tenant_is_refused(a, b):
    with pytest.raises(IntegrityError, match="ledger_account_tenant_ref"), transaction.atomic():
        Account.objects.create(
            landlord=a.rows.landlord,
            code=AccountCode.RECEIVABLE,
            kind=AccountKind.ASSET,
            currency=a.rows.invoice.currency,
            tenant=b.rows.tenant,
        )
    assert not Account.objects.filter(landlord=a.rows.landlord, tenant=b.rows.tenant).exists()


@pytest.mark.django_db
def test_a_late_fee_invoice_adjusting_another_landlords_invoice_is_refused(a, b):
    with pytest.raises(IntegrityError, match="invoice_adjusts_ref"), transaction.atomic():
        InvoiceFactory(
            lease=a.rows.lease,
            tenant=a.rows.tenant,
            kind=InvoiceKind.LATE_FEE,
            adjusts_id=b.ids["invoices_invoice"],
        )
    # An invoice that only a late fee references cannot be deleted from under it.
    january = InvoiceFactory(
        lease=a.rows.lease,
        tenant=a.rows.tenant,
        period_start=date(2027, 1, 1),
        period_end=date(2027, 2, 1),
        issue_date=date(2027, 1, 1),
        due_date=date(2027, 1, 6),
    )
    fee = InvoiceFactory(
        lease=a.rows.lease, tenant=a.rows.tenant, kind=InvoiceKind.LATE_FEE, adjusts=january
    )
    assert fee.adjusts_id == january.pk
    refused_as("invoice_adjusts_ref", "DELETE FROM invoices_invoice WHERE id = %s", [january.pk])
    assert Invoice.objects.filter(pk=january.pk).exists()


# --- the migrations refuse to start from crossed rows --------------------------------


@pytest.mark.django_db
def test_the_migration_check_finds_rows_written_before_the_checks(a, b):
    ref = next(r for r in ROW_REFERENCES if r.name == "payment_invoice_ref")
    sql(existing_rows_check_sql(ROW_REFERENCES))  # nothing crossed yet
    sql("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses to run with checks pending
    sql("ALTER TABLE payments_payment DISABLE TRIGGER payments_payment_same_landlord_update")
    try:
        Payment.objects.filter(pk=a.ids["payments_payment"]).update(
            invoice_id=b.ids["invoices_invoice"]
        )
    finally:
        sql("ALTER TABLE payments_payment ENABLE TRIGGER payments_payment_same_landlord_update")
    refused_as(ref.name, existing_rows_check_sql(ROW_REFERENCES))


@pytest.mark.django_db
def test_the_migration_check_finds_link_rows_written_before_the_checks(a, b):
    lease_tenants = _migration("tenants", "0003_same_landlord_rows").LEASE_TENANTS
    sql(existing_pairs_check_sql(*lease_tenants))  # nothing crossed yet
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    sql(
        "ALTER TABLE tenants_lease_tenants DISABLE TRIGGER tenants_lease_tenants_same_landlord_insert"
    )
    sql(
        "INSERT INTO tenants_lease_tenants (lease_id, tenant_id) VALUES (%s, %s)",
        [a.rows.lease.pk, b.rows.tenant.pk],
    )
    refused_as("lease_tenant_ref", existing_pairs_check_sql(*lease_tenants))
