"""Ending a lease after billing runs alongside the other writers of the same rows:
dunning's late fee (tenant → invoice → number counter) and the draft review (run →
counter). `lease_end_and_rebill` takes its locks in that same order and decides on
the invoices it read under them, so neither a deadlock nor an issued invoice whose
lines were rewritten can happen (decision 0017)."""

import threading
import time
from datetime import UTC, date, datetime

import pytest
from django.db import connection, connections, transaction

from dunning.services import _lock
from invoices import services as invoice_services
from tests.invoices.factories import bill_december, lease_with_charges

TIMEOUT = 3


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_lease_end_and_a_late_fee_on_the_same_tenant_do_not_deadlock(
    landlord, other_landlord, owner, time_machine
):
    time_machine.move_to(datetime(2026, 12, 20, 10, tzinfo=UTC), tick=True)
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover", rent_minor=93_000)
    (december,) = bill_december(landlord=landlord)
    errors: list[BaseException] = []
    tenant_locked = threading.Event()

    def dunning_late_fee():  # what dunning.services._take → _late_fee does
        try:
            with transaction.atomic():
                invoice = _lock(december.pk)  # tenant, then invoice
                tenant_locked.set()
                deadline = time.monotonic() + TIMEOUT
                while not _someone_waits_for_a_lock() and time.monotonic() < deadline:
                    time.sleep(0.01)
                invoice_services.late_fee_invoice_issue(
                    invoice=invoice,
                    amount_minor=2_500,
                    description="Late fee",
                    issue_date=date(2026, 12, 11),
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def end_lease():
        try:
            tenant_locked.wait(TIMEOUT)
            invoice_services.lease_end_and_rebill(
                landlord=landlord,
                lease=lease,
                end_date=date(2026, 12, 16),
                reason="Moved out",
                actor=owner,
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=dunning_late_fee), threading.Thread(target=end_lease)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


@pytest.mark.django_db(transaction=True)
def test_a_draft_issued_while_the_lease_is_ended_is_not_rewritten_under_its_posting(
    landlord, other_landlord, owner, time_machine, monkeypatch
):
    """A reviewer issues the run while the lease is being ended: whichever goes first,
    an issued invoice's lines always agree with its total and its posting."""
    from invoices import rules
    from invoices.models import BillingRun, Invoice, InvoiceLine, InvoiceSettings, InvoiceState
    from invoices.selectors import invoice_balances

    time_machine.move_to(datetime(2026, 12, 20, 10, tzinfo=UTC), tick=True)
    InvoiceSettings.objects.update_or_create(landlord=landlord, defaults={"review_drafts": True})
    lease = lease_with_charges(landlord=landlord, renter="Ann Mover", rent_minor=93_000)
    (draft,) = bill_december(landlord=landlord)
    run = BillingRun.objects.get(landlord=landlord)
    errors: list[BaseException] = []
    read = threading.Event()
    issued = threading.Event()
    real = rules.lines_after_lease_end

    def slow_rule(*args, **kwargs):  # runs after the invoices were read
        read.set()
        issued.wait(TIMEOUT)
        return real(*args, **kwargs)

    monkeypatch.setattr(rules, "lines_after_lease_end", slow_rule)

    def end_lease():
        try:
            invoice_services.lease_end_and_rebill(
                landlord=landlord,
                lease=lease,
                end_date=date(2026, 12, 16),
                reason="Moved out",
                actor=owner,
            )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def reviewer_issues():
        try:
            read.wait(TIMEOUT)
            invoice_services.billing_run_issue(run=run, actor=owner)
        except BaseException as exc:
            errors.append(exc)
        finally:
            issued.set()
            connections.close_all()

    threads = [threading.Thread(target=end_lease), threading.Thread(target=reviewer_issues)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    draft.refresh_from_db()
    lines = sum(ln.amount_minor + ln.tax_minor for ln in InvoiceLine.objects.filter(invoice=draft))
    posted = invoice_balances(landlord=landlord, invoices=[draft])[draft.pk]
    assert not errors, errors
    assert draft.state == InvoiceState.ISSUED
    # Either the lease end saw an issued invoice (void + replace) or it failed; never
    # an issued invoice whose lines disagree with its total and posting.
    assert lines == draft.total_minor == posted or Invoice.objects.filter(adjusts=draft).exists()
