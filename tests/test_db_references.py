"""The set-based references of `billing_site.db_references` (invoices migration 0004,
ledger migration 0005), exercised by writing around the ORM's own checks.

The month-end tables have no FK constraint on these columns: statement-level triggers
check every inserted or updated row's parents (and that they are the row's landlord's),
and guards on the parents refuse what would orphan a child. Each refused statement runs
in its own savepoint, and the test checks that the database is exactly as before.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime

import factory
import psycopg
import pytest
from django.db import IntegrityError, NotSupportedError, OperationalError, connection, transaction

from invoices.models import BillingRun, Invoice, InvoiceLine, Notification
from invoices.services import _CopyRows
from ledger.models import LedgerEntry, LedgerTransaction
from ledger.services import EntrySpec, transaction_post
from tenants.models import Landlord, Lease, Tenant
from tests.factories import LandlordFactory, LeaseFactory, TenantFactory
from tests.invoices.factories import PERIOD, NotificationFactory
from tests.ledger.factories import WHEN, Books, books_for

MISSING = 2**40  # an id no row has
TIMEOUT = 10  # seconds: the bound of every wait in the concurrency tests

# Every table a refused statement could have touched.
TABLES = (
    "tenants_landlord",
    "tenants_tenant",
    "tenants_lease",
    "tenants_lease_tenants",
    "invoices_billingrun",
    "invoices_billingrunissue",
    "invoices_invoice",
    "invoices_invoiceline",
    "invoices_notification",
    "ledger_ledgertransaction",
    "ledger_ledgerentry",
)


class BillingRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = BillingRun

    landlord = factory.SubFactory(LandlordFactory)
    period_start = PERIOD
    period_end = date(2027, 1, 1)
    started_at = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    started_by = "test"


class InvoiceFactory(factory.django.DjangoModelFactory):
    """A draft December 2026 rent invoice of `lease`, billed to `tenant`."""

    class Meta:
        model = Invoice

    lease = factory.SubFactory(LeaseFactory)
    landlord = factory.SelfAttribute("lease.landlord")
    tenant = factory.LazyAttribute(lambda o: o.lease.tenants.first())
    billing_run = None
    period_start = PERIOD
    period_end = date(2027, 1, 1)
    issue_date = PERIOD
    due_date = date(2026, 12, 6)
    currency = factory.SelfAttribute("lease.currency")
    subtotal_minor = 120_000
    total_minor = 120_000
    bill_to_name = factory.LazyAttribute(lambda o: o.tenant.full_name)


class InvoiceLineFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = InvoiceLine

    invoice = factory.SubFactory(InvoiceFactory)
    position = 1
    kind = "rent"
    description = "Monthly rent"
    unit_amount_minor = 120_000
    amount_minor = 120_000


@dataclass
class Rows:
    """One landlord's rows of every kind the references connect."""

    landlord: Landlord
    tenant: Tenant
    lease: Lease
    run: BillingRun
    invoice: Invoice
    line: InvoiceLine
    notification: Notification
    books: Books
    txn: LedgerTransaction


def rows_for(landlord: Landlord) -> Rows:
    tenant = TenantFactory(landlord=landlord)
    lease = LeaseFactory(unit__property__landlord=landlord, tenants=[tenant])
    run = BillingRunFactory(landlord=landlord)
    invoice = InvoiceFactory(lease=lease, tenant=tenant, billing_run=run)
    line = InvoiceLineFactory(invoice=invoice)
    notification = NotificationFactory(tenant=tenant, invoice=invoice)
    books = books_for(landlord, tenant)
    doc = {"document_kind": "invoice", "document_id": invoice.pk}
    txn = transaction_post(
        landlord=landlord,
        idempotency_key=f"invoice-{invoice.pk}",
        effective_at=WHEN,
        description="Invoice",
        entries=[
            EntrySpec(books.receivable, 120_000, books.currency, lease_id=lease.pk, **doc),
            EntrySpec(
                books.rent_income,
                -120_000,
                books.currency,
                tenant_id=tenant.pk,
                lease_id=lease.pk,
                **doc,
            ),
        ],
        **doc,
    )
    return Rows(landlord, tenant, lease, run, invoice, line, notification, books, txn)


