"""The monthly summary: a year of the landlord's books, month by month and per currency,
in the words a landlord and their accountant use (billed, received, written off, owed).

Every figure is a sum of ledger entries by the month their transaction is effective in
the landlord's timezone, never a stored counter, so the summary agrees with the trial
balance and the journal it links to. Each account code falls in exactly one column
(`column_of`); since every transaction sums to zero, each month reconciles:

    owed at the end = owed at the start + billed + adjustments − received − written off

`owed` is what tenants owe net of the credit held for them (receivable + tenant credit).
A void or credit note is a reversing posting in the month it happens: it lowers that
month's billed figures, and the month first billed keeps what it said then.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db.models import Sum
from django.db.models.functions import TruncMonth

from ledger.models import AccountCode, LedgerEntry
from tenants.models import Landlord

# The columns a month's movements are summed into, in display order.
RENT, OTHER, LATE_FEES, TAX = "rent", "other", "late_fees", "tax"
RECEIVED, FEES, WRITTEN_OFF, ADJUSTMENTS, OWED = (
    "received",
    "processor_fees",
    "written_off",
    "adjustments",
    "owed",
)
BILLED_COLUMNS = (RENT, OTHER, LATE_FEES, TAX)

# Money leaving the tenants' side to the landlord: the processor's hold, the bank, and
# the processor's fee (paid out of what the tenant paid, so part of what they paid).
_RECEIVED_CODES = {AccountCode.CASH_IN_TRANSIT, AccountCode.BANK, AccountCode.PROCESSOR_FEES}
_OWED_CODES = {AccountCode.RECEIVABLE, AccountCode.TENANT_CREDIT}


def column_of(code: str) -> str:
    """The summary column an account's movements count in. Codes outside the chart's
    billing and cash accounts (opening balances imported, anything added later) are
    adjustments, so every entry counts somewhere and each month still reconciles."""
    if code == AccountCode.RENT_INCOME:
        return RENT
    if code.startswith(AccountCode.INCOME_PREFIX):
        return OTHER
    if code == AccountCode.LATE_FEE_INCOME:
        return LATE_FEES
    if code == AccountCode.TAX_PAYABLE:
        return TAX
    if code in _RECEIVED_CODES:
        return RECEIVED
    if code == AccountCode.WRITE_OFF:
        return WRITTEN_OFF
    if code in _OWED_CODES:
        return OWED
    return ADJUSTMENTS


@dataclass
class MonthSummary:
    month: date  # the first day of the month
    rent: int = 0
    other: int = 0
    late_fees: int = 0
    tax: int = 0
    received: int = 0  # what tenants paid, processor fees included, less refunds
    processor_fees: int = 0  # the part of `received` the processor kept
    written_off: int = 0
    adjustments: int = 0
    owed_change: int = 0
    owed_end: int = 0  # net of tenant credit, at the end of the month

    @property
    def billed(self) -> int:
        return self.rent + self.other + self.late_fees + self.tax

    @property
    def month_end(self) -> date:
        return _next_month(self.month) - _ONE_DAY

    @property
    def quiet(self) -> bool:
        """Nothing was posted this month (a processor fee alone nets to nothing received)."""
        return not (
            self.billed
            or self.received
            or self.processor_fees
            or self.written_off
            or self.adjustments
        )


@dataclass
class CurrencySummary:
    currency: str
    owed_start: int  # net owed when the year began
    months: list[MonthSummary] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(month, name) for month in self.months)

    @property
    def totals(self) -> MonthSummary:
        """The year as one row (its `owed_end` is the last month's)."""
        row = MonthSummary(month=self.months[0].month if self.months else date.min)
        for name in (RENT, OTHER, LATE_FEES, TAX, RECEIVED, FEES, WRITTEN_OFF, ADJUSTMENTS):
            setattr(row, name, self.total(name))
        row.owed_change = self.total("owed_change")
        row.owed_end = self.months[-1].owed_end if self.months else self.owed_start
        return row

    @property
    def has_adjustments(self) -> bool:
        return any(month.adjustments for month in self.months)


_ONE_DAY = timedelta(days=1)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _local_midnight(landlord: Landlord, day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=landlord.tz)


def monthly_summary(*, landlord: Landlord, year: int, through: date) -> list[CurrencySummary]:
    """The landlord's `year`, month by month, one summary per currency that has entries
    up to the end of the year; months after `through` (the landlord's today) are left
    out. Two grouped reads over the landlord's entries: the net owed before the year,
    and the year's movements by month and account code."""
    start = date(year, 1, 1)
    end = min(date(year + 1, 1, 1), _next_month(through.replace(day=1)))
    if end <= start:
        return []
    entries = LedgerEntry.objects.for_landlord(landlord)
    owed_start: dict[str, int] = defaultdict(int)
    for row in (
        entries.filter(
            account__code__in=_OWED_CODES,
            transaction__effective_at__lt=_local_midnight(landlord, start),
        )
        .values("currency")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    ):
        owed_start[row["currency"]] = int(row["total"])
    moved: dict[str, dict[date, dict[str, int]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(int))
    )
    for row in (
        entries.filter(
            transaction__effective_at__gte=_local_midnight(landlord, start),
            transaction__effective_at__lt=_local_midnight(landlord, end),
        )
        .annotate(month=TruncMonth("transaction__effective_at", tzinfo=landlord.tz))
        .values("currency", "month", "account__code")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    ):
        month = row["month"]
        month = month.date() if isinstance(month, datetime) else month
        moved[row["currency"]][month][row["account__code"]] += int(row["total"])

    summaries = []
    for currency in sorted(set(owed_start) | set(moved)):
        summary = CurrencySummary(currency=currency, owed_start=owed_start.get(currency, 0))
        owed = summary.owed_start
        month = start
        while month < end:
            row = MonthSummary(month=month)
            for code, amount in moved[currency].get(month, {}).items():
                column = column_of(code)
                if column == OWED:
                    row.owed_change += amount
                elif column in (RECEIVED, WRITTEN_OFF):
                    # Debits to cash and expense accounts: positive is money in, or lost.
                    setattr(row, column, getattr(row, column) + amount)
                    if code == AccountCode.PROCESSOR_FEES:
                        row.processor_fees += amount
                else:
                    # Income, tax and the rest are credit-normal: shown as what was billed.
                    setattr(row, column, getattr(row, column) - amount)
            owed += row.owed_change
            row.owed_end = owed
            summary.months.append(row)
            month = _next_month(month)
        summaries.append(summary)
    return summaries
