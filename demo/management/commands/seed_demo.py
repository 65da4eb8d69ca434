from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from demo.portfolio import DEMO_PASSWORD, seed_billing, seed_demo, seed_dunning_history


class Command(BaseCommand):
    help = (
        "Create the demo landlords, portfolio, staff logins and this month's invoices (idempotent)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--no-billing", action="store_true", help="only the portfolio, no billing run"
        )

    def handle(self, *args, no_billing=False, **options):
        logins = seed_demo()
        if not no_billing:
            now = timezone.now()
            for line in seed_dunning_history(now=now):
                self.stdout.write(line)
            for line in seed_billing(now=now):
                self.stdout.write(line)
        run_dir = Path(settings.BASE_DIR) / ".data" / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "demo-logins.txt").write_text("\n".join(logins) + "\n")
        self.stdout.write(f"Demo data ready. Password for every demo login: {DEMO_PASSWORD}")