@pytest.fixture
def b(other_landlord) -> Rows:
    """Landlord B's rows: the ids a cross-landlord reference would borrow."""
    return rows_for(other_landlord)


@pytest.fixture
def a(landlord, b) -> Rows:
    return rows_for(landlord)


def state() -> dict[str, tuple[int, str]]:
    """Every row of every table involved, as (count, digest of the rows' text)."""
    found = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))"
                f" FROM {table} t"
            )
            found[table] = cursor.fetchone()
    return found


@contextmanager
def refused(constraint: str | None, match: str | None = None):
    """The block fails with foreign_key_violation (naming `constraint`, if given) and
    leaves the database as it was."""
    before = state()
    with pytest.raises(IntegrityError, match=match or constraint) as caught, transaction.atomic():
        yield
    cause = caught.value.__cause__
    assert isinstance(cause, psycopg.errors.ForeignKeyViolation), cause
    if constraint is not None:
        assert cause.diag.constraint_name == constraint
    assert state() == before


def sql(statement: str, params=()) -> int:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.rowcount


def saved(obj, **ids):
    """Save a built row after pointing its references at `ids` (attnames)."""
    for name, value in ids.items():
        setattr(obj, name, value)
    obj.save()
    return obj


def check_now() -> None:
    """Run the pending deferred checks (TRUNCATE refuses to run while any are pending)."""
    sql("SET CONSTRAINTS ALL IMMEDIATE")
    sql("SET CONSTRAINTS ALL DEFERRED")


# --- child side: inserts ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "constraint"),
    [
        ("landlord_id", "invoice_landlord_ref"),
        ("lease_id", "invoice_lease_ref"),
        ("tenant_id", "invoice_tenant_ref"),
        ("billing_run_id", "invoice_billing_run_ref"),
    ],
)
def test_an_invoice_referencing_a_missing_row_is_refused(a, column, constraint):
    new = InvoiceFactory.build(
        lease=a.lease, tenant=a.tenant, billing_run=a.run, period_start=date(2027, 1, 1)
    )
    new.period_end = date(2027, 2, 1)
    with refused(constraint):
        saved(new, **{column: MISSING})
    assert not Invoice.objects.filter(period_start=date(2027, 1, 1)).exists()


@pytest.mark.django_db
def test_an_invoice_line_of_a_missing_invoice_is_refused(a):
    with refused("line_invoice_ref"):
        saved(InvoiceLineFactory.build(invoice=a.invoice), invoice_id=MISSING)


@pytest.mark.django_db
def test_one_bad_row_refuses_the_whole_multi_row_insert(a):
    good = InvoiceLineFactory.build(invoice=a.invoice, position=2)
    bad = InvoiceLineFactory.build(invoice=a.invoice, position=3)
    bad.invoice_id = MISSING
    with refused("line_invoice_ref"):
        InvoiceLine.objects.bulk_create([good, bad])
    assert list(a.invoice.lines.values_list("position", flat=True)) == [a.line.position]


@pytest.mark.django_db
def test_a_copy_of_lines_of_a_missing_invoice_is_refused(a):
    """The billing run writes with COPY: statement triggers see COPY's rows too."""
    lines = _CopyRows(InvoiceLine, skip=("id",))
    for invoice_id, position in ((a.invoice.pk, 2), (MISSING, 1)):
        lines.add(
            invoice_id=invoice_id,
            position=position,
            kind="rent",
            description="Rent",
            unit_amount_minor=100,
            amount_minor=100,
        )
    with refused("line_invoice_ref"):
        lines.write()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "constraint"),
    [
        ("landlord_id", "notification_landlord_ref"),
        ("tenant_id", "notification_tenant_ref"),
        ("invoice_id", "notification_invoice_ref"),
    ],
)
def test_a_notification_referencing_a_missing_row_is_refused(a, column, constraint):
    new = NotificationFactory.build(tenant=a.tenant, invoice=a.invoice, dedupe_key="new")
    with refused(constraint):
        saved(new, **{column: MISSING})


