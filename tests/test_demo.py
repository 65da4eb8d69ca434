"""The demo `make run` seeds: tenants at different dunning stages, built by the real
engine, and a second seed that adds nothing."""

import io
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.management import call_command

from dunning.models import DunningStep, StepStatus, TenantDunning
from invoices.models import Invoice, InvoiceKind
from ledger.models import LedgerCheck
from ledger.selectors import ledger_verify, trial_balance
from tenants.models import Landlord

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def seeded(db):
    with time_machine.travel(NOW, tick=False):
        call_command("seed_demo", stdout=io.StringIO())
    return Landlord.objects.filter(slug__in=["spree-living", "hudson-homes"])


def test_demo_tenants_stand_at_different_dunning_stages_and_reseeding_adds_nothing(seeded):
    for landlord in seeded:
        steps = DunningStep.objects.for_landlord(landlord)
        states = TenantDunning.objects.for_landlord(landlord)
        assert states.filter(escalated_at__isnull=False).exists()
        assert states.filter(paused=True).exists()
        assert steps.filter(action="late_fee", status=StepStatus.DONE).exists()
        assert steps.filter(status=StepStatus.SKIPPED, detail__startswith="Dunning paused").exists()
        assert Invoice.objects.for_landlord(landlord).filter(kind=InvoiceKind.LATE_FEE).exists()
        assert trial_balance(landlord=landlord).is_balanced
        assert ledger_verify(landlord=landlord).ok

    # The tenant who paid on day 6 got the notices and the fee up to day 5, nothing after.
    spree = seeded.get(slug="spree-living")
    late_payer = [
        invoice
        for invoice in Invoice.objects.for_landlord(spree).filter(kind=InvoiceKind.RENT)
        if set(DunningStep.objects.filter(invoice=invoice).values_list("key", flat=True))
        == {"reminder-3", "due_notice+0", "overdue_notice+1", "late_fee+5"}
    ]
    assert late_payer

    # Seeding again (every `make run` does) adds nothing.
    counts = (DunningStep.objects.count(), Invoice.objects.count())
    with time_machine.travel(NOW, tick=False):
        call_command("seed_demo", stdout=io.StringIO())
    assert (DunningStep.objects.count(), Invoice.objects.count()) == counts


def test_the_demo_ledgers_are_shown_checked(seeded):
    checks = LedgerCheck.objects.filter(landlord__in=seeded)
    assert sorted(checks.values_list("landlord__slug", "ok")) == [
        ("hudson-homes", True),
        ("spree-living", True),
    ]
