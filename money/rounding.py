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
from decimal import Decimal
from fractions import Fraction

BASIS_POINTS = 10_000


def _require_int(**values: object) -> None:
    # A float here would mean binary rounding has already happened somewhere upstream.
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int (minor units), not {type(value).__name__}")


def divide(numerator: int, denominator: int) -> int:
    """Integer division rounded half-even; denominators are positive."""
    _require_int(numerator=numerator, denominator=denominator)
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
    _require_int(total=total)
    for weight in weights:
        _require_int(weight=weight)
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
    # Offsets count from the 1st even if a caller passes another day of the month.
    month_start = month_start.replace(day=1)
    total_days = days_in_month(month_start)
    start = min(max((covered_start - month_start).days, 0), total_days)
    end = min(max((covered_end - month_start).days, 0), total_days)
    if end <= start:
        return 0
    return divide(amount * end, total_days) - divide(amount * start, total_days)


def prorate_days(amount: int, *, days: int, covered_days: int) -> int:
    """The share of `amount`, billed for `days` days, that falls on the first
    `covered_days` of them: `round(amount * covered_days / days)`, half-even.

    Used to cut an issued line short (a lease ended after it was billed,
    docs/decisions/0017): the share kept and `amount - share` credited always add up
    to the amount billed. For a whole-month line this is exactly `prorate_month` from
    the 1st.
    """
    _require_int(amount=amount, days=days, covered_days=covered_days)
    if days <= 0:
        raise ValueError("days must be positive")
    covered_days = min(max(covered_days, 0), days)
    return divide(amount * covered_days, days)


def quantize(value: Decimal) -> int:
    """Round an already-computed Decimal amount of minor units (e.g. metered usage).

    Half-even, like `divide`. Floats are refused: they would carry binary rounding in.
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"value must be a Decimal, not {type(value).__name__}")
    if not value.is_finite():
        raise ValueError(f"{value} is not a finite amount")
    # Exact ratio instead of Decimal.quantize, which fails past the 28-digit context.
    return divide(*value.as_integer_ratio())


def multiply(quantity: Decimal | int, rate: Decimal | int) -> int:
    """`quantity * rate` in minor units (e.g. 12.5 m³ at 215.5 cents/m³), rounded once, half-even.

    The product is exact (no Decimal context precision) so only the final rounding applies.
    """
    for name, value in (("quantity", quantity), ("rate", rate)):
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"{name} must be a Decimal or int, not {type(value).__name__}")
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValueError(f"{name} {value} is not finite")
    product = Fraction(quantity) * Fraction(rate)
    return divide(product.numerator, product.denominator)