@pytest.mark.django_db
def test_a_ledger_transaction_of_a_missing_landlord_is_refused(a):
    with refused("ledger_transaction_landlord_ref"):
        LedgerTransaction.objects.create(
            landlord_id=MISSING,
            seq=1,
            idempotency_key="orphan",
            effective_at=WHEN,
            content_hash="a" * 64,
            prev_hash="0" * 64,
            hash="b" * 64,
        )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "constraint"),
    [("tenant_id", "ledger_entry_tenant_ref"), ("lease_id", "ledger_entry_lease_ref")],
)
def test_a_ledger_entry_referencing_a_missing_row_is_refused_at_statement_end(
    a, column, constraint
):
    """Before the ledger's own checks, which wait for COMMIT (this entry does not balance)."""
    with refused(constraint):
        LedgerEntry.objects.create(
            transaction=a.txn,
            landlord=a.landlord,
            account=a.books.bank,
            amount_minor=5,
            currency=a.books.currency,
            **{column: MISSING},
        )


@pytest.mark.django_db
def test_inserts_with_valid_references_are_stored(a, b):
    invoice = InvoiceFactory(
        lease=a.lease, tenant=a.tenant, billing_run=a.run, kind="late_fee", adjusts=a.invoice
    )
    InvoiceLineFactory(invoice=invoice)
    NotificationFactory(tenant=a.tenant, invoice=invoice)
    assert Invoice.objects.for_landlord(a.landlord).count() == 2
    assert Invoice.objects.for_landlord(b.landlord).count() == 1


# --- child side: another landlord's parents -----------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "constraint"),
    [
        ("lease", "invoice_lease_ref"),
        ("tenant", "invoice_tenant_ref"),
        ("run", "invoice_billing_run_ref"),
    ],
)
def test_an_invoice_with_another_landlords_parent_is_refused(a, b, field, constraint):
    column = {"lease": "lease_id", "tenant": "tenant_id", "run": "billing_run_id"}[field]
    new = InvoiceFactory.build(
        lease=a.lease, tenant=a.tenant, billing_run=a.run, period_start=date(2027, 1, 1)
    )
    new.period_end = date(2027, 2, 1)
    with refused(constraint, match=f"of landlord {a.landlord.pk}"):
        saved(new, **{column: getattr(b, field).pk})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "constraint"),
    [("tenant_id", "notification_tenant_ref"), ("invoice_id", "notification_invoice_ref")],
)
def test_a_notification_with_another_landlords_parent_is_refused(a, b, column, constraint):
    theirs = {"tenant_id": b.tenant.pk, "invoice_id": b.invoice.pk}[column]
    new = NotificationFactory.build(tenant=a.tenant, invoice=a.invoice, dedupe_key="new")
    with refused(constraint):
        saved(new, **{column: theirs})


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "constraint"),
    [("tenant_id", "ledger_entry_tenant_ref"), ("lease_id", "ledger_entry_lease_ref")],
)
def test_a_ledger_entry_with_another_landlords_parent_is_refused(a, b, column, constraint):
    theirs = {"tenant_id": b.tenant.pk, "lease_id": b.lease.pk}[column]
    with refused(constraint):
        sql(
            "INSERT INTO ledger_ledgerentry (transaction_id, landlord_id, account_id,"
            f" amount_minor, currency, {column}, document_kind)"
            " VALUES (%s, %s, %s, 5, %s, %s, '')",
            [a.txn.pk, a.landlord.pk, a.books.bank.pk, a.books.currency, theirs],
        )


