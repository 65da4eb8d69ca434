"""Dunning rules as pure functions: policy validation, the step calendar, late-fee
amounts and the sending window. No database here, so hypothesis can test them and the
policy preview shows exactly what the engine will do.

Fee arithmetic goes through `money.rounding` (one rounding rule for the product).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from money import rounding

# Which actions may sit where relative to the due date.
BEFORE_DUE = {"reminder"}
ON_DUE = {"due_notice"}
AFTER_DUE = {"overdue_notice", "late_fee", "final_notice", "escalate"}
NOTICE_ACTIONS = {"reminder", "due_notice", "overdue_notice", "final_notice"}
ACTIONS = BEFORE_DUE | ON_DUE | AFTER_DUE
CHANNELS = {"email", "sms", "both", "email_then_sms", "none"}
FEE_KINDS = {"none", "flat", "percent", "tiered"}

MIN_OFFSET, MAX_OFFSET = -30, 120
MAX_RETRIES = 8
MAX_RETRY_DAY = 30
# The beat ticks hourly, so a shorter window could fall between two ticks.
MIN_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class StepRule:
    offset_days: int
    action: str
    channels: str = "email"

    @property
    def key(self) -> str:
        return f"{self.action}{self.offset_days:+d}"


@dataclass(frozen=True)
class PolicyRules:
    steps: tuple[StepRule, ...] = ()
    send_window_start: time = time(8, 0)
    send_window_end: time = time(20, 0)
    fee_kind: str = "none"
    fee_flat_minor: int = 0
    fee_percent_bp: int = 0
    fee_tiers: tuple[tuple[int, int], ...] = ()
    daily_fee_minor: int = 0
    daily_fee_cap_minor: int = 0
    min_overdue_minor: int = 0
    max_fee_minor: int = 0
    retry_days: tuple[int, ...] = field(default=())


DEFAULT_RULES = PolicyRules(
    steps=(
        StepRule(-3, "reminder", "email"),
        StepRule(0, "due_notice", "email"),
        StepRule(1, "overdue_notice", "email_then_sms"),
        StepRule(5, "late_fee", "email"),
        StepRule(7, "overdue_notice", "both"),
        StepRule(14, "final_notice", "both"),
        StepRule(21, "escalate", "none"),
    ),
    # A flat 25.00 in the invoice's currency, at most 50.00 of fees per invoice.
    fee_kind="flat",
    fee_flat_minor=2_500,
    max_fee_minor=5_000,
    retry_days=(1, 3, 5, 7),
)


def validate(rules: PolicyRules) -> dict[str, list[str]]:
    """Every problem with a policy, by form field ("steps", "fee_flat_minor", ...).

    Empty when the policy may be saved. Kept free of the database so the editor,
    the service and the property tests agree."""
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    previous: StepRule | None = None
    seen: set[tuple[str, int]] = set()
    for number, step in enumerate(rules.steps, start=1):
        where = f"Step {number} ({step.action} {step.offset_days:+d} days)"
        if step.action not in ACTIONS:
            add("steps", f"Step {number}: unknown action {step.action!r}.")
            continue
        if step.channels not in CHANNELS:
            add("steps", f"{where}: unknown channels {step.channels!r}.")
        if not MIN_OFFSET <= step.offset_days <= MAX_OFFSET:
            add("steps", f"{where}: days must be between {MIN_OFFSET} and +{MAX_OFFSET}.")
        if step.action in BEFORE_DUE and step.offset_days >= 0:
            add("steps", f"{where}: a reminder comes before the due date (negative days).")
        if step.action in ON_DUE and step.offset_days != 0:
            add("steps", f"{where}: the due-day notice is on the due date (0 days).")
        if step.action in AFTER_DUE and step.offset_days <= 0:
            add("steps", f"{where}: this step comes after the due date (positive days).")
        if previous is not None and step.offset_days < previous.offset_days:
            add(
                "steps",
                f"{where} comes after a step at {previous.offset_days:+d} days: "
                "list the steps in date order.",
            )
        if (step.action, step.offset_days) in seen:
            add("steps", f"{where} is listed twice.")
        seen.add((step.action, step.offset_days))
        previous = step
    finals = [s.offset_days for s in rules.steps if s.action == "final_notice"]
    notices = [s.offset_days for s in rules.steps if s.action == "overdue_notice"]
    if finals and notices and max(notices) > min(finals):
        add("steps", "The final notice must come after every overdue notice.")
    if len(finals) > 1:
        add("steps", "A policy has at most one final notice.")
    fee_steps = [s for s in rules.steps if s.action == "late_fee"]
    if len(fee_steps) > 1:
        add("steps", "A policy has at most one late-fee step.")
    if rules.fee_kind not in FEE_KINDS:
        add("fee_kind", f"Unknown fee kind {rules.fee_kind!r}.")
    elif rules.fee_kind != "none" and not fee_steps:
        add("fee_kind", "Add a late-fee step, or choose 'No late fee'.")
    elif rules.fee_kind == "none" and fee_steps:
        add("fee_kind", "The policy has a late-fee step: choose how the fee is computed.")

    for name in (
        "fee_flat_minor",
        "daily_fee_minor",
        "daily_fee_cap_minor",
        "min_overdue_minor",
        "max_fee_minor",
    ):
        if getattr(rules, name) < 0:
            add(name, "Must not be negative.")
    cap = rules.max_fee_minor
    if rules.fee_kind == "flat":
        if rules.fee_flat_minor <= 0:
            add("fee_flat_minor", "Enter the flat fee.")
        elif cap and rules.fee_flat_minor > cap:
            add("fee_flat_minor", "The fee is above the legal maximum set for late fees.")
    if rules.fee_kind == "percent" and not 0 < rules.fee_percent_bp <= 10_000:
        add("fee_percent_bp", "Enter a percentage above 0 and at most 100.")
    elif not 0 <= rules.fee_percent_bp <= 10_000:
        # Stored whatever the fee kind; the database refuses it (at most 100 %).
        add("fee_percent_bp", "A percentage is between 0 and 100.")
    if rules.fee_kind == "tiered":
        if not rules.fee_tiers:
            add("fee_tiers", "Enter at least one tier.")
        thresholds = [t for t, _fee in rules.fee_tiers]
        if thresholds != sorted(set(thresholds)):
            add("fee_tiers", "List tiers by rising overdue amount, each amount once.")
        for threshold, fee in rules.fee_tiers:
            if threshold < 0 or fee < 0:
                add("fee_tiers", "Tier amounts must not be negative.")
            elif cap and fee > cap:
                add("fee_tiers", "A tier's fee is above the legal maximum set for late fees.")
        fees = [fee for _t, fee in rules.fee_tiers]
        if fees != sorted(fees):
            # Otherwise owing more could cost a smaller fee.
            add("fee_tiers", "A higher tier's fee cannot be lower than the one before it.")
    if rules.daily_fee_minor:
        if rules.fee_kind == "none":
            add("daily_fee_minor", "A daily fee starts after the late-fee step: add one.")
        if rules.daily_fee_cap_minor <= 0:
            add("daily_fee_cap_minor", "A daily fee needs a cap.")
        if cap and rules.daily_fee_minor > cap:
            add("daily_fee_minor", "The daily fee is above the legal maximum set for late fees.")

    start = datetime.combine(date(2000, 1, 1), rules.send_window_start)
    end = datetime.combine(date(2000, 1, 1), rules.send_window_end)
    if end - start < MIN_WINDOW:
        add(
            "send_window_end",
            "The quiet hours leave no sending window: the window must end at least an "
            "hour after it starts, on the same day.",
        )

    days = list(rules.retry_days)
    if len(days) > MAX_RETRIES:
        add("retry_days", f"At most {MAX_RETRIES} retries.")
    if days != sorted(set(days)) or any(not 1 <= d <= MAX_RETRY_DAY for d in days):
        add("retry_days", f"Retry days rise, each between 1 and {MAX_RETRY_DAY}, e.g. 1, 3, 5, 7.")
    return errors


def in_window(rules: PolicyRules, local: time) -> bool:
    """Whether a message may go out at this local time of the tenant."""
    return rules.send_window_start <= local < rules.send_window_end


def step_day(due_date: date, offset_days: int) -> date:
    return due_date + timedelta(days=offset_days)


def fee_cap(rules: PolicyRules, fee: int, *, charged_minor: int) -> int:
    """`fee`, cut so that the fees of one invoice never pass the legal maximum."""
    if rules.max_fee_minor:
        fee = min(fee, rules.max_fee_minor - charged_minor)
    return max(fee, 0)


def late_fee_amount(rules: PolicyRules, *, overdue_minor: int, charged_minor: int = 0) -> int:
    """The late fee on an invoice with `overdue_minor` still open, given
    `charged_minor` in fees already charged on it. 0 when no fee applies."""
    if overdue_minor <= 0 or overdue_minor < rules.min_overdue_minor:
        return 0
    if rules.fee_kind == "flat":
        fee = rules.fee_flat_minor
    elif rules.fee_kind == "percent":
        fee = rounding.percentage(overdue_minor, rules.fee_percent_bp)
    elif rules.fee_kind == "tiered":
        reached = [fee for threshold, fee in rules.fee_tiers if overdue_minor >= threshold]
        fee = reached[-1] if reached else 0
    else:
        fee = 0
    return fee_cap(rules, fee, charged_minor=charged_minor)


def daily_fee_amount(
    rules: PolicyRules, *, overdue_minor: int, daily_charged_minor: int, charged_minor: int
) -> int:
    """One day's daily fee, within the daily-fee cap and the legal maximum."""
    if not rules.daily_fee_minor or overdue_minor <= 0:
        return 0
    if overdue_minor < rules.min_overdue_minor:
        return 0
    fee = min(rules.daily_fee_minor, rules.daily_fee_cap_minor - daily_charged_minor)
    return fee_cap(rules, fee, charged_minor=charged_minor)


