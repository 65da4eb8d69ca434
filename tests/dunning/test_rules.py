"""Property tests for the pure dunning rules, and policy saving that is all or nothing."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, time

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from dunning import rules
from dunning.models import DunningPolicy, DunningTemplate
from dunning.rules import PolicyRules, StepRule
from dunning.selectors import policy_rules
from dunning.services import policy_save, template_save

DUE = date(2026, 12, 6)
amounts = st.integers(min_value=0, max_value=1_000_000)
BASE_STEPS = rules.DEFAULT_RULES.steps


@st.composite
def tiers(draw, cap: int):
    thresholds = sorted(draw(st.sets(amounts, min_size=1, max_size=5)))
    top = cap or 100_000
    fees = sorted(
        draw(st.lists(st.integers(0, top), min_size=len(thresholds), max_size=len(thresholds)))
    )
    return tuple(zip(thresholds, fees, strict=True))


@st.composite
def valid_policies(draw) -> PolicyRules:
    cap = draw(st.one_of(st.just(0), st.integers(1, 50_000)))
    kind = draw(st.sampled_from(["flat", "percent", "tiered"]))
    data = PolicyRules(
        steps=BASE_STEPS,
        fee_kind=kind,
        fee_flat_minor=draw(st.integers(1, cap or 100_000)) if kind == "flat" else 0,
        fee_percent_bp=draw(st.integers(1, 10_000)) if kind == "percent" else 0,
        fee_tiers=draw(tiers(cap)) if kind == "tiered" else (),
        min_overdue_minor=draw(st.integers(0, 200_000)),
        max_fee_minor=cap,
        retry_days=(1, 3, 5, 7),
    )
    if draw(st.booleans()):
        data = replace(
            data,
            daily_fee_minor=draw(st.integers(1, cap or 10_000)),
            daily_fee_cap_minor=draw(st.integers(1, 100_000)),
        )
    assert rules.validate(data) == {}, rules.validate(data)
    return data


@given(valid_policies(), amounts, amounts)
def test_fees_are_never_negative(policy, overdue, charged):
    assert rules.late_fee_amount(policy, overdue_minor=overdue, charged_minor=charged) >= 0
    daily = rules.daily_fee_amount(
        policy, overdue_minor=overdue, daily_charged_minor=charged, charged_minor=charged
    )
    assert daily >= 0


@given(valid_policies(), st.integers(1, 1_000_000))
def test_an_unpaid_invoice_never_pays_more_than_the_legal_maximum_or_daily_cap(policy, total):
    rows = rules.preview(policy, due_date=DUE, total_minor=total)
    fees = [r.fee_minor for r in rows]
    assert all(f >= 0 for f in fees)
    if policy.max_fee_minor:
        assert sum(fees) <= policy.max_fee_minor
    daily = sum(r.fee_minor for r in rows if r.action == "daily_fee")
    assert daily <= policy.daily_fee_cap_minor or not policy.daily_fee_minor
    assert [r.day for r in rows] == sorted(r.day for r in rows)


@given(valid_policies(), st.lists(st.tuples(st.booleans(), amounts), max_size=40), amounts)
def test_fees_charged_in_any_order_stay_under_the_maximum(policy, calls, overdue):
    """The engine's way: each fee is cut by what was charged on the invoice before."""
    charged = daily = 0
    for is_daily, _noise in calls:
        if is_daily:
            fee = rules.daily_fee_amount(
                policy, overdue_minor=overdue, daily_charged_minor=daily, charged_minor=charged
            )
            daily += fee
        else:
            fee = rules.late_fee_amount(policy, overdue_minor=overdue, charged_minor=charged)
        charged += fee
        if policy.max_fee_minor:
            assert charged <= policy.max_fee_minor
        if policy.daily_fee_minor:
            assert daily <= policy.daily_fee_cap_minor


@given(valid_policies(), amounts, amounts)
def test_owing_more_never_costs_a_smaller_late_fee(policy, a, b):
    low, high = sorted((a, b))
    assert rules.late_fee_amount(policy, overdue_minor=low) <= rules.late_fee_amount(
        policy, overdue_minor=high
    )


@given(st.lists(st.tuples(amounts, amounts), min_size=2, max_size=5, unique_by=lambda t: t[0]))
def test_tiers_whose_fees_fall_are_refused(pairs):
    pairs = sorted(pairs)
    fees = [f for _t, f in pairs]
    data = replace(rules.DEFAULT_RULES, fee_kind="tiered", fee_tiers=tuple(pairs), max_fee_minor=0)
    assert ("fee_tiers" in rules.validate(data)) == (fees != sorted(fees))


@given(st.permutations(BASE_STEPS))
def test_steps_out_of_date_order_are_refused(steps):
    data = replace(rules.DEFAULT_RULES, steps=tuple(steps), fee_kind="flat", fee_flat_minor=100)
    in_order = [s.offset_days for s in steps] == sorted(s.offset_days for s in steps)
    assert ("steps" in rules.validate(data)) == (not in_order)


@given(
    st.sampled_from(
        [
            "fee_flat_minor",
            "daily_fee_minor",
            "daily_fee_cap_minor",
            "min_overdue_minor",
            "max_fee_minor",
        ]
    ),
    st.integers(max_value=-1),
)
def test_negative_amounts_are_refused_by_field(name, value):
    changes = {"fee_kind": "flat", "fee_flat_minor": 100, name: value}
    assert name in rules.validate(replace(rules.DEFAULT_RULES, **changes))


