"""Dunning test helpers: tenants in two time zones with a December invoice each, policy
shortcuts, a clock walk that ticks the engine, and a recording SMS backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta

from django.utils import timezone

from dunning import rules
from dunning.models import DunningPolicy, DunningStep
from dunning.rules import DEFAULT_RULES
from dunning.services import dunning_tick, policy_save
from invoices.models import Invoice, Notification
from invoices.notifications import notifications_retry_due
from payments.models import Method, SavedPaymentMethod, StripeCustomer
from tenants.models import Landlord, Tenant
from tests.invoices.factories import bill_december, emails_off, lease_with_charges

DUE = date(2026, 12, 6)  # bill_december with due_days=5
RENT = 120_000
BERLIN, LOS_ANGELES = "Europe/Berlin", "America/Los_Angeles"


class RecordingSmsBackend:
    """settings.SMS_BACKEND for tests: keeps every text it was asked to send."""

    sent: list[tuple[str, str]] = []

    def send(self, *, to: str, body: str, reference: str = "") -> None:
        RecordingSmsBackend.sent.append((to, body))


class FailingEmailBackend:
    """settings.EMAIL_BACKEND that never delivers (the SMTP server refuses)."""

    def __init__(self, *args, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("SMTP server refused the connection")


@dataclass
class Renter:
    tenant: Tenant
    invoice: Invoice

    @property
    def tz(self):
        return self.tenant.tz_for(self.invoice.landlord)


def renters(landlord: Landlord, *zones: str, phone: bool = True) -> list[Renter]:
    """One lease per time zone, billed for December 2026 (due 6 December)."""
    names = {BERLIN: "Berta Berlin", LOS_ANGELES: "Lou Angeles"}
    tenants = []
    for n, zone in enumerate(zones):
        lease = lease_with_charges(landlord=landlord, renter=names.get(zone, f"Renter {n} X"))
        tenant = lease.tenants.get()
        tenant.timezone = zone
        tenant.phone = f"+4915100000{n:02d}" if phone else ""
        tenant.save()
        tenants.append(tenant)
    invoices = bill_december(landlord=landlord)
    by_tenant = {i.tenant_id: i for i in invoices}
    return [Renter(t, by_tenant[t.pk]) for t in tenants]


def other_landlord_world(other: Landlord) -> Invoice:
    """Landlord B with an open December invoice: a tick scoped wrongly would touch it."""
    emails_off(landlord=other)
    lease_with_charges(landlord=other, renter="Bo Other")
    return [i for i in bill_december(landlord=other) if i.tenant.full_name == "Bo Other"][0]


def policy(landlord: Landlord, **changes) -> DunningPolicy:
    """The landlord's default policy: the built-in one with `changes`."""
    data = replace(DEFAULT_RULES, **changes)
    existing = DunningPolicy.objects.for_landlord(landlord).filter(is_default=True).first()
    return policy_save(
        landlord=landlord, policy=existing, name="Standard", data=data, make_default=True
    )


def step(*args) -> rules.StepRule:
    return rules.StepRule(*args)


def autopay_on(renter: Renter, *, pm: str = "pm_card_ok", method: str = Method.CARD):
    StripeCustomer.objects.get_or_create(
        tenant=renter.tenant,
        defaults={"landlord": renter.tenant.landlord, "customer_id": f"cus_{renter.tenant.pk}"},
    )
    SavedPaymentMethod.objects.filter(tenant=renter.tenant).update(autopay=False)
    return SavedPaymentMethod.objects.create(
        landlord=renter.tenant.landlord,
        tenant=renter.tenant,
        stripe_payment_method_id=pm,
        method=method,
        brand="visa",
        last4="0341",
        autopay=True,
    )


def hours(first: datetime, last: datetime, every: timedelta = timedelta(hours=1)):
    now = first
    while now <= last:
        yield now
        now += every


def daily(first: date, last: date, at: Iterable[int] = (7, 12, 17, 23)) -> list[datetime]:
    """UTC ticks at the given hours of each day: 07 and 12 are in Berlin's window,
    17 and 23 in Los Angeles' (08:00-20:00 local)."""
    out, day = [], first
    while day <= last:
        out += [datetime.combine(day, time(h), tzinfo=UTC) for h in at]
        day += timedelta(days=1)
    return out


def walk(time_machine, ticks: Iterable[datetime], *, sweep: bool = False, landlord=None) -> Counter:
    """Move the clock to each moment and run the beat task there (and, with `sweep`, the
    outbox retry sweep). Fails on any step the engine logged as an error."""
    total: Counter = Counter()
    for now in sorted(set(ticks)):
        time_machine.move_to(now, tick=False)
        result = dunning_tick(now=timezone.now(), landlord=landlord)
        assert "error" not in result.counts, (now, result.counts)
        total.update(result.counts)
        if sweep:
            notifications_retry_due(now=timezone.now())
    return total


def keys(invoice: Invoice, *, status: str | None = None) -> list[str]:
    qs = DunningStep.objects.filter(invoice=invoice)
    if status:
        qs = qs.filter(status=status)
    return sorted(qs.values_list("key", flat=True))


def notices(invoice: Invoice):
    return Notification.objects.filter(invoice=invoice, kind__startswith="dunning_").order_by(
        "created_at", "pk"
    )


def fee_invoices(invoice: Invoice):
    return Invoice.objects.filter(adjusts=invoice, kind="late_fee").order_by("pk")
