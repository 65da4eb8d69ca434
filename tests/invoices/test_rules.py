"""Billing rules (invoices/rules.py): pure functions, so no database here."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoices.rules import (
    FREQUENCIES,
    KIND_LABELS,
    MONTHLY,
    ONE_OFF,
    BillingError,
    BillingSkip,
    ChargeTerms,
    InvoiceDraft,
    LeaseTerms,
    MeterReadings,
    billing_period,
    invoice_lines_for,
    line_draft,
    rubs_split,
    utility_lines_from_readings,
)
from money.rounding import days_in_month, tax

NO_TAX: dict[str, int] = {}
NOTHING_BILLED: frozenset[int] = frozenset()
FEB_2023 = billing_period(month=date(2023, 2, 1))
FEB_2024 = billing_period(month=date(2024, 2, 1))

months = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 1)).map(
    lambda d: d.replace(day=1)
)
rent_amounts = st.integers(min_value=1, max_value=10**9)


def charge(
    charge_id=1,
    *,
    kind="rent",
    amount=100_000,
    start=date(2020, 1, 1),
    end=None,
    frequency=MONTHLY,
    currency="EUR",
    description="",
):
    return ChargeTerms(
        charge_id=charge_id,
        kind=kind,
        description=description,
        amount_minor=amount,
        currency=currency,
        frequency=frequency,
        start_date=start,
        end_date=end,
    )


def lease(*charges, start=date(2020, 1, 1), end=None, billing_day=1, due_days=0, currency="EUR"):
    return LeaseTerms(
        lease_id=7,
        start_date=start,
        end_date=end,
        currency=currency,
        billing_day=billing_day,
        due_days=due_days,
        charges=tuple(charges),
    )


def bill(lease_terms, period, *, tax_rates=NO_TAX, billed=NOTHING_BILLED, **kwargs):
    return invoice_lines_for(
        lease=lease_terms,
        period_start=period[0],
        period_end=period[1],
        tax_rates=tax_rates,
        already_billed_one_off_ids=billed,
        **kwargs,
    )


def rent_billed(result) -> int:
    if isinstance(result, BillingSkip):
        return 0
    assert isinstance(result, InvoiceDraft), result
    return sum(line.amount_minor for line in result.lines if line.kind == "rent")


# --- periods ------------------------------------------------------------------------------


def test_a_billing_period_is_the_calendar_month_half_open():
    assert billing_period(month=date(2024, 2, 17)) == (date(2024, 2, 1), date(2024, 3, 1))
    assert billing_period(month=date(2024, 12, 31)) == (date(2024, 12, 1), date(2025, 1, 1))


def test_a_period_that_is_not_a_calendar_month_is_a_programming_error():
    with pytest.raises(ValueError, match="calendar month"):
        bill(lease(charge()), (date(2024, 2, 15), date(2024, 3, 15)))


# --- monthly charges: properties ----------------------------------------------------------


@given(
    months,
    st.lists(rent_amounts, min_size=1, max_size=5),
    st.integers(min_value=0, max_value=400),
)
def test_a_lease_active_all_month_bills_exactly_the_charge_amounts(month, amounts, days_before):
    start = month - timedelta(days=days_before)
    charges = [charge(i, amount=a, start=start) for i, a in enumerate(amounts, 1)]
    draft = bill(lease(*charges, start=start), billing_period(month=month))
    assert isinstance(draft, InvoiceDraft)
    assert [line.amount_minor for line in draft.lines] == amounts
    assert draft.subtotal_minor == sum(amounts)
    assert all("days)" not in line.description for line in draft.lines)


@given(months, rent_amounts, st.integers(min_value=0, max_value=31))
def test_a_move_out_and_move_in_on_the_same_day_bill_exactly_one_month_of_rent(
    month, amount, move_offset
):
    period = billing_period(month=month)
    move = min(month + timedelta(days=move_offset), period[1])
    outgoing = lease(
        charge(amount=amount, start=date(1999, 1, 1)), start=date(1999, 1, 1), end=move
    )
    incoming = lease(charge(amount=amount, start=move), start=move)
    assert rent_billed(bill(outgoing, period)) + rent_billed(bill(incoming, period)) == amount


@given(
    months,
    rent_amounts,
    st.lists(st.integers(min_value=1, max_value=30), max_size=6, unique=True),
)
def test_consecutive_charges_splitting_a_month_sum_to_one_month(month, amount, cuts):
    # e.g. a rent change on the 10th and again on the 20th, all at the same amount.
    period = billing_period(month=month)
    n = days_in_month(month)
    edges = [month + timedelta(days=d) for d in sorted({0, n, *(c for c in cuts if c < n)})]
    charges = [
        charge(i, amount=amount, start=s, end=e)
        for i, (s, e) in enumerate(zip(edges, edges[1:], strict=False), 1)
    ]
    draft = bill(lease(*charges, start=month), period)
    assert draft.subtotal_minor == amount


@given(
    months,
    st.lists(
        st.tuples(
            st.sampled_from(sorted(KIND_LABELS)),
            rent_amounts,
            st.integers(min_value=-40, max_value=40),
            st.one_of(st.none(), st.integers(min_value=1, max_value=60)),
        ),
        min_size=1,
        max_size=6,
    ),
    st.dictionaries(
        st.sampled_from(sorted(KIND_LABELS)), st.integers(min_value=0, max_value=2_500)
    ),
    st.integers(min_value=-20, max_value=20),
)
def test_invoice_total_is_the_sum_of_lines_plus_their_tax(month, specs, tax_rates, lease_offset):
    charges = []
    for i, (kind, amount, start_offset, length) in enumerate(specs, 1):
        start = month + timedelta(days=start_offset)
        end = None if length is None else start + timedelta(days=length)
        charges.append(charge(i, kind=kind, amount=amount, start=start, end=end))
    period = billing_period(month=month)
    result = bill(
        lease(*charges, start=month + timedelta(days=lease_offset)), period, tax_rates=tax_rates
    )
    if isinstance(result, BillingSkip):
        return
    assert isinstance(result, InvoiceDraft), result
    assert result.subtotal_minor == sum(line.amount_minor for line in result.lines)
    assert result.tax_minor == sum(line.tax_minor for line in result.lines)
    assert result.total_minor == result.subtotal_minor + result.tax_minor
    for line in result.lines:
        assert line.tax_rate_bp == tax_rates.get(line.kind, 0)
        assert line.tax_minor == tax(line.amount_minor, line.tax_rate_bp)
        assert line.quantity * line.unit_amount_minor == line.amount_minor
        assert period[0] <= line.service_start < line.service_end <= period[1]
        source = next(c for c in charges if c.charge_id == line.charge_id)
        assert 0 < line.amount_minor <= source.amount_minor


# --- monthly charges: examples ------------------------------------------------------------


def test_a_mid_month_move_in_is_prorated_and_says_so():
    draft = bill(lease(charge(amount=280_000), start=date(2023, 2, 10)), FEB_2023)
    (line,) = draft.lines
    assert line.description == "Rent (10–28 Feb, 19/28 days)"
    assert line.amount_minor == 190_000
    assert (line.service_start, line.service_end) == (date(2023, 2, 10), date(2023, 3, 1))


def test_leap_year_february_prorates_over_29_days():
    draft = bill(lease(charge(amount=290_000), start=date(2024, 2, 10)), FEB_2024)
    (line,) = draft.lines
    assert line.description == "Rent (10–29 Feb, 20/29 days)"
    assert line.amount_minor == 200_000


def test_a_move_out_on_the_last_day_bills_the_days_before_it():
    draft = bill(
        lease(charge(amount=310_000), end=date(2024, 3, 31)), billing_period(month=date(2024, 3, 1))
    )
    (line,) = draft.lines
    assert line.description == "Rent (1–30 Mar, 30/31 days)"
    assert line.amount_minor == 300_000


def test_a_charge_ending_mid_month_is_prorated_with_its_own_description():
    parking = charge(2, kind="parking", amount=3_100, description="Garage 4", end=date(2024, 3, 2))
    draft = bill(lease(charge(amount=100_000), parking), billing_period(month=date(2024, 3, 1)))
    assert [line.description for line in draft.lines] == ["Rent", "Garage 4 (1 Mar, 1/31 days)"]
    assert draft.lines[1].amount_minor == 100


def test_lines_are_ordered_rent_first_whatever_the_input_order():
    charges = (charge(3, kind="storage"), charge(9, kind="rent"), charge(5, kind="parking"))
    draft = bill(lease(*charges), FEB_2024)
    assert [line.kind for line in draft.lines] == ["rent", "parking", "storage"]


def test_charges_are_taxed_per_line_by_kind():
    draft = bill(
        lease(charge(amount=100_000), charge(2, kind="parking", amount=5_005)),
        FEB_2024,
        tax_rates={"parking": 1_900},
    )
    assert [(line.tax_rate_bp, line.tax_minor) for line in draft.lines] == [(0, 0), (1_900, 951)]
    assert (draft.subtotal_minor, draft.tax_minor, draft.total_minor) == (105_005, 951, 105_956)


def test_a_non_integer_tax_rate_is_refused():
    with pytest.raises(ValueError, match="basis points"):
        bill(lease(charge()), FEB_2024, tax_rates={"rent": 19.0})


# --- issue and due dates ------------------------------------------------------------------


def test_the_invoice_is_issued_on_the_billing_day_and_due_after_due_days():
    draft = bill(lease(charge(), billing_day=5, due_days=14), FEB_2024)
    assert (draft.issue_date, draft.due_date) == (date(2024, 2, 5), date(2024, 2, 19))
    assert draft.currency == "EUR"
    assert (draft.period_start, draft.period_end) == FEB_2024


def test_a_move_in_after_the_billing_day_is_issued_on_the_move_in_date():
    draft = bill(lease(charge(), start=date(2024, 2, 20), billing_day=5, due_days=3), FEB_2024)
    assert (draft.issue_date, draft.due_date) == (date(2024, 2, 20), date(2024, 2, 23))


# --- one-off charges ----------------------------------------------------------------------


def test_a_one_off_charge_is_billed_in_the_period_of_its_date():
    fee = charge(
        2, kind="other", amount=5_000, frequency=ONE_OFF, start=date(2024, 2, 14), description="Key"
    )
    draft = bill(lease(charge(), fee), FEB_2024)
    assert [(line.charge_id, line.description) for line in draft.lines] == [(1, "Rent"), (2, "Key")]
    assert (draft.lines[1].service_start, draft.lines[1].service_end) == (
        date(2024, 2, 14),
        date(2024, 2, 15),
    )


def test_a_one_off_charge_already_billed_is_not_billed_again():
    fee = charge(2, kind="other", frequency=ONE_OFF, start=date(2024, 2, 14))
    draft = bill(lease(charge(), fee), FEB_2024, billed=frozenset({2}))
    assert [line.charge_id for line in draft.lines] == [1]


def test_a_missed_one_off_charge_from_an_earlier_month_is_caught_up():
    fee = charge(2, kind="pet", amount=2_000, frequency=ONE_OFF, start=date(2023, 12, 3))
    draft = bill(lease(charge(), fee), FEB_2024)
    assert draft.lines[1].charge_id == 2
    assert draft.lines[1].description == "Pet (dated 3 Dec 2023)"


def test_a_one_off_charge_dated_in_a_later_month_waits():
    fee = charge(2, kind="other", frequency=ONE_OFF, start=date(2024, 3, 1))
    draft = bill(lease(charge(), fee), FEB_2024)
    assert [line.charge_id for line in draft.lines] == [1]


def test_a_one_off_charge_after_move_out_is_billed_on_a_final_invoice():
    cleaning = charge(2, kind="other", amount=15_000, frequency=ONE_OFF, start=date(2024, 2, 5))
    ended = lease(charge(end=date(2024, 1, 31)), cleaning, end=date(2024, 1, 31))
    draft = bill(ended, FEB_2024)
    assert [line.charge_id for line in draft.lines] == [2]
    assert draft.total_minor == 15_000


# --- skips and errors ---------------------------------------------------------------------


def test_a_lease_starting_after_the_period_is_skipped():
    result = bill(lease(charge(), start=date(2024, 3, 1)), FEB_2024)
    assert isinstance(result, BillingSkip)
    assert "starts on 2024-03-01" in result.reason


def test_a_lease_that_ended_before_the_period_is_skipped():
    result = bill(lease(charge(), end=date(2024, 2, 1)), FEB_2024)
    assert isinstance(result, BillingSkip)
    assert "ended on 2024-02-01" in result.reason


def test_a_lease_with_no_charges_at_all_is_an_error_the_landlord_sees():
    assert bill(lease(), FEB_2024) == BillingError("Lease has no charges")


def test_a_lease_whose_charges_do_not_cover_the_period_is_skipped():
    result = bill(lease(charge(end=date(2024, 1, 15))), FEB_2024)
    assert result == BillingSkip("Lease has no charges for this period")


def test_a_lease_whose_charges_all_prorate_to_zero_is_skipped():
    result = bill(lease(charge(amount=1), end=date(2024, 2, 2)), FEB_2024)
    assert result == BillingSkip("Lease has no charges for this period")


def test_a_charge_in_another_currency_is_an_error_naming_the_charge():
    wrong = charge(42, kind="parking", currency="USD", description="Garage 4")
    result = bill(lease(charge(), wrong), FEB_2024)
    assert isinstance(result, BillingError)
    assert result.message == "Charge #42 (Garage 4) is in USD but the lease is in EUR"
    assert result.charge_ids == (42,)


def test_every_broken_charge_is_reported_at_once():
    result = bill(
        lease(charge(1, amount=0), charge(2, frequency="weekly"), billing_day=29), FEB_2024
    )
    assert isinstance(result, BillingError)
    assert result.charge_ids == (1, 2)
    assert "Billing day 29" in result.message
    assert "Charge #1 (Rent) has a non-positive amount" in result.message
    assert "Charge #2 (Rent) has unknown frequency 'weekly'" in result.message


# --- metered utilities --------------------------------------------------------------------


def reading(meter_id=1, previous="100.0", current="112.5", rate="215.5", label="Water W-1"):
    return MeterReadings(
        meter_id=meter_id,
        label=label,
        previous=Decimal(previous),
        current=Decimal(current),
        rate_minor_per_unit=Decimal(rate),
        unit_name="m³",
    )


def test_metered_usage_is_billed_at_the_rate_and_rounded_once_half_even():
    lines = utility_lines_from_readings(
        readings=[reading(), reading(2, "10", "10.5", "5", label="Gas G-2")],
        service_start=FEB_2024[0],
        service_end=FEB_2024[1],
        tax_rates={"utility": 700},
    )
    # 12.5 m³ × 215.5 = 2693.75 -> 2694; 0.5 × 5 = 2.5 -> 2 (ties to even).
    assert [line.amount_minor for line in lines] == [2694, 2]
    assert lines[0].description == "Water W-1 (100.0 → 112.5, 12.5 m³)"
    assert [line.tax_minor for line in lines] == [tax(2694, 700), tax(2, 700)]
    assert all(line.kind == "utility" and line.charge_id is None for line in lines)


def test_a_meter_reading_below_the_previous_one_is_an_error_naming_the_meter():
    result = utility_lines_from_readings(
        readings=[reading(previous="500", current="499.9", label="Water W-1, Apt 3B")],
        service_start=FEB_2024[0],
        service_end=FEB_2024[1],
        tax_rates=NO_TAX,
    )
    assert isinstance(result, BillingError)
    assert "Water W-1, Apt 3B" in result.message
    assert "lower than the previous reading 500" in result.message


def test_an_unchanged_meter_gives_no_line():
    lines = utility_lines_from_readings(
        readings=[reading(current="100.0")],
        service_start=FEB_2024[0],
        service_end=FEB_2024[1],
        tax_rates=NO_TAX,
    )
    assert lines == ()


def test_utility_lines_passed_as_extra_lines_join_the_invoice_totals():
    water = line_draft(
        kind="utility",
        description="Water",
        amount_minor=2_694,
        service_start=FEB_2024[0],
        service_end=FEB_2024[1],
        tax_rates={"utility": 700},
    )
    draft = bill(lease(charge()), FEB_2024, extra_lines=[water])
    assert draft.lines[-1] == water
    assert draft.total_minor == 100_000 + 2_694 + water.tax_minor


@given(
    st.integers(min_value=0, max_value=10**9),
    st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=30),
)
def test_a_rubs_split_gives_shares_summing_exactly_to_the_building_bill(total, weights):
    shares = rubs_split(total_minor=total, weights={f"unit-{i}": w for i, w in enumerate(weights)})
    if not any(weights):
        assert isinstance(shares, BillingError)
        return
    assert sum(shares.values()) == total
    assert list(shares) == [f"unit-{i}" for i in range(len(weights))]


def test_a_rubs_split_follows_the_weights():
    assert rubs_split(total_minor=10_000, weights={"3A": 2, "3B": 1, "3C": 1}) == {
        "3A": 5_000,
        "3B": 2_500,
        "3C": 2_500,
    }


# --- agreement with the models ------------------------------------------------------------


def test_frequencies_and_kinds_match_the_charge_model():
    from tenants.models import ChargeFrequency, ChargeKind

    assert set(FREQUENCIES) == set(ChargeFrequency.values)
    assert list(KIND_LABELS) == list(ChargeKind.values)
