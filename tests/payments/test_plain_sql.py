"""The per-event path reads some rows with plain SQL and builds model instances with
`Model.from_db`, which skips field converters. These tests keep that honest: the
models read that way must have no converters but the ones handled, and the
instances must equal what the ORM loads."""

import json

import pytest
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    CharField,
    DateField,
    DecimalField,
    ForeignKey,
    IntegerField,
    JSONField,
    TextField,
)
from django.utils import timezone

from invoices.models import Invoice, Notification
from payments import services
from payments.models import Payment, PaymentAllocation, StripeEvent
from tenants.models import Landlord, Tenant

from .helpers import pi_event, start

RENT = 120_000


@pytest.mark.parametrize("model", [Payment, Landlord, Tenant, Invoice, StripeEvent])
def test_models_read_with_plain_sql_need_no_value_converters(model):
    handled = {"payload"} if model is StripeEvent else set()
    converted = [
        f.attname
        for f in model._meta.concrete_fields
        if f.get_db_converters(connection) and f.attname not in handled
    ]
    assert converted == []


def _fields(instance, names):
    return {name: getattr(instance, name) for name in names}


def test_a_locked_payment_equals_the_orm_one_with_landlord_and_tenant(world):
    payment = start(world, RENT, invoice=world.december)
    with transaction.atomic():
        found = services._payment_locked("intent", payment.stripe_payment_intent_id)
        orm = services._payments_locked().get(pk=payment.pk)
    names = [f.attname for f in Payment._meta.concrete_fields]
    assert _fields(found, names) == _fields(orm, names)
    assert found.landlord == orm.landlord and found.landlord.name == orm.landlord.name
    assert found.tenant == orm.tenant and found.tenant.email == orm.tenant.email
    assert services._payment_locked("intent", "pi_nobody") is None
    assert services._payment_locked("charge", "ch_nobody") is None


def test_open_invoices_carry_the_ledger_balance_and_load_other_fields_on_access(world):
    rows = services._open_invoices(
        landlord=world.landlord, tenant_id=world.december.tenant_id, currency="EUR"
    )
    assert [inv.pk for inv in rows] == [world.november.pk, world.december.pk]
    invoice = rows[1]
    assert invoice.balance_minor == world.december.total_minor
    assert invoice.number == world.december.number
    assert invoice.period_start == world.december.period_start  # deferred, loaded
    # The other landlord's tenant, asked for under this landlord: nothing.
    assert (
        services._open_invoices(
            landlord=world.landlord, tenant_id=world.other_tenant.pk, currency="EUR"
        )
        == []
    )


def test_a_claimed_event_has_its_payload_decoded(world):
    payment = start(world, RENT, invoice=world.december)
    event = pi_event(payment, "processing")
    services.stripe_event_store(event=event, raw_body=json.dumps(event), enqueue=False)
    with transaction.atomic():
        claimed = services._event_claim()
    assert claimed.event_id == event["id"]
    assert claimed.payload == event
    assert StripeEvent.objects.get(pk=claimed.pk).payload == claimed.payload


def test_open_invoices_tell_whether_the_tenant_holds_credit(world):
    credit: list[bool] = []
    services._open_invoices(
        landlord=world.landlord, tenant_id=world.tenant.pk, currency="EUR", credit=credit
    )
    assert credit == [False]


def test_credit_held_before_a_payment_pays_what_the_payment_leaves_open(world, deliver):
    """Credit from an overpayment, a new invoice, then a payment of what the portal
    asks (the invoice less the credit): its posting pays part of the invoice and
    applies the credit to the rest (no sweep needed)."""
    from datetime import date

    from tests.payments.conftest import bill
    from tests.payments.helpers import balance_of, books_ok

    first = start(world, 2 * RENT + 30_000)
    assert deliver(pi_event(first, "succeeded")).status_code == 200
    (january,) = bill(world.landlord, date(2027, 1, 1))
    credit: list[bool] = []
    services._open_invoices(
        landlord=world.landlord, tenant_id=world.tenant.pk, currency="EUR", credit=credit
    )
    assert credit == [True]

    due = start(world, RENT - 30_000, key="portal-2")
    assert deliver(pi_event(due, "succeeded")).status_code == 200
    assert balance_of(world.landlord, january) == 0
    assert (
        services.tenant_credit_balance(landlord=world.landlord, tenant=world.tenant, currency="EUR")
        == 0
    )
    books_ok(world.landlord)


def _prepared_statements() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


def test_the_per_event_statements_are_really_prepared(world):
    """Django's own cursors bind client-side: `prepare=True` on one of them is accepted
    and ignored. The per-event path must use a server-binding cursor, so PostgreSQL
    keeps each statement's plan for the connection."""
    payment = start(world, RENT, invoice=world.december)
    with transaction.atomic():
        services._payment_locked("intent", payment.stripe_payment_intent_id)
        services._payment_locked("intent", payment.stripe_payment_intent_id)
        services._lock_tenant(payment.tenant_id)
    prepared = _prepared_statements()
    assert any("FROM payments_payment p" in statement for statement in prepared)
    assert services._LOCK_TENANT_SQL.replace("%s", "$1") in prepared


@pytest.mark.parametrize("model", [Payment, PaymentAllocation, Notification])
def test_models_written_with_plain_sql_take_plain_values(model):
    # Every column of these is a type psycopg writes as the model holds it (no
    # get_db_prep_value of its own, such as JSON or Decimal).
    plain = (CharField, TextField, IntegerField, DateField, BooleanField, ForeignKey)
    odd = [
        f.attname
        for f in model._meta.concrete_fields
        if not isinstance(f, plain) or isinstance(f, JSONField | DecimalField)
    ]
    assert odd == []


def test_a_payment_saved_with_plain_sql_reads_back_as_it_was(world):
    payment = start(world, RENT, invoice=world.december)
    with transaction.atomic():
        locked = services._payment_locked("intent", payment.stripe_payment_intent_id)
        locked.status = "failed"
        locked.failure_code, locked.failure_message = "card_declined", "Déclinée"
        locked.stripe_state_at = timezone.now()
        locked.fee_minor = 42
        services._payment_save(locked)
    names = [f.attname for f in Payment._meta.concrete_fields]
    assert _fields(Payment.objects.get(pk=payment.pk), names) == _fields(locked, names)
    assert locked.updated_at > payment.updated_at


def test_allocations_and_receipt_rows_written_with_plain_sql(world):
    payment = start(world, RENT, invoice=world.december)
    plan = [(world.december, 100_000), (None, 20_000)]
    with transaction.atomic():
        services._allocations_insert(payment=payment, plan=plan)
    rows = list(payment.allocations.order_by("position"))
    assert [(a.invoice_id, a.amount_minor, a.position) for a in rows] == [
        (world.december.pk, 100_000, 0),
        (None, 20_000, 1),
    ]
    assert {a.landlord_id for a in rows} == {world.landlord.pk}
    assert all(a.created_at and a.updated_at for a in rows)

    def receipt(subject):
        return Notification(
            landlord_id=world.landlord.pk,
            dedupe_key="payment:test:receipt:email",
            kind="receipt",
            channel="email",
            tenant_id=payment.tenant_id,
            to_address="t@example.com",
            subject=subject,
            body="b",
        )

    first = services._notification_upsert(receipt("first"))
    again = services._notification_upsert(receipt("second"))
    stored = Notification.objects.get(pk=first)
    assert again == first
    assert (stored.subject, stored.status, stored.attempts) == ("first", "queued", 0)