# --- child side: updates ------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("column", "constraint"),
    [
        ("lease_id", "invoice_lease_ref"),
        ("tenant_id", "invoice_tenant_ref"),
        ("billing_run_id", "invoice_billing_run_ref"),
    ],
)
def test_repointing_an_invoice_at_another_landlords_parent_is_refused(a, b, column, constraint):
    # a lease of B's that has no December invoice yet (the unique key would refuse first)
    their_lease = Lease.objects.for_landlord(b.landlord).filter(invoices=None).first()
    theirs = {"lease_id": their_lease.pk, "tenant_id": b.tenant.pk, "billing_run_id": b.run.pk}
    with refused(constraint):
        Invoice.objects.filter(pk=a.invoice.pk).update(**{column: theirs[column]})
    with refused(constraint):
        sql(f"UPDATE invoices_invoice SET {column} = %s WHERE id = %s", [MISSING, a.invoice.pk])


@pytest.mark.django_db
def test_moving_a_notification_to_another_landlord_without_its_tenant_is_refused(a, b):
    with refused("notification_tenant_ref"):
        Notification.objects.filter(pk=a.notification.pk).update(landlord=b.landlord)


@pytest.mark.django_db
def test_an_upsert_that_repoints_a_notification_at_another_landlords_tenant_is_refused(a, b):
    """INSERT ... ON CONFLICT DO UPDATE: the UPDATE trigger sees the updated rows."""
    again = NotificationFactory.build(
        tenant=a.tenant, invoice=a.invoice, dedupe_key=a.notification.dedupe_key
    )
    again.tenant_id = b.tenant.pk
    with refused("notification_tenant_ref"):
        Notification.objects.bulk_create(
            [again],
            update_conflicts=True,
            unique_fields=["landlord", "dedupe_key"],
            update_fields=["tenant"],
        )


@pytest.mark.django_db
def test_ordinary_updates_of_referencing_rows_pass_the_checks(a, b):
    Invoice.objects.filter(pk=a.invoice.pk).update(bill_to_name="New name", billing_run=None)
    Notification.objects.filter(pk=a.notification.pk).update(status="sent", invoice=None)
    a.invoice.refresh_from_db()
    assert (a.invoice.bill_to_name, a.invoice.billing_run_id) == ("New name", None)
    b.invoice.refresh_from_db()
    assert b.invoice.billing_run_id == b.run.pk


# --- parent side: deletes -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "field", "constraint"),
    [
        ("tenants_landlord", "landlord", "invoice_landlord_ref"),
        ("tenants_lease", "lease", "invoice_lease_ref"),
        ("tenants_tenant", "tenant", "invoice_tenant_ref"),
        ("invoices_billingrun", "run", "invoice_billing_run_ref"),
        ("invoices_invoice", "invoice", "line_invoice_ref"),
    ],
)
def test_deleting_a_referenced_parent_is_refused(a, b, table, field, constraint):
    """Raw DELETE: Django's PROTECT would refuse first, in Python."""
    with refused(constraint):
        sql(f"DELETE FROM {table} WHERE id = %s", [getattr(a, field).pk])


@pytest.mark.django_db
def test_deleting_an_invoice_that_only_a_notification_references_is_refused(a):
    InvoiceLine.objects.filter(invoice=a.invoice).delete()
    with refused("notification_invoice_ref"):
        sql("DELETE FROM invoices_invoice WHERE id = %s", [a.invoice.pk])


@pytest.mark.django_db
def test_deleting_a_tenant_that_only_a_notification_references_is_refused(a):
    tenant = TenantFactory(landlord=a.landlord)
    NotificationFactory(tenant=tenant)
    with refused("notification_tenant_ref"):
        sql("DELETE FROM tenants_tenant WHERE id = %s", [tenant.pk])