def late_fee_day(rules: PolicyRules, due_date: date) -> date | None:
    for step in rules.steps:
        if step.action == "late_fee":
            return step_day(due_date, step.offset_days)
    return None


@dataclass(frozen=True)
class PreviewRow:
    day: date
    key: str
    action: str
    channels: str
    fee_minor: int = 0


def preview(rules: PolicyRules, *, due_date: date, total_minor: int) -> list[PreviewRow]:
    """What the policy does to an invoice of `total_minor` due on `due_date` that is
    never paid: the policy steps in order, with fees, then the daily fees."""
    rows: list[PreviewRow] = []
    charged = 0
    for step in rules.steps:
        fee = 0
        if step.action == "late_fee":
            fee = late_fee_amount(rules, overdue_minor=total_minor, charged_minor=charged)
            charged += fee
        rows.append(
            PreviewRow(
                step_day(due_date, step.offset_days), step.key, step.action, step.channels, fee
            )
        )
    start = late_fee_day(rules, due_date)
    if start is not None and rules.daily_fee_minor:
        daily = 0
        day = start
        while True:
            day += timedelta(days=1)
            fee = daily_fee_amount(
                rules, overdue_minor=total_minor, daily_charged_minor=daily, charged_minor=charged
            )
            if fee <= 0 or day > due_date + timedelta(days=MAX_OFFSET):
                break
            daily += fee
            charged += fee
            rows.append(PreviewRow(day, f"daily_fee@{day.isoformat()}", "daily_fee", "none", fee))
    return sorted(rows, key=lambda r: r.day)


def superseded(keys_due: Sequence[StepRule]) -> tuple[list[StepRule], list[StepRule]]:
    """Split steps due at once (after a missed tick) into (to act, superseded): of the
    notices only the latest is sent, since an older reminder would only confuse;
    fees and escalation are never superseded."""
    notices = [s for s in keys_due if s.action in NOTICE_ACTIONS]
    if len(notices) <= 1:
        return list(keys_due), []
    latest = max(notices, key=lambda s: s.offset_days)
    old = [s for s in notices if s is not latest]
    return [s for s in keys_due if s not in old], old
