"""The demo portfolio `make run` shows: two landlords in different time zones and
currencies, ~50 units, leases that start mid-month, one that ended, vacant units,
and a staff login per role. Idempotent: keyed on slugs, names and emails."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.contrib.auth import get_user_model
from django.db import transaction

from tenants.models import (
    Charge,
    ChargeFrequency,
    ChargeKind,
    Landlord,
    Lease,
    LeaseStatus,
    Membership,
    Property,
    Role,
    Tenant,
    Unit,
)

DEMO_PASSWORD = "rentledger-demo"
DEMO_SLUGS = ("spree-living", "hudson-homes")

FIRST = [
    "Anna",
    "Ben",
    "Chloé",
    "David",
    "Emma",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jonas",
    "Kemal",
    "Lena",
    "Marta",
    "Noah",
    "Olga",
    "Paul",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Uwe",
    "Vera",
    "Wim",
]
LAST = [
    "Becker",
    "Dubois",
    "García",
    "Hansen",
    "Ivanova",
    "Jensen",
    "Keller",
    "Lopez",
    "Meyer",
    "Novak",
    "Olsen",
    "Petit",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Vogel",
    "Weber",
    "Young",
    "Zimmer",
]


@dataclass(frozen=True)
class DemoLandlord:
    slug: str
    name: str
    timezone: str
    currency: str
    city: str
    language: str
    rent_base: int  # minor units
    properties: tuple[str, ...]
    units_per_property: int


LANDLORDS = (
    DemoLandlord(
        "spree-living",
        "Spree Living GmbH",
        "Europe/Berlin",
        "EUR",
        "Berlin",
        "de",
        95000,
        ("Kastanienallee 12", "Oderberger Hof", "Wiener Straße 7"),
        10,
    ),
    DemoLandlord(
        "hudson-homes",
        "Hudson Homes LLC",
        "America/New_York",
        "USD",
        "New York",
        "en",
        210000,
        ("Bedford Lofts", "Garden Court"),
        10,
    ),
)


def _user(email: str):
    User = get_user_model()
    user, created = User.objects.get_or_create(username=email, defaults={"email": email})
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save()
    return user


@transaction.atomic
def seed_demo() -> list[str]:
    """Create (or top up) the demo data; returns the login lines to print."""
    logins = []
    for spec in LANDLORDS:
        landlord, _ = Landlord.objects.get_or_create(
            slug=spec.slug,
            defaults={
                "name": spec.name,
                "timezone": spec.timezone,
                "default_currency": spec.currency,
                "city": spec.city,
                "address_line1": "1 Demo Street",
                "email": f"office@{spec.slug}.example",
                "payment_instructions": "Pay online from your tenant portal, or by bank transfer quoting the invoice number.",
            },
        )
        for role in Role.values:
            email = f"{role}@{spec.slug}.example"
            Membership.objects.get_or_create(
                user=_user(email), landlord=landlord, defaults={"role": role}
            )
            logins.append(f"{email:<34} {role:<8} {spec.name}")
        _seed_portfolio(landlord, spec)
    return logins


def _seed_portfolio(landlord: Landlord, spec: DemoLandlord) -> None:
    n = 0
    for p_index, prop_name in enumerate(spec.properties):
        prop, _ = Property.objects.get_or_create(
            landlord=landlord,
            name=prop_name,
            defaults={
                "address_line1": prop_name,
                "city": spec.city,
                "postal_code": f"{10115 + p_index}",
            },
        )
        for u in range(1, spec.units_per_property + 1):
            n += 1
            unit, _ = Unit.objects.get_or_create(
                landlord=landlord,
                property=prop,
                name=f"Apt {u:02d}",
                defaults={"bedrooms": 1 + u % 3},
            )
            if Lease.objects.filter(unit=unit).exists():
                continue
            _seed_unit_leases(landlord, spec, unit, n)


def _seed_unit_leases(landlord: Landlord, spec: DemoLandlord, unit: Unit, n: int) -> None:
    if n % 10 == 0:
        return  # every tenth unit stays vacant
    rent = spec.rent_base + (n % 7) * 2500
    if n % 9 == 0:
        # A lease that ended last spring, followed by the current one.
        old = _lease(
            landlord,
            spec,
            unit,
            n + 100,
            date(2024, 3, 1),
            date(2026, 4, 1),
            rent - 5000,
            status=LeaseStatus.ENDED,
        )
        old.ended_reason = "Tenant moved out"
        old.save(update_fields=["ended_reason"])
        start = date(2026, 4, 15)  # mid-month move-in: first invoice prorated
    elif n % 5 == 0:
        start = date(2026, 11, 12)  # moved in this month, mid-month
    else:
        start = date(2025 - n % 3, 1 + n % 12, 1)
    lease = _lease(landlord, spec, unit, n, start, None, rent)
    if n % 4 == 0:
        Charge.objects.create(
            landlord=landlord,
            lease=lease,
            kind=ChargeKind.PARKING,
            description="Parking space",
            amount_minor=spec.rent_base // 10,
            currency=spec.currency,
            start_date=start,
        )
    if n % 6 == 0:
        Charge.objects.create(
            landlord=landlord,
            lease=lease,
            kind=ChargeKind.PET,
            description="Pet fee",
            amount_minor=2500,
            currency=spec.currency,
            start_date=start,
        )


def _lease(landlord, spec, unit, n, start, end, rent, status=LeaseStatus.ACTIVE) -> Lease:
    name = f"{FIRST[n % len(FIRST)]} {LAST[(n * 7) % len(LAST)]}"
    tenant, _ = Tenant.objects.get_or_create(
        landlord=landlord,
        full_name=name,
        defaults={
            "email": f"{name.lower().replace(' ', '.')}@tenant.example",
            "phone": f"+1555{n:07d}",
            "language": spec.language,
        },
    )
    lease = Lease.objects.create(
        landlord=landlord,
        unit=unit,
        start_date=start,
        end_date=end,
        currency=spec.currency,
        billing_day=1,
        due_days=5 if n % 2 else 3,
        deposit_minor=rent * 2,
        status=status,
    )
    lease.tenants.set([tenant])
    Charge.objects.create(
        landlord=landlord,
        lease=lease,
        kind=ChargeKind.RENT,
        description="Monthly rent",
        amount_minor=rent,
        currency=spec.currency,
        frequency=ChargeFrequency.MONTHLY,
        start_date=start,
        end_date=end,
    )
    return lease


def seed_billing(*, now) -> list[str]:
    """Bill the demo landlords' current month (each in its own time zone), through the
    same service the Celery beat uses; a second call creates nothing."""
    from invoices.services import billing_run_execute
    from ledger.services import ledger_check_record

    lines = []
    for landlord in Landlord.objects.filter(slug__in=DEMO_SLUGS).order_by("pk"):
        today = now.astimezone(landlord.tz).date()
        run = billing_run_execute(
            landlord=landlord,
            period_start=today.replace(day=1),
            as_of=today,
            started_by="demo",
            on_schedule=True,
        )
        # The Ledger page shows the chain checked, as it is every night.
        check = ledger_check_record(landlord=landlord, now=now)
        lines.append(
            f"{landlord.name}: billing run {run.period_start:%Y-%m} {run.status}, "
            f"{run.invoices_created} invoices; ledger {'verified' if check.ok else 'BROKEN'}"
        )
    return lines


# --- dunning stages -------------------------------------------------------------------

# Tenants (by their position among a landlord's leases, oldest first) whose earlier
# rent the demo leaves unpaid, so the arrears page and timelines have something to show.
DUNNING_STORIES = {
    3: "unpaid for two months: notices, late fees, final notice, escalated",
    7: "unpaid last month: overdue notices and a late fee",
    11: "paid last month on day 6, after the first notices and the late fee",
    15: "on a payment plan: dunning paused",
    19: "paid part of last month",
}


def _months_back(first: date, n: int) -> date:
    year, month = first.year, first.month - n
    while month < 1:
        year, month = year - 1, month + 12
    return date(year, month, 1)


def seed_dunning_history(*, now) -> list[str]:
    """Bill this month and the two before, pay most of what is due, and replay the
    dunning engine day by day up to `now`, so tenants stand at different dunning stages with real step
    records, notices and late fees. Idempotent: runs, payment keys and step claims
    are unique, so a second call adds nothing."""
    from datetime import UTC, datetime, time, timedelta

    from dunning.models import DunningStep, TenantDunning
    from dunning.services import dunning_tick, tenant_pause
    from invoices.models import Invoice, InvoiceKind, InvoiceState
    from invoices.selectors import invoice_balances
    from invoices.services import billing_run_execute
    from payments.models import Payment
    from payments.services import manual_payment_record

    lines = []
    late_payments: list[tuple[date, dict]] = []
    earliest: date | None = None
    for landlord in Landlord.objects.filter(slug__in=DEMO_SLUGS).order_by("pk"):
        today = now.astimezone(landlord.tz).date()
        this_month = today.replace(day=1)
        leases = list(
            Lease.objects.for_landlord(landlord)
            .filter(status=LeaseStatus.ACTIVE)
            .order_by("start_date", "pk")
        )
        story_tenants = {
            n: lease.tenants.first() for n, lease in enumerate(leases) if n in DUNNING_STORIES
        }
        for back in (2, 1, 0):
            period = _months_back(this_month, back)
            billing_run_execute(
                landlord=landlord,
                period_start=period,
                as_of=today if back == 0 else period,
                started_by="demo",
                on_schedule=True,  # the demo's past months, as if billed on time
            )
            invoices = list(
                Invoice.objects.for_landlord(landlord)
                .filter(period_start=period, kind=InvoiceKind.RENT, state=InvoiceState.ISSUED)
                .select_related("tenant")
            )
            balances = invoice_balances(landlord=landlord, invoices=invoices)
            for invoice in invoices:
                earliest = min(earliest or invoice.due_date, invoice.due_date)
                story = next(
                    (n for n, t in story_tenants.items() if t and t.pk == invoice.tenant_id), None
                )
                due = balances[invoice.pk]
                payment = {
                    "landlord": landlord,
                    "tenant": invoice.tenant,
                    "currency": invoice.currency,
                    "method": "bank_transfer",
                    "reference": invoice.number,
                    "actor": None,
                    "invoice": invoice,
                    "idempotency_key": f"demo:{invoice.pk}",
                }
                if story in (3, 15) or (story == 7 and back == 1):
                    continue  # left unpaid
                if Payment.objects.filter(
                    landlord=landlord, idempotency_key=payment["idempotency_key"]
                ).exists():
                    continue  # seeded before: the key records that payment once
                if back == 0 and invoice.due_date > today:
                    continue  # not due yet: reminders are still ahead
                if story == 11 and back == 1:
                    paid_on = invoice.due_date + timedelta(days=6)
                    if due > 0:
                        late_payments.append((paid_on, {**payment, "amount_minor": due}))
                    continue
                if story == 19 and back == 1:
                    due //= 2
                if due > 0:
                    manual_payment_record(
                        **payment,
                        amount_minor=due,
                        received_on=invoice.due_date - timedelta(days=1),
                    )
        paused = TenantDunning.objects.filter(tenant=story_tenants.get(15), paused=True)
        if story_tenants.get(15) is not None and not paused.exists():
            tenant_pause(
                landlord=landlord,
                tenant=story_tenants[15],
                reason="Payment plan agreed: 3 instalments",
            )
        for n, text in DUNNING_STORIES.items():
            if story_tenants.get(n) is not None:
                lines.append(f"{landlord.name}: {story_tenants[n].full_name} {text}")
    if earliest is None or DunningStep.objects.filter(landlord__slug__in=DEMO_SLUGS).exists():
        return lines  # replayed before: from here on the hourly beat runs dunning
    # One tick a day at 15:00 UTC: inside the default sending window in Berlin (16:00)
    # and New York (10:00 or 11:00).
    day = earliest - timedelta(days=4)
    end = now.astimezone(UTC)
    while True:
        tick = datetime.combine(day, time(15, 0), tzinfo=UTC)
        if tick > end:
            break
        for paid_on, payment in late_payments:
            if paid_on == day:
                manual_payment_record(**payment, received_on=paid_on)
        dunning_tick(now=tick)
        day += timedelta(days=1)
    return lines