@pytest.mark.django_db
def test_deleting_a_landlord_that_only_a_ledger_transaction_references_is_refused(b):
    landlord = LandlordFactory()
    with refused("ledger_transaction_landlord_ref"):
        LedgerTransaction.objects.create(
            landlord=landlord,
            seq=1,
            idempotency_key="only",
            effective_at=WHEN,
            content_hash="a" * 64,
            prev_hash="0" * 64,
            hash="b" * 64,
        )
        sql("DELETE FROM tenants_landlord WHERE id = %s", [landlord.pk])
    assert Landlord.objects.filter(pk=landlord.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "constraint"),
    [("tenants_tenant", "ledger_entry_tenant_ref"), ("tenants_lease", "ledger_entry_lease_ref")],
)
def test_deleting_a_tenant_or_lease_that_only_ledger_entries_reference_is_refused(
    a, table, constraint
):
    tenant = TenantFactory(landlord=a.landlord)
    lease = LeaseFactory(unit__property__landlord=a.landlord, tenants=[])
    transaction_post(
        landlord=a.landlord,
        idempotency_key="deposit",
        effective_at=WHEN,
        description="Deposit",
        entries=[
            EntrySpec(a.books.bank, 50_000, a.books.currency, tenant_id=tenant.pk),
            EntrySpec(a.books.rent_income, -50_000, a.books.currency, lease_id=lease.pk),
        ],
    )
    parent = {"tenants_tenant": tenant, "tenants_lease": lease}[table]
    with refused(constraint):
        sql(f"DELETE FROM {table} WHERE id = %s", [parent.pk])


@pytest.mark.django_db
def test_deleting_unreferenced_parents_still_works(a, b):
    lease = LeaseFactory(unit__property__landlord=a.landlord, tenants=[])
    tenant = TenantFactory(landlord=a.landlord)
    run = BillingRunFactory(landlord=a.landlord, period_start=date(2027, 1, 1))
    landlord = LandlordFactory()
    invoice = InvoiceFactory(
        lease=a.lease,
        tenant=a.tenant,
        period_start=date(2027, 1, 1),
        period_end=date(2027, 2, 1),
    )
    for table, row in [
        ("tenants_lease", lease),
        ("tenants_tenant", tenant),
        ("invoices_billingrun", run),
        ("tenants_landlord", landlord),
        ("invoices_invoice", invoice),
    ]:
        assert sql(f"DELETE FROM {table} WHERE id = %s", [row.pk]) == 1
    assert not Lease.objects.filter(pk=lease.pk).exists()
    assert not Invoice.objects.filter(pk=invoice.pk).exists()
    check_now()  # the real FKs of the other tables agree: nothing was orphaned
    assert Invoice.objects.count() == 2


@pytest.mark.django_db
def test_djangos_cascade_deletes_an_invoices_lines_and_then_the_invoice(a, b):
    """No ON DELETE CASCADE in the database: Django deletes the children first."""
    Notification.objects.filter(invoice=a.invoice).delete()
    a.invoice.delete()
    assert not InvoiceLine.objects.filter(pk=a.line.pk).exists()
    assert Invoice.objects.get() == b.invoice


@pytest.mark.django_db
def test_a_delete_of_only_some_referenced_parents_is_refused_as_a_whole(a, b):
    """One statement deletes an unreferenced run and a referenced one: neither goes."""
    spare = BillingRunFactory(landlord=a.landlord, period_start=date(2027, 1, 1))
    with refused("invoice_billing_run_ref"):
        sql("DELETE FROM invoices_billingrun WHERE id = ANY(%s)", [[spare.pk, a.run.pk]])


# --- parent side: re-keying ---------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "field"),
    [("tenants_lease", "lease"), ("tenants_tenant", "tenant"), ("invoices_billingrun", "run")],
)
def test_moving_a_referenced_parent_to_another_landlord_is_refused(a, b, table, field):
    with refused(None, match=f'"{table}": id and landlord never change'):
        sql(
            f"UPDATE {table} SET landlord_id = %s WHERE id = %s",
            [b.landlord.pk, getattr(a, field).pk],
        )
    row = getattr(a, field)
    row.refresh_from_db()
    assert row.landlord_id == a.landlord.pk


@pytest.mark.django_db
def test_moving_a_referenced_invoice_to_another_landlord_is_refused(a, b):
    with refused(None, match='"invoices_invoice": id and landlord never change'):
        Invoice.objects.filter(pk=a.invoice.pk).update(landlord=b.landlord)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("table", "field"),
    [
        ("tenants_landlord", "landlord"),
        ("tenants_lease", "lease"),
        ("tenants_tenant", "tenant"),
        ("invoices_billingrun", "run"),
        ("invoices_invoice", "invoice"),
    ],
)
def test_changing_a_referenced_parents_id_is_refused(a, b, table, field):
    with refused(None, match="id and landlord never change"):
        sql(f"UPDATE {table} SET id = id + %s WHERE id = %s", [MISSING, getattr(a, field).pk])


