"""Reports: read-only views over every other app (ARCHITECTURE: reports depend on all,
nothing depends on them). The rent roll: each unit on a day, who rents it, what its
lease charges every month and what is still owed on the lease's invoices.

Every read is the landlord's (`for_landlord`). Owed amounts come from the ledger (the
receivable entries that name the lease's invoices, effective by the end of the day),
never from a stored counter; the ledger's document index is what they use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.db.models import Q, QuerySet, Sum

from invoices.models import Invoice, InvoiceState
from invoices.selectors import INVOICE_DOCUMENT
from ledger.selectors import document_balances
from tenants.models import (
    Charge,
    ChargeFrequency,
    Landlord,
    Lease,
    Unit,
)
from tenants.selectors import occupying_on

CHUNK = 500


@dataclass(frozen=True)
class RentRollRow:
    unit: Unit
    lease: Lease | None  # the lease occupying the unit on the day; None: vacant
    tenants: str
    monthly_minor: int  # monthly charges in force on the day (rent, parking, ...)
    owed_minor: int  # open on the lease's invoices at the end of the day

    @property
    def currency(self) -> str:
        return self.lease.currency if self.lease else ""


@dataclass
class RentRollTotals:
    units: int = 0
    occupied: int = 0
    monthly: dict[str, int] = field(default_factory=dict)
    owed: dict[str, int] = field(default_factory=dict)

    @property
    def occupancy_percent(self) -> int:
        return round(100 * self.occupied / self.units) if self.units else 0


def _monthly_in_force(day: date) -> Q:
    return Q(frequency=ChargeFrequency.MONTHLY, start_date__lte=day) & (
        Q(end_date__isnull=True) | Q(end_date__gt=day)
    )


def rent_roll_units(
    *, landlord: Landlord, search: str = "", property_id: int | None = None
) -> QuerySet[Unit]:
    """The units of the rent roll, by property and unit name."""
    qs = Unit.objects.for_landlord(landlord).select_related("property")
    if property_id is not None:
        qs = qs.filter(property_id=property_id)
    if search:
        qs = qs.filter(
            Q(name__icontains=search)
            | Q(property__name__icontains=search)
            | Q(leases__tenants__full_name__icontains=search)
        ).distinct()
    return qs.order_by("property__name", "name", "pk")


def _leases_on(landlord: Landlord, day: date, units) -> QuerySet[Lease]:
    return Lease.objects.for_landlord(landlord).filter(occupying_on(day), unit__in=units)


def _owed_by_lease(landlord: Landlord, lease_ids: Sequence[int], day: date) -> dict[int, int]:
    """Open receivable on each lease's invoices at the end of `day` (a lease bills in
    one currency). Void invoices count: one voided later was open on that day."""
    invoices = dict(
        Invoice.objects.for_landlord(landlord)
        .filter(lease_id__in=lease_ids)
        .exclude(state=InvoiceState.DRAFT)
        .values_list("pk", "lease_id")
    )
    balances = document_balances(
        landlord=landlord,
        document_kind=INVOICE_DOCUMENT,
        document_ids=invoices,
        before=landlord.day_start(day + timedelta(days=1)),
    )
    owed: dict[int, int] = defaultdict(int)
    for invoice_id, by_currency in balances.items():
        owed[invoices[invoice_id]] += sum(by_currency.values())
    return owed


def rent_roll_rows(*, landlord: Landlord, units: Sequence[Unit], day: date) -> list[RentRollRow]:
    """One row per unit (in the order given) as it stood on `day`: a page's worth in
    four queries."""
    leases = {
        lease.unit_id: lease
        for lease in _leases_on(landlord, day, units).prefetch_related("tenants")
    }
    lease_ids = [lease.pk for lease in leases.values()]
    monthly: dict[int, int] = dict(
        Charge.objects.for_landlord(landlord)
        .filter(_monthly_in_force(day), lease_id__in=lease_ids)
        .values("lease_id")
        .annotate(total=Sum("amount_minor"))
        .order_by()
        .values_list("lease_id", "total")
    )
    owed = _owed_by_lease(landlord, lease_ids, day)
    rows = []
    for unit in units:
        lease = leases.get(unit.pk)
        rows.append(
            RentRollRow(
                unit=unit,
                lease=lease,
                tenants=", ".join(t.full_name for t in lease.tenants.all()) if lease else "",
                monthly_minor=int(monthly.get(lease.pk, 0)) if lease else 0,
                owed_minor=owed.get(lease.pk, 0) if lease else 0,
            )
        )
    return rows


def rent_roll_totals(
    *, landlord: Landlord, day: date, search: str = "", property_id: int | None = None
) -> RentRollTotals:
    """Units, occupied units, and the monthly charges and amounts owed per currency of
    every unit the filters keep (not only the page shown)."""
    units = rent_roll_units(landlord=landlord, search=search, property_id=property_id)
    totals = RentRollTotals(units=units.count())
    leases = _leases_on(landlord, day, units.values("pk"))
    lease_currency = dict(leases.values_list("pk", "currency"))
    totals.occupied = len(lease_currency)
    monthly: dict[str, int] = defaultdict(int)
    for currency, total in (
        Charge.objects.for_landlord(landlord)
        .filter(_monthly_in_force(day), lease_id__in=list(lease_currency))
        .values("lease__currency")
        .annotate(total=Sum("amount_minor"))
        .order_by("lease__currency")
        .values_list("lease__currency", "total")
    ):
        monthly[currency] += int(total)
    owed: dict[str, int] = defaultdict(int)
    for lease_id, amount in _owed_by_lease(landlord, list(lease_currency), day).items():
        owed[lease_currency[lease_id]] += amount
    totals.monthly = dict(sorted(monthly.items()))
    totals.owed = {c: a for c, a in sorted(owed.items()) if a}
    return totals


def rent_roll_iter(
    *, landlord: Landlord, day: date, search: str = "", property_id: int | None = None
) -> Iterator[RentRollRow]:
    """Every row, a chunk of units at a time (the CSV download)."""
    units = rent_roll_units(landlord=landlord, search=search, property_id=property_id)
    last: tuple[str, str, int] | None = None
    while True:
        chunk_qs = units
        if last is not None:
            name, unit_name, pk = last
            chunk_qs = chunk_qs.filter(
                Q(property__name__gt=name)
                | Q(property__name=name, name__gt=unit_name)
                | Q(property__name=name, name=unit_name, pk__gt=pk)
            )
        chunk = list(chunk_qs[:CHUNK])
        if not chunk:
            return
        yield from rent_roll_rows(landlord=landlord, units=chunk, day=day)
        tail = chunk[-1]
        last = (tail.property.name, tail.name, tail.pk)
