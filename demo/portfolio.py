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

    lines = []
    for landlord in Landlord.objects.filter(slug__in=DEMO_SLUGS).order_by("pk"):
        today = now.astimezone(landlord.tz).date()
        run = billing_run_execute(
            landlord=landlord, period_start=today.replace(day=1), as_of=today, started_by="demo"
        )
        lines.append(
            f"{landlord.name}: billing run {run.period_start:%Y-%m} {run.status}, "
            f"{run.invoices_created} invoices"
        )
    return lines
