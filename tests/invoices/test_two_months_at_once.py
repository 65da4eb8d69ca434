"""Two months' runs billing the same lease at once (a late December run beside the
January tick): the one-off charge and the meter usage are each billed once. The second
chunk waits for the first to commit on the charge (and unit) rows, then reads what the
first billed (invoices.services._rows_lock, decision 0019)."""

import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import connections, transaction

from invoices import services
from invoices.models import InvoiceLine, MeterReading
from tests.invoices.factories import lease_with_charges
from tests.invoices.test_lease_end_locks import TIMEOUT, _someone_waits_for_a_lock


@pytest.mark.django_db(transaction=True)
def test_a_one_off_and_metered_usage_are_billed_once_by_two_months_at_once(
    landlord, other_landlord, time_machine
):
    time_machine.move_to(datetime(2027, 1, 2, 10, tzinfo=UTC), tick=True)
    lease = lease_with_charges(
        landlord=landlord, renter="Ann Both", one_off=("Key replacement", 4_500)
    )
    for day, value in ((date(2026, 11, 30), "100"), (date(2026, 12, 20), "110")):
        MeterReading.objects.create(
            landlord=landlord,
            unit=lease.unit,
            meter="Cold water",
            reading_date=day,
            value=Decimal(value),
            rate_minor_per_unit=Decimal("100"),
        )
    errors: list[BaseException] = []
    december_billed = threading.Event()

    def bill(month: date, *, hold: bool):
        try:
            with transaction.atomic():
                services.billing_run_execute(
                    landlord=landlord,
                    period_start=month,
                    as_of=date(2027, 1, 2),
                    started_by="test",
                    on_schedule=True,
                )
                if hold:  # commit only once the other month waits for a lock
                    december_billed.set()
                    deadline = time.monotonic() + TIMEOUT
                    while not _someone_waits_for_a_lock() and time.monotonic() < deadline:
                        time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def january():
        december_billed.wait(TIMEOUT)
        bill(date(2027, 1, 1), hold=False)

    threads = [
        threading.Thread(target=bill, args=(date(2026, 12, 1),), kwargs={"hold": True}),
        threading.Thread(target=january),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors

    lines = InvoiceLine.objects.filter(invoice__lease=lease)
    assert lines.filter(description__startswith="Key replacement").count() == 1
    assert [
        (line.invoice.period_start, line.amount_minor) for line in lines.filter(kind="utility")
    ] == [(date(2026, 12, 1), 1_000)]
