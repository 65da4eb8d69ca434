"""`manage.py stripe_events --reprocess-failed` (and friends): process stored Stripe
events again, or fetch the last days of events from the API."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from payments import services
from payments.models import EventStatus


class Command(BaseCommand):
    help = "Reprocess stored Stripe events, or recover missed ones from the Stripe API."

    def add_arguments(self, parser):
        parser.add_argument("--reprocess-failed", action="store_true", help="failed events")
        parser.add_argument(
            "--reprocess-unmatched", action="store_true", help="events for unknown objects"
        )
        parser.add_argument(
            "--reprocess-received", action="store_true", help="events never processed"
        )
        parser.add_argument(
            "--recover", action="store_true", help="list the last 3 days of events from Stripe"
        )
        parser.add_argument("--limit", type=int, default=None)

    def handle(self, *args, **options):
        statuses = [
            status
            for flag, status in (
                ("reprocess_failed", EventStatus.FAILED),
                ("reprocess_unmatched", EventStatus.UNMATCHED),
                ("reprocess_received", EventStatus.RECEIVED),
            )
            if options[flag]
        ]
        if not statuses and not options["recover"]:
            raise CommandError(
                "Say what to do: --reprocess-failed, --reprocess-unmatched, "
                "--reprocess-received or --recover."
            )
        if options["recover"]:
            found = services.stripe_events_recover(now=timezone.now())
            self.stdout.write(f"recovered {found} missed event(s)")
        if statuses:
            events = services.stripe_events_reprocess(statuses=statuses, limit=options["limit"])
            counts: dict[str, int] = {}
            for event in events:
                counts[event.status] = counts.get(event.status, 0) + 1
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none"
            self.stdout.write(f"reprocessed {len(events)} event(s): {summary}")
            for event in events:
                if event.status == EventStatus.FAILED:
                    first_line = event.error.splitlines()[0] if event.error else ""
                    self.stderr.write(f"  {event.event_id} {event.type}: {first_line}")
