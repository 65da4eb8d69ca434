"""The one place where money is divided.

Rule: amounts are integers in minor units; any division rounds half-even
(banker's rounding) except where a split must add up exactly, which uses the
largest-remainder method so the parts always sum to the whole.

Day-count convention for proration (docs/decisions/0002-proration.md): a monthly
charge is spread over the actual days of its calendar month; a partial period is
`amount * days_covered / days_in_month`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal

BASIS_POINTS = 10_000


def divide(numerator: int, denominator: int) -> int:
    """Integer division rounded half-even; denominators are positive."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        q += 1
    return q


def percentage(amount: int, basis_points: int) -> int:
    """`amount * basis_points / 10,000`, e.g. a 5 % late fee is 500 basis points."""
    return divide(amount * basis_points, BASIS_POINTS)


def tax(net: int, rate_basis_points: int) -> int:
    """Tax on a net line amount (exclusive pricing), rounded per line."""
    return percentage(net, rate_basis_points)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` in proportion to `weights`; the parts sum to `total` exactly.

    Largest-remainder method: each part gets its floor share, and the leftover
    minor units go to the parts with the largest remainders (earliest first on ties).
    """
    if not weights or any(w < 0 for w in weights) or sum(weights) == 0:
        raise ValueError("weights must be non-negative and not all zero")
    weight_sum = sum(weights)
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    floors = [magnitude * w // weight_sum for w in weights]
    remainders = [magnitude * w % weight_sum for w in weights]
    leftover = magnitude - sum(floors)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:leftover]:
        floors[i] += 1
    return [sign * part for part in floors]


def days_in_month(day: date) -> int:
    first = day.replace(day=1)
    following = date(first.year + (first.month == 12), first.month % 12 + 1, 1)
    return (following - first).days


def prorate_month(amount: int, *, month_start: date, covered_start: date, covered_end: date) -> int:
    """The share of a monthly `amount` for `[covered_start, covered_end)` inside one month.

    Cumulative-boundary rounding: the share is `round(amount * e / n) - round(amount * s / n)`
    where `s`, `e` are the covered day offsets and `n` the days in the month. Any
    partition of the month into consecutive pieces (a move-out on the 15th and a
    move-in on the 15th, or a charge that starts mid-month) therefore sums to
    exactly `amount`, to the minor unit, whatever order the pieces are billed in.
    """
    total_days = days_in_month(month_start)
    start = min(max((covered_start - month_start).days, 0), total_days)
    end = min(max((covered_end - month_start).days, 0), total_days)
    if end <= start:
        return 0
    return divide(amount * end, total_days) - divide(amount * start, total_days)


def quantize(value: Decimal) -> int:
    """Round an already-computed Decimal amount of minor units (e.g. metered usage)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
