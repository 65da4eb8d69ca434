"""Rounding and currency rules (money/): properties that must hold for every input.

Pure functions only, no database, so these run in a couple of seconds.
"""

from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from money.currency import from_minor, minor_exponent, to_minor
from money.rounding import (
    allocate,
    days_in_month,
    divide,
    multiply,
    percentage,
    prorate_month,
    quantize,
    tax,
)

amounts = st.integers(min_value=-(10**12), max_value=10**12)
positive_amounts = st.integers(min_value=1, max_value=10**12)
basis_points = st.integers(min_value=0, max_value=10_000)
months = st.dates(min_value=date(1990, 1, 1), max_value=date(2100, 12, 1)).map(
    lambda d: d.replace(day=1)
)


def half_even(value: Fraction) -> int:
    # Python's round() on a Fraction is banker's rounding: an independent oracle.
    return round(value)


# --- divide / percentage / tax -------------------------------------------------------------


@given(amounts, st.integers(min_value=1, max_value=10**6))
def test_divide_rounds_half_even(numerator, denominator):
    assert divide(numerator, denominator) == half_even(Fraction(numerator, denominator))


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [(5, 2, 2), (7, 2, 4), (-5, 2, -2), (-7, 2, -4), (1, 3, 0), (2, 3, 1), (0, 9, 0)],
)
def test_divide_breaks_ties_to_even(numerator, denominator, expected):
    assert divide(numerator, denominator) == expected


def test_divide_rejects_a_non_positive_denominator():
    with pytest.raises(ValueError):
        divide(1, 0)


@given(amounts, basis_points)
def test_percentage_is_an_exact_int_rounded_half_even(amount, bp):
    result = percentage(amount, bp)
    assert type(result) is int
    assert result == half_even(Fraction(amount * bp, 10_000))


@given(amounts, basis_points)
def test_tax_is_an_int_and_never_off_by_more_than_half_a_minor_unit(net, bp):
    result = tax(net, bp)
    assert type(result) is int
    assert abs(Fraction(result) - Fraction(net * bp, 10_000)) <= Fraction(1, 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: percentage(1000.0, 500),
        lambda: percentage(1000, 5.0),
        lambda: tax(Decimal("10.00"), 1900),
        lambda: divide(1.5, 2),
        lambda: allocate(100.0, [1, 1]),
        lambda: quantize(2.5),
    ],
)
def test_money_functions_refuse_floats_and_decimals_where_ints_are_required(call):
    with pytest.raises(TypeError):
        call()


# --- quantize / multiply -------------------------------------------------------------------


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-(10**9), max_value=10**9
    )
)
def test_quantize_rounds_half_even(value):
    assert quantize(value) == int(value.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def test_quantize_is_exact_beyond_the_decimal_context_precision():
    assert quantize(Decimal("123456789012345678901234567890.5")) == 123456789012345678901234567890


def test_quantize_refuses_nan():
    with pytest.raises(ValueError):
        quantize(Decimal("NaN"))


@given(
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    st.decimals(min_value=0, max_value=10**4, places=4, allow_nan=False, allow_infinity=False),
)
def test_multiply_rounds_the_exact_product_once(quantity, rate):
    assert multiply(quantity, rate) == half_even(Fraction(quantity) * Fraction(rate))


# --- allocate ------------------------------------------------------------------------------


@given(amounts, st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=20))
def test_allocate_parts_sum_to_total_and_stay_within_one_of_the_exact_share(total, weights):
    assume(sum(weights) > 0)
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert len(parts) == len(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert abs(part - Fraction(total * weight, sum(weights))) < 1
        if weight == 0:
            assert part == 0


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1]])
def test_allocate_rejects_empty_negative_or_all_zero_weights(weights):
    with pytest.raises(ValueError):
        allocate(100, weights)


def test_allocate_gives_leftover_cents_to_the_earliest_of_equal_remainders():
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]


# --- days_in_month / prorate_month ---------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "days"),
    [
        (date(2024, 2, 1), 29),
        (date(2023, 2, 1), 28),
        (date(2000, 2, 1), 29),
        (date(1900, 2, 1), 28),
        (date(2024, 12, 1), 31),
        (date(2024, 4, 1), 30),
    ],
)
def test_days_in_month_knows_leap_years(month, days):
    assert days_in_month(month) == days


