"""Invoice test helpers. Invoices come from the real billing run (so their numbers,
lines and ledger postings are what production writes); outbox rows from a factory."""

from __future__ import annotations

from datetime import date

import factory

from invoices.models import Channel, Invoice, InvoiceSettings, Notification, TaxRate
from invoices.services import billing_run_execute
from tenants.models import ChargeFrequency, ChargeKind, Landlord, Lease
from tests.factories import (
    ChargeFactory,
    LeaseFactory,
    PropertyFactory,
    TenantFactory,
    UnitFactory,
)

PERIOD = date(2026, 12, 1)
AS_OF = date(2026, 12, 31)


def lease_with_charges(
    *,
    landlord: Landlord,
    renter: str,
    email: str | None = None,
    language: str = "en",
    rent_minor: int = 120_000,
    parking_minor: int | None = None,
    one_off: tuple[str, int] | None = None,
    due_days: int = 5,
    property_name: str | None = None,
) -> Lease:
    """A lease from 2026-01-01 with monthly rent (and optionally parking and a one-off
    charge dated in December 2026)."""
    prop = PropertyFactory(
        landlord=landlord,
        **(
            {"name": property_name, "address_line1": property_name, "postal_code": "10435"}
            if property_name
            else {}
        ),
    )
    unit = UnitFactory(property=prop)
    tenant = TenantFactory(
        landlord=landlord,
        full_name=renter,
        email=email if email is not None else f"{renter.split()[0].lower()}@example.test",
        language=language,
    )
    lease = LeaseFactory(unit=unit, tenants=[tenant], due_days=due_days)
    ChargeFactory(lease=lease, description="Monthly rent", amount_minor=rent_minor)
    if parking_minor:
        ChargeFactory(
            lease=lease,
            kind=ChargeKind.PARKING,
            description="Parking space P12",
            amount_minor=parking_minor,
        )
    if one_off:
        description, amount = one_off
        ChargeFactory(
            lease=lease,
            kind=ChargeKind.OTHER,
            description=description,
            amount_minor=amount,
            frequency=ChargeFrequency.ONE_OFF,
            start_date=date(2026, 12, 10),
        )
    return lease


def bill_december(*, landlord: Landlord) -> list[Invoice]:
    """Run the landlord's December 2026 billing run, dated on schedule whatever today is;
    its invoices, oldest lease first."""
    billing_run_execute(
        landlord=landlord, period_start=PERIOD, as_of=AS_OF, started_by="test", on_schedule=True
    )
    return list(
        Invoice.objects.for_landlord(landlord).filter(period_start=PERIOD).order_by("lease_id")
    )


def tax_rate(*, landlord: Landlord, kind: str, rate_bp: int) -> TaxRate:
    return TaxRate.objects.create(landlord=landlord, kind=kind, rate_bp=rate_bp)


def emails_off(*, landlord: Landlord) -> None:
    """The billing run then writes no outbox rows (tests that add their own)."""
    InvoiceSettings.objects.update_or_create(landlord=landlord, defaults={"send_emails": False})


class NotificationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Notification

    invoice = None
    tenant = factory.SubFactory(TenantFactory)
    landlord = factory.SelfAttribute("tenant.landlord")
    kind = "invoice_issued"
    channel = Channel.EMAIL
    dedupe_key = factory.Sequence(lambda n: f"test:{n}")
    to_address = factory.SelfAttribute("tenant.email")