@given(st.integers(1, 50_000), st.integers(1, 50_000))
def test_fees_above_the_legal_maximum_are_refused(cap, over):
    base = replace(
        rules.DEFAULT_RULES, fee_kind="flat", fee_flat_minor=cap + over, max_fee_minor=cap
    )
    assert "fee_flat_minor" in rules.validate(base)
    daily = replace(base, fee_flat_minor=cap, daily_fee_minor=cap + over, daily_fee_cap_minor=cap)
    assert "daily_fee_minor" in rules.validate(daily)
    tiered = replace(base, fee_kind="tiered", fee_tiers=((0, cap + over),))
    assert "fee_tiers" in rules.validate(tiered)


@given(st.integers(0, 23 * 60 - 1), st.integers(0, 59))
def test_a_window_shorter_than_an_hour_is_refused(start_minute, length):
    start = time(start_minute // 60, start_minute % 60)
    end_minute = start_minute + length
    end = time(end_minute // 60, end_minute % 60)
    data = replace(rules.DEFAULT_RULES, send_window_start=start, send_window_end=end)
    assert "send_window_end" in rules.validate(data)


@given(st.integers(-10_000, 30_000))
def test_a_percentage_outside_0_to_100_is_refused_for_every_fee_kind(bp):
    data = replace(rules.DEFAULT_RULES, fee_kind="flat", fee_flat_minor=100, fee_percent_bp=bp)
    assert ("fee_percent_bp" in rules.validate(data)) == (not 0 <= bp <= 10_000)


@settings(max_examples=50)
@given(st.lists(st.sampled_from(BASE_STEPS), min_size=1, max_size=7, unique=True))
def test_of_notices_due_at_once_only_the_latest_is_sent_fees_and_escalation_never_dropped(due):
    act, old = rules.superseded(due)
    assert sorted(act + old, key=due.index) == due
    assert all(s.action in rules.NOTICE_ACTIONS for s in old)
    sent = [s for s in act if s.action in rules.NOTICE_ACTIONS]
    notices = [s for s in due if s.action in rules.NOTICE_ACTIONS]
    if notices:
        assert sent == [max(notices, key=lambda s: s.offset_days)]


# --- saving a policy ---------------------------------------------------------------------


BAD = [
    ({"steps": (StepRule(5, "late_fee"), StepRule(1, "overdue_notice"))}, "steps"),
    ({"fee_flat_minor": -100}, "fee_flat_minor"),
    ({"fee_flat_minor": 9_000, "max_fee_minor": 5_000}, "fee_flat_minor"),
    ({"send_window_start": time(8, 0), "send_window_end": time(8, 30)}, "send_window_end"),
    ({"retry_days": (3, 1)}, "retry_days"),
    ({"fee_percent_bp": 20_000}, "fee_percent_bp"),
    ({"fee_kind": "tiered", "fee_tiers": ((0, 3_000), (50_000, 1_000))}, "fee_tiers"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("changes", "field"), BAD)
def test_a_bad_policy_is_refused_by_field_and_the_old_one_stays(landlord, changes, field):
    good = replace(rules.DEFAULT_RULES, fee_kind="flat", fee_flat_minor=2_500, max_fee_minor=5_000)
    saved = policy_save(landlord=landlord, policy=None, name="Standard", data=good)
    before = (saved.name, policy_rules(saved), list(saved.steps.values_list("pk", flat=True)))
    with pytest.raises(ValidationError) as refused:
        policy_save(landlord=landlord, policy=saved, name="Renamed", data=replace(good, **changes))
    assert field in refused.value.message_dict
    again = DunningPolicy.objects.get(pk=saved.pk)
    after = (again.name, policy_rules(again), list(again.steps.values_list("pk", flat=True)))
    assert after == before


@pytest.mark.django_db
def test_a_name_too_long_is_refused_by_field(landlord):
    good = replace(rules.DEFAULT_RULES, fee_kind="flat", fee_flat_minor=2_500)
    with pytest.raises(ValidationError) as refused:
        policy_save(landlord=landlord, policy=None, name="x" * 101, data=good)
    assert "name" in refused.value.message_dict
    assert not DunningPolicy.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("subject", "Rent {{ amount_owed }} due"),
        ("body", "Hello {{ tenant_name }}, pay {{ amount_due }} {% if x %}"),
        ("sms", "{{ landlord_name }}: {{ invoice_numbr }}"),
    ],
)
def test_a_message_with_an_unknown_placeholder_is_refused_by_field(landlord, field, text):
    texts = {
        "subject": "Reminder",
        "body": "Hello {{ tenant_name }}",
        "sms": "Pay {{ portal_url }}",
    }
    template_save(landlord=landlord, kind="reminder", language="en", **texts)
    with pytest.raises(ValidationError) as refused:
        template_save(landlord=landlord, kind="reminder", language="en", **{**texts, field: text})
    assert list(refused.value.message_dict) == [field]
    kept = DunningTemplate.objects.get(landlord=landlord, kind="reminder", language="en")
    assert (kept.subject, kept.body, kept.sms) == (texts["subject"], texts["body"], texts["sms"])