@pytest.mark.django_db
def test_a_lease_cannot_change_landlord_even_before_anything_references_it(a, b):
    """Unconditional on purpose: a child's FOR KEY SHARE lock does not block an update of
    a non-key column, so "refuse only if referenced" could race a concurrent insert."""
    lease = LeaseFactory(unit__property__landlord=a.landlord, tenants=[])
    with refused(None, match='"tenants_lease": id and landlord never change'):
        sql("UPDATE tenants_lease SET landlord_id = %s WHERE id = %s", [b.landlord.pk, lease.pk])


@pytest.mark.django_db
def test_ordinary_updates_of_referenced_parents_still_work(a, b):
    assert sql("UPDATE tenants_lease SET due_days = 10 WHERE id = %s", [a.lease.pk]) == 1
    assert sql("UPDATE tenants_tenant SET full_name = 'Renamed' WHERE id = %s", [a.tenant.pk])
    assert sql("UPDATE tenants_landlord SET name = 'Renamed' WHERE id = %s", [a.landlord.pk])
    BillingRun.objects.filter(pk=a.run.pk).update(status="completed")
    # the landlord "changes" to itself: not a change
    assert sql("UPDATE tenants_lease SET landlord_id = landlord_id WHERE id = %s", [a.lease.pk])
    a.lease.refresh_from_db()
    b.lease.refresh_from_db()
    assert (a.lease.due_days, b.lease.due_days) == (10, 0)


# --- parent side: TRUNCATE ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("statement", "error", "match"),
    [
        # real FKs (billing run issues) refuse first
        ("TRUNCATE invoices_billingrun", NotSupportedError, "foreign key"),
        # with them gone too, only the set-based reference is left to refuse
        (
            "TRUNCATE invoices_billingrun, invoices_billingrunissue",
            IntegrityError,
            'cannot truncate "invoices_billingrun" alone',
        ),
        # CASCADE follows real FKs only: the invoices stay, so the runs must
        (
            "TRUNCATE invoices_billingrun CASCADE",
            IntegrityError,
            'cannot truncate "invoices_billingrun" alone',
        ),
        (
            "TRUNCATE invoices_invoice CASCADE",
            IntegrityError,
            'cannot truncate "invoices_invoice" alone',
        ),
        ("TRUNCATE tenants_lease CASCADE", IntegrityError, 'cannot truncate "tenants_lease" alone'),
    ],
)
def test_truncating_a_referenced_parent_alone_is_refused_and_its_rows_stay(
    a, b, statement, error, match
):
    check_now()
    before = state()
    with pytest.raises(error, match=match), transaction.atomic():
        sql(statement)
    assert state() == before
    assert BillingRun.objects.count() == 2


@pytest.mark.django_db
def test_truncating_billing_runs_together_with_every_invoice_works(a, b):
    check_now()
    sql("UPDATE invoices_invoice SET billing_run_id = NULL")
    # the guard asks whether the invoice table has any row at all, not only referencing
    # ones; the nullable reference nulled is not enough, so the invoices go too
    with pytest.raises(IntegrityError, match="alone"), transaction.atomic():
        sql("TRUNCATE invoices_billingrun, invoices_billingrunissue")
    sql(
        "TRUNCATE invoices_billingrun, invoices_billingrunissue, invoices_invoice,"
        " invoices_invoiceline, invoices_notification CASCADE"
    )
    assert not BillingRun.objects.exists()