@given(
    positive_amounts,
    months,
    st.lists(st.integers(min_value=1, max_value=30), max_size=10, unique=True),
)
def test_prorated_pieces_of_any_partition_of_a_month_sum_to_the_amount(amount, month, cuts):
    n = days_in_month(month)
    boundaries = sorted({0, n, *(c for c in cuts if c < n)})
    pieces = [
        prorate_month(
            amount,
            month_start=month,
            covered_start=month + timedelta(days=s),
            covered_end=month + timedelta(days=e),
        )
        for s, e in zip(boundaries, boundaries[1:], strict=False)
    ]
    assert sum(pieces) == amount
    for piece, s, e in zip(pieces, boundaries, boundaries[1:], strict=False):
        # Two half-even roundings: each piece is within one minor unit of the exact share.
        assert abs(piece - Fraction(amount * (e - s), n)) <= 1


@given(positive_amounts, months)
def test_prorating_the_whole_month_gives_the_whole_amount(amount, month):
    end = month + timedelta(days=days_in_month(month))
    assert prorate_month(amount, month_start=month, covered_start=month, covered_end=end) == amount


def test_prorating_clamps_coverage_to_the_month_and_ignores_empty_ranges():
    feb = date(2024, 2, 1)
    assert (
        prorate_month(
            2900, month_start=feb, covered_start=date(2024, 1, 1), covered_end=date(2024, 4, 1)
        )
        == 2900
    )
    assert (
        prorate_month(
            2900, month_start=feb, covered_start=date(2024, 2, 20), covered_end=date(2024, 2, 10)
        )
        == 0
    )


def test_leap_february_prorates_over_29_days():
    feb = date(2024, 2, 1)
    # 19 of 29 days of 1000.00 = 655.17241... -> 655.17
    assert (
        prorate_month(
            100_000, month_start=feb, covered_start=date(2024, 2, 11), covered_end=date(2024, 3, 1)
        )
        == 65_517
    )


def test_prorate_month_counts_from_the_first_even_if_given_another_day():
    mid = date(2024, 2, 15)
    assert prorate_month(
        2900, month_start=mid, covered_start=date(2024, 2, 1), covered_end=date(2024, 2, 11)
    ) == prorate_month(
        2900,
        month_start=date(2024, 2, 1),
        covered_start=date(2024, 2, 1),
        covered_end=date(2024, 2, 11),
    )


# --- to_minor / from_minor -----------------------------------------------------------------

CURRENCIES = {"EUR": 2, "JPY": 0, "KWD": 3}


@pytest.mark.parametrize(("code", "exponent"), CURRENCIES.items())
def test_minor_exponents_follow_iso_4217(code, exponent):
    assert minor_exponent(code) == exponent


@given(st.sampled_from(sorted(CURRENCIES)), st.integers(min_value=-(10**40), max_value=10**40))
def test_from_minor_then_to_minor_round_trips_exactly(code, minor):
    value = from_minor(minor, code)
    assert value.as_tuple().exponent == -CURRENCIES[code]
    assert to_minor(str(value), code) == minor
    assert to_minor(f"{value:,}", code) == minor


@pytest.mark.parametrize(
    ("text", "code", "expected"),
    [
        ("1,250.50", "EUR", 125050),
        ("1250.5", "EUR", 125050),
        (" 1 250.50 ", "EUR", 125050),
        ("12.500", "EUR", 1250),
        (".5", "EUR", 50),
        ("-3", "EUR", -300),
        ("1,250", "JPY", 1250),
        ("1.5", "KWD", 1500),
        ("0.001", "KWD", 1),
    ],
)
def test_to_minor_parses_what_people_type(text, code, expected):
    assert to_minor(text, code) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("12.345", "EUR"),
        ("1.5", "JPY"),
        ("0.0001", "KWD"),
        ("12345678901234567890123456789.5", "JPY"),
    ],
)
def test_to_minor_refuses_more_decimals_than_the_currency_has(text, code):
    with pytest.raises(ValueError, match="more decimals"):
        to_minor(text, code)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "12,5",
        "1e3",
        "NaN",
        "Infinity",
        "sNaN",
        "1_000",
        "١٢",
        "1..2",
        "--1",
        "12.",
        "1,25,000",
        "€12",
    ],
)
def test_to_minor_refuses_garbage(text):
    with pytest.raises(ValueError, match="not an amount"):
        to_minor(text, "EUR")


@given(st.text(max_size=20), st.sampled_from(sorted(CURRENCIES)))
def test_to_minor_returns_an_int_or_raises_value_error_for_any_text(text, code):
    try:
        result = to_minor(text, code)
    except ValueError:
        return
    assert type(result) is int


def test_unknown_currency_codes_are_refused_not_defaulted():
    with pytest.raises(ValueError):
        minor_exponent("XYZ")
    with pytest.raises(ValueError):
        to_minor("1.00", "eur")
