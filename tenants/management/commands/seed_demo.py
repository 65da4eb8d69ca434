from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from tenants.demo import DEMO_PASSWORD, seed_demo


class Command(BaseCommand):
    help = "Create the demo landlords, portfolio and staff logins (idempotent)."

    def handle(self, *args, **options):
        logins = seed_demo()
        run_dir = Path(settings.BASE_DIR) / ".data" / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "demo-logins.txt").write_text("\n".join(logins) + "\n")
        self.stdout.write(f"Demo data ready. Password for every demo login: {DEMO_PASSWORD}")
