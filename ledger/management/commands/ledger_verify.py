"""`manage.py ledger_verify [--landlord SLUG]`: recompute hash chains and trial balances."""

from django.core.management.base import BaseCommand, CommandError

from ledger.selectors import ledger_verify
from tenants.models import Landlord


class Command(BaseCommand):
    help = "Recompute every landlord's ledger hash chain and trial balance; exit 1 on any break."

    def add_arguments(self, parser):
        parser.add_argument("--landlord", metavar="SLUG", help="verify one landlord only")

    def handle(self, *args, landlord=None, **options):
        landlords = Landlord.objects.order_by("pk")
        if landlord:
            landlords = landlords.filter(slug=landlord)
            if not landlords.exists():
                raise CommandError(f"No landlord with slug {landlord!r}.")
        broken = 0
        for each in landlords.iterator():
            result = ledger_verify(landlord=each)
            if result.ok:
                self.stdout.write(
                    f"OK {each.slug}: {result.transactions_checked} transactions, "
                    f"head #{result.last_seq} {result.last_hash[:16]}"
                )
                continue
            broken += 1
            if result.chain_break is not None:
                b = result.chain_break
                self.stdout.write(
                    f"BREAK {each.slug}: seq {b.seq}, transaction {b.transaction_id}: {b.reason}"
                    f" (expected hash {b.expected_hash or '-'}, stored {b.stored_hash or '-'})"
                )
            if result.unbalanced_currencies:
                totals = ", ".join(
                    f"{c} {t:+d}" for c, t in sorted(result.unbalanced_currencies.items())
                )
                self.stdout.write(f"BREAK {each.slug}: trial balance is not zero: {totals}")
        if broken:
            raise CommandError(f"Ledger verification failed for {broken} landlord(s).")