# --- isolation levels ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
def test_deleting_a_parent_is_refused_above_read_committed(a, b, level):
    """There the delete check's snapshot would be the transaction's and could miss a
    child committed concurrently, so even an unreferenced row cannot be deleted."""
    spare = BillingRunFactory(landlord=a.landlord, period_start=date(2027, 1, 1))
    for run in (a.run, spare):
        before = state()
        with (
            pytest.raises(IntegrityError, match="can only be deleted at READ COMMITTED") as caught,
            transaction.atomic(),
        ):
            sql(f"SET TRANSACTION ISOLATION LEVEL {level}")
            sql("DELETE FROM invoices_billingrun WHERE id = %s", [run.pk])
        assert isinstance(caught.value.__cause__, psycopg.errors.RestrictViolation)
        assert state() == before
    with transaction.atomic():
        sql(f"SET TRANSACTION ISOLATION LEVEL {level}")
        assert sql("DELETE FROM invoices_billingrun WHERE id = %s", [MISSING]) == 0
    # at READ COMMITTED the unreferenced run can go
    assert sql("DELETE FROM invoices_billingrun WHERE id = %s", [spare.pk]) == 1
    assert set(BillingRun.objects.values_list("pk", flat=True)) == {a.run.pk, b.run.pk}


# --- concurrency --------------------------------------------------------------------


