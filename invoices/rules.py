"""Billing rules: which invoice lines a lease gets for one billing period.

Pure functions over small frozen dataclasses, with no ORM and no clock, so the bulk
billing run can load rows set-based and call these per lease, and tests can check
the rules with hypothesis in milliseconds. Rounding happens only in `money.rounding`.
The conventions (calendar-month periods billed in advance, actual-days proration,
catch-up of one-off charges, issue and due dates) are in docs/decisions/0002-proration.md.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import TypeVar

from money.rounding import allocate, days_in_month, multiply, prorate_days, prorate_month, tax

# Same values as tenants.models.ChargeFrequency / ChargeKind (kept here so this module
# needs no Django app registry; a test checks they agree).
MONTHLY = "monthly"
ONE_OFF = "one_off"
FREQUENCIES = (MONTHLY, ONE_OFF)

# Invoice line order and the label used when a charge has no description.
KIND_LABELS: Mapping[str, str] = {
    "rent": "Rent",
    "parking": "Parking",
    "pet": "Pet",
    "storage": "Storage",
    "utility": "Utility",
    "other": "Other",
    "late_fee": "Late fee",
}
_KIND_ORDER = {kind: rank for rank, kind in enumerate(KIND_LABELS)}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MAX_BILLING_DAY = 28

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class ChargeTerms:
    """One Charge row: monthly over `[start_date, end_date)`, or one-off on `start_date`."""

    charge_id: int
    kind: str
    description: str
    amount_minor: int
    currency: str
    frequency: str
    start_date: date
    end_date: date | None = None

    @property
    def label(self) -> str:
        return self.description.strip() or kind_label(self.kind)


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """One Lease row with its charges: let over `[start_date, end_date)`."""

    lease_id: int
    start_date: date
    end_date: date | None
    currency: str
    billing_day: int
    due_days: int
    charges: tuple[ChargeTerms, ...] = ()


@dataclass(frozen=True, slots=True)
class LineDraft:
    """An invoice line before it is stored. Amounts are net minor units; service
    dates are half-open `[service_start, service_end)`."""

    charge_id: int | None
    kind: str
    description: str
    quantity: int
    unit_amount_minor: int
    amount_minor: int
    tax_rate_bp: int
    tax_minor: int
    service_start: date
    service_end: date
    meter_reading_id: int | None = None  # metered usage: the reading it runs up to

    @property
    def gross_minor(self) -> int:
        return self.amount_minor + self.tax_minor


@dataclass(frozen=True, slots=True)
class InvoiceDraft:
    lines: tuple[LineDraft, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    currency: str
    issue_date: date
    due_date: date
    period_start: date
    period_end: date


@dataclass(frozen=True, slots=True)
class BillingSkip:
    """Nothing to bill for this lease and period; not a problem."""

    reason: str


@dataclass(frozen=True, slots=True)
class BillingError:
    """Bad data the landlord must fix before this lease can be billed."""

    message: str
    charge_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MeterReadings:
    """Two readings of one sub-meter and the price per unit consumed.

    `rate_minor_per_unit` is in minor units and may have decimals (e.g. Decimal("215.5")
    cents per m³); the line amount is rounded once, half-even.
    """

    meter_id: int  # the id of the `current` reading: the line bills up to it
    label: str
    previous: Decimal
    current: Decimal
    rate_minor_per_unit: Decimal
    unit_name: str = "units"


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind) or kind.replace("_", " ").capitalize()


def billing_period(*, month: date) -> tuple[date, date]:
    """The calendar month containing `month` as `[1st, 1st of next month)`.

    Rent is billed in advance: the invoice for a period is issued in that period
    (on the lease's billing day) and covers the whole month.
    """
    start = month.replace(day=1)
    return start, start + timedelta(days=days_in_month(start))


def line_draft(
    *,
    kind: str,
    description: str,
    amount_minor: int,
    service_start: date,
    service_end: date,
    tax_rates: Mapping[str, int],
    charge_id: int | None = None,
    meter_reading_id: int | None = None,
) -> LineDraft:
    """A one-unit line with its tax: the only place a line's tax is computed."""
    rate = tax_rates.get(kind, 0)
    return LineDraft(
        meter_reading_id=meter_reading_id,
        charge_id=charge_id,
        kind=kind,
        description=description,
        quantity=1,
        unit_amount_minor=amount_minor,
        amount_minor=amount_minor,
        tax_rate_bp=rate,
        tax_minor=tax(amount_minor, rate),
        service_start=service_start,
        service_end=service_end,
    )


def invoice_lines_for(
    *,
    lease: LeaseTerms,
    period_start: date,
    period_end: date,
    tax_rates: Mapping[str, int],
    already_billed_one_off_ids: frozenset[int],
    extra_lines: Sequence[LineDraft] = (),
    issued_on: date | None = None,
) -> InvoiceDraft | BillingSkip | BillingError:
    """The invoice a lease gets for the calendar month `[period_start, period_end)`.

    - A monthly charge bills its full amount when lease and charge cover the whole
      month, else `prorate_month` over lease ∩ charge ∩ period (actual days).
    - A one-off charge bills in the period containing its date, or in the first
      period billed after it if it was missed (catch-up), unless its id is in
      `already_billed_one_off_ids` (every one-off of this lease already invoiced).
    - A lease that ended before the period still gets an invoice for outstanding
      one-off charges or `extra_lines` (final-account charges after move-out).
    - `tax_rates` maps a charge kind to basis points; missing kinds are untaxed.
    - `extra_lines` (e.g. from `utility_lines_from_readings`) are appended as given.
    - The invoice is dated on its issue day (the billing day, or move-in if later), or on
      `issued_on` (the landlord's local date when it is really written) if that is later:
      an invoice billed late (a missed month billed now, a run resumed after an outage)
      says when it was issued, posts to the ledger on that day rather than into a month
      already reported, and gives the tenant the lease's full `due_days` to pay instead
      of being overdue, with its late fees, the moment it exists.

    Returns a BillingSkip when there is nothing to bill and a BillingError, naming
    the charges, when the lease data is wrong.
    """
    if (period_start, period_end) != billing_period(month=period_start):
        raise ValueError(f"[{period_start}, {period_end}) is not a calendar month")
    _check_tax_rates(tax_rates)

    if lease.start_date >= period_end:
        return BillingSkip(f"Lease starts on {lease.start_date:%Y-%m-%d}, after this period")
    outstanding = tuple(
        c
        for c in lease.charges
        if c.frequency == ONE_OFF
        and c.charge_id not in already_billed_one_off_ids
        and c.start_date < period_end
    )
    ended_before = lease.end_date is not None and lease.end_date <= period_start
    if ended_before and not outstanding and not extra_lines:
        return BillingSkip(f"Lease ended on {lease.end_date:%Y-%m-%d}, before this period")
    if not lease.charges and not extra_lines:
        return BillingError("Lease has no charges")
    error = _validate(lease)
    if error is not None:
        return error

    monthly = sorted(
        (c for c in lease.charges if c.frequency == MONTHLY),
        key=lambda c: (_KIND_ORDER.get(c.kind, len(_KIND_ORDER)), c.start_date, c.charge_id),
    )
    lines: list[LineDraft] = []
    for charge in monthly:
        line = _monthly_line(charge, lease, period_start, period_end, tax_rates)
        if line is not None:
            lines.append(line)
    for charge in sorted(outstanding, key=lambda c: (c.start_date, c.charge_id)):
        lines.append(_one_off_line(charge, period_start, tax_rates))
    lines.extend(extra_lines)
    if not lines:
        return BillingSkip("Lease has no charges for this period")

    issue_date = max(period_start.replace(day=lease.billing_day), lease.start_date)
    if issued_on is not None and issued_on > issue_date:
        issue_date = issued_on
    subtotal = sum(line.amount_minor for line in lines)
    tax_total = sum(line.tax_minor for line in lines)
    return InvoiceDraft(
        lines=tuple(lines),
        subtotal_minor=subtotal,
        tax_minor=tax_total,
        total_minor=subtotal + tax_total,
        currency=lease.currency,
        issue_date=issue_date,
        due_date=issue_date + timedelta(days=lease.due_days),
        period_start=period_start,
        period_end=period_end,
    )


def lines_after_lease_end(
    lines: Sequence[LineDraft], *, end_date: date, recurring: Mapping[int, str]
) -> tuple[LineDraft, ...] | None:
    """The lines an issued invoice keeps when its lease ends on `end_date` (the first
    day the unit is free) after the invoice was written; None when none changes.

    Only recurring lines (`recurring`: monthly charge id → its label) bill days: each is
    cut to `[service_start, end_date)`, its amount the billed amount's share of those
    days (`money.rounding.prorate_days`, so kept + credited = billed to the cent) and
    its tax recomputed at the rate it was billed with; a line with no day left goes.
    One-off charges and metered usage were owed whenever the lease ends and stay as
    they are. docs/decisions/0017-a-lease-ended-after-billing.md.
    """
    kept: list[LineDraft] = []
    changed = False
    for line in lines:
        label = recurring.get(line.charge_id) if line.charge_id is not None else None
        if label is None or line.service_end <= end_date:
            kept.append(line)
            continue
        changed = True
        if line.service_start >= end_date:
            continue
        days = (line.service_end - line.service_start).days
        covered = (end_date - line.service_start).days
        amount = prorate_days(line.amount_minor, days=days, covered_days=covered)
        if amount == 0:
            continue
        month_days = days_in_month(line.service_start)
        kept.append(
            LineDraft(
                charge_id=line.charge_id,
                kind=line.kind,
                description=(
                    f"{_billed_label(line.description) or label} "
                    f"({_day_range(line.service_start, end_date)}, {covered}/{month_days} days)"
                ),
                quantity=1,
                unit_amount_minor=amount,
                amount_minor=amount,
                tax_rate_bp=line.tax_rate_bp,
                tax_minor=tax(amount, line.tax_rate_bp),
                service_start=line.service_start,
                service_end=end_date,
            )
        )
    return tuple(kept) if changed else None


def _billed_label(description: str) -> str:
    """The charge's label as the line was billed: "Rent" from "Rent (12–30 Nov, 19/30
    days)", so a description edited since does not rewrite what was billed."""
    if description.endswith(" days)") and " (" in description:
        return description.rsplit(" (", 1)[0].strip()
    return description.strip()


def utility_lines_from_readings(
    *,
    readings: Sequence[MeterReadings],
    service_start: date,
    service_end: date,
    tax_rates: Mapping[str, int],
    kind: str = "utility",
) -> tuple[LineDraft, ...] | BillingError:
    """One line per sub-meter: `(current - previous) × rate`, rounded once, half-even.

    A reading below the previous one is an error (a misread or a replaced meter must
    be corrected by a person, not billed as negative usage). Zero-usage meters give no
    line, like charges prorated to zero.
    """
    if service_end <= service_start:
        raise ValueError("service_end must be after service_start")
    _check_tax_rates(tax_rates)
    problems = []
    lines = []
    for reading in readings:
        usage = reading.current - reading.previous
        if usage < 0:
            problems.append(
                f"Meter {reading.label}: reading {reading.current} is lower than the "
                f"previous reading {reading.previous}"
            )
            continue
        if reading.rate_minor_per_unit < 0:
            problems.append(f"Meter {reading.label}: negative rate {reading.rate_minor_per_unit}")
            continue
        amount = multiply(usage, reading.rate_minor_per_unit)
        if amount == 0:
            continue
        lines.append(
            line_draft(
                kind=kind,
                description=(
                    f"{reading.label} ({reading.previous} → {reading.current}, "
                    f"{usage} {reading.unit_name})"
                ),
                amount_minor=amount,
                service_start=service_start,
                service_end=service_end,
                tax_rates=tax_rates,
                meter_reading_id=reading.meter_id,
            )
        )
    if problems:
        return BillingError("; ".join(problems))
    return tuple(lines)


def rubs_split(*, total_minor: int, weights: Mapping[K, int]) -> dict[K, int] | BillingError:
    """Split a building's utility bill across units by share weights (RUBS: occupants,
    floor area, ...). Largest remainder, so the shares add up to `total_minor` exactly."""
    if not weights or any(w < 0 for w in weights.values()) or not any(weights.values()):
        return BillingError("Utility split needs non-negative share weights, not all zero")
    return dict(zip(weights, allocate(total_minor, list(weights.values())), strict=True))


def _check_tax_rates(tax_rates: Mapping[str, int]) -> None:
    # A run-wide configuration problem, so an exception rather than a per-lease error.
    for kind, rate in tax_rates.items():
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
            raise ValueError(f"tax rate for {kind!r} must be a non-negative int of basis points")


def _validate(lease: LeaseTerms) -> BillingError | None:
    """Mirror the database constraints, so bad rows loaded in bulk fail loudly and by name."""
    problems: list[str] = []
    charge_ids: list[int] = []
    if not 1 <= lease.billing_day <= MAX_BILLING_DAY:
        problems.append(f"Billing day {lease.billing_day} is not between 1 and {MAX_BILLING_DAY}")
    if lease.due_days < 0:
        problems.append(f"Due days {lease.due_days} is negative")
    if lease.end_date is not None and lease.end_date <= lease.start_date:
        problems.append("Lease ends before it starts")
    for charge in lease.charges:
        name = f"Charge #{charge.charge_id} ({charge.label})"
        before = len(problems)
        if charge.currency != lease.currency:
            problems.append(f"{name} is in {charge.currency} but the lease is in {lease.currency}")
        if charge.frequency not in FREQUENCIES:
            problems.append(f"{name} has unknown frequency {charge.frequency!r}")
        if charge.amount_minor <= 0:
            problems.append(f"{name} has a non-positive amount")
        if charge.end_date is not None and charge.end_date <= charge.start_date:
            problems.append(f"{name} ends before it starts")
        if charge.frequency == ONE_OFF and charge.end_date is not None:
            problems.append(f"{name} is one-off but has an end date")
        if len(problems) > before:
            charge_ids.append(charge.charge_id)
    if problems:
        return BillingError("; ".join(problems), tuple(charge_ids))
    return None


def _monthly_line(
    charge: ChargeTerms,
    lease: LeaseTerms,
    period_start: date,
    period_end: date,
    tax_rates: Mapping[str, int],
) -> LineDraft | None:
    start = max(lease.start_date, charge.start_date, period_start)
    end = period_end
    if lease.end_date is not None and lease.end_date < end:
        end = lease.end_date
    if charge.end_date is not None and charge.end_date < end:
        end = charge.end_date
    if end <= start:
        return None
    if (start, end) == (period_start, period_end):
        amount, description = charge.amount_minor, charge.label
    else:
        amount = prorate_month(
            charge.amount_minor, month_start=period_start, covered_start=start, covered_end=end
        )
        days, month_days = (end - start).days, (period_end - period_start).days
        description = f"{charge.label} ({_day_range(start, end)}, {days}/{month_days} days)"
    if amount == 0:
        return None
    return line_draft(
        kind=charge.kind,
        description=description,
        amount_minor=amount,
        service_start=start,
        service_end=end,
        tax_rates=tax_rates,
        charge_id=charge.charge_id,
    )


def _one_off_line(
    charge: ChargeTerms, period_start: date, tax_rates: Mapping[str, int]
) -> LineDraft:
    description = charge.label
    if charge.start_date < period_start:
        # A catch-up from an earlier month: say so, or the line looks misdated.
        description = f"{description} (dated {_day(charge.start_date)} {charge.start_date.year})"
    return line_draft(
        kind=charge.kind,
        description=description,
        amount_minor=charge.amount_minor,
        service_start=charge.start_date,
        service_end=charge.start_date + timedelta(days=1),
        tax_rates=tax_rates,
        charge_id=charge.charge_id,
    )


def _day(day: date) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]}"


def _day_range(start: date, end: date) -> str:
    """`[start, end)` inside one month, shown with its inclusive last day: "10–28 Feb"."""
    last = end - timedelta(days=1)
    if last == start:
        return _day(start)
    return f"{start.day}–{_day(last)}"
