"""`manage.py billing_run --landlord SLUG --period 2026-12 [--as-of 2026-12-01]`:
run one landlord's month synchronously through the same services as the Celery path."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from invoices import selectors, services
from tenants.models import Landlord
from tenants.query import FIRST_YEAR, LAST_YEAR, in_calendar, month_start


def _month(text: str) -> date:
    month = month_start(text)
    if month is None:
        raise CommandError(
            f"--period must be a month like 2026-12 (years {FIRST_YEAR}-{LAST_YEAR}), not {text!r}"
        )
    return month


def _day(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or not in_calendar(day):
        raise CommandError(
            f"--as-of must be a date like 2026-12-01 (years {FIRST_YEAR}-{LAST_YEAR}), not {text!r}"
        )
    return day


class Command(BaseCommand):
    help = "Bill one landlord's month now (idempotent: a second run creates nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--landlord", required=True, help="landlord slug")
        parser.add_argument("--period", required=True, help="month, e.g. 2026-12")
        parser.add_argument(
            "--as-of",
            help="bill leases whose issue day is on or before this date "
            "(default: every lease of the month)",
        )
        parser.add_argument(
            "--on-schedule",
            action="store_true",
            help="date every invoice on its issue day even if that has passed (importing "
            "history); by default an invoice written late is dated today and due after the "
            "lease's due days",
        )

    def handle(self, *args, landlord, period, as_of, on_schedule, **options):
        period_start = _month(period)
        as_of_date = _day(as_of) if as_of else date(9999, 12, 31)
        # A NUL byte cannot be in any slug (PostgreSQL text refuses it): no such landlord.
        found = None if "\x00" in landlord else Landlord.objects.filter(slug=landlord).first()
        if found is None:
            raise CommandError(f"--landlord: no landlord with slug {landlord!r}")
        before = selectors.billing_run_invoice_count(landlord=found, period_start=period_start)
        run = services.billing_run_execute(
            landlord=found,
            period_start=period_start,
            as_of=as_of_date,
            started_by="command",
            on_schedule=on_schedule,
        )
        created = run.invoices_created - before
        if before and not created:
            self.stdout.write(f"{period} was already run for {found.slug}: no new invoices.")
        self.stdout.write(
            f"{found.slug} {period}: {run.status}; {run.leases_due} leases due, {run.invoices_created} invoices "
            f"({created} new), {run.skipped} skipped, {run.failed} failed"
        )
        for issue in run.issues.select_related("lease").order_by("lease_id"):
            self.stdout.write(f"  lease {issue.lease_id}: {issue.kind}: {issue.message}")