@contextmanager
def second_connection(*, autocommit: bool = False):
    """A psycopg connection of its own to the test database, with Django's settings."""
    conn = psycopg.connect(**connection.get_connection_params(), autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


def blocked_by(observer: psycopg.Connection, pid: int) -> set[int]:
    """The backends waiting for a lock that backend `pid` holds."""
    rows = observer.execute(
        "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", [pid]
    ).fetchall()
    return {row[0] for row in rows}


def wait_until(condition) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


@pytest.mark.django_db(transaction=True)
def test_deleting_a_lease_waits_for_an_uncommitted_invoice_and_is_refused_after_it_commits(a, b):
    lease = LeaseFactory(unit__property__landlord=a.landlord, tenants=[])
    with second_connection() as deleter:
        deleter.execute("SET lock_timeout = '2s'")
        with transaction.atomic():
            InvoiceFactory(lease=lease, tenant=a.tenant)
            # the uncommitted invoice's reference check holds a lock the delete must wait for
            with pytest.raises(psycopg.errors.LockNotAvailable):
                deleter.execute("DELETE FROM tenants_lease WHERE id = %s", [lease.pk])
            deleter.rollback()
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="invoice_lease_ref"):
            deleter.execute("DELETE FROM tenants_lease WHERE id = %s", [lease.pk])
        deleter.rollback()
    assert Lease.objects.filter(pk=lease.pk).exists()
    assert Invoice.objects.filter(lease=lease).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_delete_blocked_by_an_inserter_sees_the_committed_invoice_and_is_refused(a, b):
    """The delete check runs on a fresh snapshot once the inserter's lock is released."""
    lease = LeaseFactory(unit__property__landlord=a.landlord, tenants=[])
    outcome: list[object] = []
    with second_connection() as deleter, second_connection(autocommit=True) as observer:
        deleter.execute(f"SET lock_timeout = '{TIMEOUT}s'")

        def delete() -> None:
            try:
                outcome.append(
                    deleter.execute("DELETE FROM tenants_lease WHERE id = %s", [lease.pk]).rowcount
                )
            except psycopg.Error as exc:
                outcome.append(exc)

        thread = threading.Thread(target=delete)
        try:
            with transaction.atomic():
                InvoiceFactory(lease=lease, tenant=a.tenant)
                inserter = connection.connection.info.backend_pid
                thread.start()
                assert wait_until(
                    lambda: deleter.info.backend_pid in blocked_by(observer, inserter)
                )
        finally:
            thread.join(TIMEOUT)
            deleter.rollback()
    [error] = outcome
    assert isinstance(error, psycopg.errors.ForeignKeyViolation), error
    assert error.diag.constraint_name == "invoice_lease_ref"
    assert Lease.objects.filter(pk=lease.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_an_invoice_blocked_by_a_delete_of_its_lease_is_refused_once_the_delete_commits(a, b):
    """The deleter saw no invoice; the inserter's lock waits for it, then finds no lease."""
    lease = LeaseFactory(unit__property__landlord=a.landlord, tenants=[])
    outcome: list[object] = []

    def insert() -> None:
        try:
            with transaction.atomic():
                outcome.append(InvoiceFactory(lease=lease, tenant=a.tenant))
        except IntegrityError as exc:
            outcome.append(exc)
        finally:
            connection.close()

    with second_connection() as deleter, second_connection(autocommit=True) as observer:
        assert deleter.execute("DELETE FROM tenants_lease WHERE id = %s", [lease.pk]).rowcount
        thread = threading.Thread(target=insert)
        thread.start()
        try:
            assert wait_until(lambda: blocked_by(observer, deleter.info.backend_pid))
            deleter.commit()
        finally:
            thread.join(TIMEOUT)
    [error] = outcome
    assert isinstance(error, IntegrityError), error
    assert error.__cause__.diag.constraint_name == "invoice_lease_ref"
    assert not Lease.objects.filter(pk=lease.pk).exists()
    assert not Invoice.objects.filter(lease_id=lease.pk).exists()
    assert Invoice.objects.count() == 2


# --- MERGE --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_merge_inserting_a_line_of_a_missing_invoice_is_refused(a):
    with refused("line_invoice_ref"):
        sql(
            "MERGE INTO invoices_invoiceline t USING (VALUES (%s::bigint)) v (invoice_id)"
            " ON false WHEN NOT MATCHED THEN INSERT (invoice_id, position, kind, description,"
            " quantity, unit_amount_minor, amount_minor, tax_rate_bp, tax_minor)"
            " VALUES (v.invoice_id, 9, 'rent', 'Rent', 1, 100, 100, 0, 0)",
            [MISSING],
        )


@pytest.mark.django_db
def test_a_merge_repointing_an_invoice_at_another_landlords_lease_is_refused(a, b):
    their_lease = Lease.objects.for_landlord(b.landlord).filter(invoices=None).first()
    with refused("invoice_lease_ref"):
        sql(
            "MERGE INTO invoices_invoice t USING (VALUES (%s::bigint, %s::bigint)) v (id, lease)"
            " ON t.id = v.id WHEN MATCHED THEN UPDATE SET lease_id = v.lease",
            [a.invoice.pk, their_lease.pk],
        )


@pytest.mark.django_db
def test_a_merge_deleting_a_referenced_billing_run_is_refused(a, b):
    with refused("invoice_billing_run_ref"):
        sql(
            "MERGE INTO invoices_billingrun t USING (VALUES (%s::bigint)) v (id)"
            " ON t.id = v.id WHEN MATCHED THEN DELETE",
            [a.run.pk],
        )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("level", ["REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("child", ["invoice", "notification"])
def test_an_insert_whose_snapshot_predates_a_committed_delete_of_its_parent_is_refused(
    a, b, level, child
):
    """Inserts are allowed above READ COMMITTED, where the check's snapshot is the
    transaction's: it still shows a parent deleted (and committed) since. A declared FK
    refuses with a serialization failure (its key-share lock finds the row deleted)."""
    lease = LeaseFactory(unit__property__landlord=a.landlord, tenants=[])
    tenant = TenantFactory(landlord=a.landlord)
    table, parent = {
        "invoice": ("tenants_lease", lease),
        "notification": ("tenants_tenant", tenant),
    }[child]
    with second_connection() as deleter:
        with (
            pytest.raises((IntegrityError, OperationalError)) as caught,
            transaction.atomic(),
        ):
            sql(f"SET TRANSACTION ISOLATION LEVEL {level}")
            sql("SELECT 1")  # the transaction's snapshot is taken here
            assert deleter.execute(f"DELETE FROM {table} WHERE id = %s", [parent.pk]).rowcount
            deleter.commit()
            if child == "invoice":
                InvoiceFactory(lease=lease, tenant=a.tenant)
            else:
                NotificationFactory(tenant=tenant)
        assert isinstance(
            caught.value.__cause__,
            psycopg.errors.ForeignKeyViolation | psycopg.errors.SerializationFailure,
        )
    assert not Invoice.objects.filter(lease_id=lease.pk).exists()
    assert not Notification.objects.filter(tenant_id=tenant.pk).exists()
