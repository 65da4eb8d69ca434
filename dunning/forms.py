"""Dashboard forms for dunning: the policy editor (with its rows of steps), message
templates and the tenant controls.

Amounts are typed as decimals in the landlord's default currency and turned into minor
units with `money.currency.to_minor`; the business rules themselves (order of steps,
fee caps, the sending window) are checked once, by `rules.validate` inside
`services.policy_save`, whose field names these forms share.
"""

from __future__ import annotations

import re
from datetime import date, time

from django import forms
from django.core.exceptions import ValidationError

from dunning import rules
from dunning.models import Action, Channels, DunningPolicy, FeeKind
from money.currency import MAX_TYPED_MINOR, from_minor, to_minor

TIME_INPUT = forms.TimeInput(attrs={"type": "time"}, format="%H:%M")
DATE_INPUT = forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
_PERCENT = re.compile(r"^\s*(\d{1,3})(?:[.,](\d{1,2}))?\s*%?\s*$")


def amount_text(minor: int | None, currency: str) -> str:
    """Minor units as the amount a person would type ("25.00"); "" for nothing."""
    if not minor:
        return ""
    return str(from_minor(int(minor), currency))


# The bound of every typed amount (charges, deposits, fees): money.currency.
MAX_MINOR = MAX_TYPED_MINOR


class MoneyField(forms.CharField):
    """A decimal amount in `currency` → minor units (0 when left empty). A minus sign is
    kept, so `rules.validate` reports "must not be negative" on the field itself."""

    def __init__(self, *, currency: str, **kwargs):
        self.currency = currency
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal"}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, int):
            return amount_text(value, self.currency)
        return value

    def clean(self, value) -> int:
        text = (super().clean(value) or "").strip()
        if not text:
            return 0
        try:
            minor = to_minor(text, self.currency)
        except ValueError:
            raise ValidationError(
                f"Enter an amount in {self.currency}, like 25.00.", code="amount"
            ) from None
        if abs(minor) > MAX_MINOR:
            raise ValidationError("That amount is too large for a rent fee.", code="amount")
        return minor


class PercentField(forms.CharField):
    """A percentage with up to two decimals ("5", "2.5 %") → basis points."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal"}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, int):
            return "" if not value else f"{value / 100:g}"
        return value

    def clean(self, value) -> int:
        text = (super().clean(value) or "").strip()
        if not text:
            return 0
        match = _PERCENT.match(text)
        if not match:
            raise ValidationError("Enter a percentage like 5 or 2.5.", code="percent")
        return int(match[1]) * 100 + int((match[2] or "0").ljust(2, "0"))


class TiersField(forms.CharField):
    """One tier a line, "overdue from: fee" in decimals ("500.00: 25.00") →
    ((threshold_minor, fee_minor), ...) in the order typed (the rules check the order)."""

    def __init__(self, *, currency: str, **kwargs):
        self.currency = currency
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(
                f"{amount_text(t, self.currency) or '0'}: {amount_text(f, self.currency) or '0'}"
                for t, f in value
            )
        return value

    def clean(self, value) -> tuple[tuple[int, int], ...]:
        text = super().clean(value) or ""
        tiers = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            threshold, sep, fee = line.partition(":")
            try:
                if not sep:
                    raise ValueError
                tiers.append((to_minor(threshold, self.currency), to_minor(fee, self.currency)))
            except ValueError:
                raise ValidationError(
                    f"Line {number}: write a tier as 'overdue from: fee', e.g. 500.00: 25.00.",
                    code="tier",
                ) from None
            if max(abs(tiers[-1][0]), abs(tiers[-1][1])) > MAX_MINOR:
                raise ValidationError(
                    f"Line {number}: that amount is too large for a rent fee.", code="amount"
                )
        return tuple(tiers)


class DaysField(forms.CharField):
    """Days as "1, 3, 5, 7" → (1, 3, 5, 7), in the order typed."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return ", ".join(str(d) for d in value)
        return value

    def clean(self, value) -> tuple[int, ...]:
        text = super().clean(value) or ""
        parts = [p for p in re.split(r"[,;\s]+", text) if p]
        if not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
            raise ValidationError("Enter days as numbers separated by commas, e.g. 1, 3, 5, 7.")
        return tuple(int(p) for p in parts)


FIELD_ORDER = [
    "name",
    "send_window_start",
    "send_window_end",
    "fee_kind",
    "fee_flat_minor",
    "fee_percent_bp",
    "fee_tiers",
    "daily_fee_minor",
    "daily_fee_cap_minor",
    "min_overdue_minor",
    "max_fee_minor",
    "retry_days",
    "make_default",
]


class PolicyForm(forms.Form):
    name = forms.CharField(max_length=100)
    send_window_start = forms.TimeField(
        label="Send messages from", widget=TIME_INPUT, initial=time(8, 0)
    )
    send_window_end = forms.TimeField(
        label="Until",
        widget=TIME_INPUT,
        initial=time(20, 0),
        help_text="In the tenant's time zone; outside this window nothing is sent.",
    )
    fee_kind = forms.ChoiceField(label="Late fee", choices=FeeKind.choices)
    fee_percent_bp = PercentField(label="Percentage of the overdue rent (%)")
    make_default = forms.BooleanField(
        label="Make this the default policy", required=False, initial=False
    )

    def __init__(self, *args, currency: str, policy: DunningPolicy | None = None, **kwargs):
        self.currency = currency
        if policy is not None and "initial" not in kwargs:
            kwargs["initial"] = policy_initial(policy)
        super().__init__(*args, **kwargs)
        money = {"currency": currency}
        self.fields["fee_flat_minor"] = MoneyField(label=f"Flat fee ({currency})", **money)
        self.fields["fee_tiers"] = TiersField(
            label=f"Tiers ({currency})",
            help_text="One a line, 'overdue from: fee', rising: e.g. 0: 10.00 and 500.00: 25.00.",
            **money,
        )
        self.fields["daily_fee_minor"] = MoneyField(
            label=f"Daily fee after the late fee ({currency})",
            help_text="Optional; charged each day after the late-fee step.",
            **money,
        )
        self.fields["daily_fee_cap_minor"] = MoneyField(
            label=f"Daily fees at most ({currency})", **money
        )
        self.fields["min_overdue_minor"] = MoneyField(
            label=f"No fee when less than this is overdue ({currency})", **money
        )
        self.fields["max_fee_minor"] = MoneyField(
            label=f"Legal maximum of all fees on one invoice ({currency})",
            help_text="Empty: no maximum set.",
            **money,
        )
        self.fields["retry_days"] = DaysField(
            label="Retry a failed automatic payment after (days)",
            help_text="Days after the due date, rising, e.g. 1, 3, 5, 7.",
        )
        self.order_fields(FIELD_ORDER)
        if policy is not None and policy.is_default:
            del self.fields["make_default"]

    def to_rules(self, steps: tuple[rules.StepRule, ...]) -> rules.PolicyRules:
        data = self.cleaned_data
        return rules.PolicyRules(
            steps=steps,
            send_window_start=data["send_window_start"],
            send_window_end=data["send_window_end"],
            fee_kind=data["fee_kind"],
            fee_flat_minor=data["fee_flat_minor"],
            fee_percent_bp=data["fee_percent_bp"],
            fee_tiers=data["fee_tiers"],
            daily_fee_minor=data["daily_fee_minor"],
            daily_fee_cap_minor=data["daily_fee_cap_minor"],
            min_overdue_minor=data["min_overdue_minor"],
            max_fee_minor=data["max_fee_minor"],
            retry_days=data["retry_days"],
        )


def policy_initial(policy: DunningPolicy | rules.PolicyRules, *, name: str = "") -> dict:
    return {
        "name": getattr(policy, "name", name),
        "send_window_start": policy.send_window_start,
        "send_window_end": policy.send_window_end,
        "fee_kind": policy.fee_kind,
        "fee_flat_minor": policy.fee_flat_minor,
        "fee_percent_bp": policy.fee_percent_bp,
        "fee_tiers": [tuple(t) for t in policy.fee_tiers or ()],
        "daily_fee_minor": policy.daily_fee_minor,
        "daily_fee_cap_minor": policy.daily_fee_cap_minor,
        "min_overdue_minor": policy.min_overdue_minor,
        "max_fee_minor": policy.max_fee_minor,
        "retry_days": list(policy.retry_days or ()),
    }


class StepForm(forms.Form):
    """One row of the step list; a row without an action is left out."""

    offset_days = forms.IntegerField(
        label="Days from due date",
        required=False,
        widget=forms.NumberInput(attrs={"inputmode": "numeric"}),
    )
    action = forms.ChoiceField(
        label="Action", required=False, choices=[("", "— (remove)")] + Action.choices
    )
    channels = forms.ChoiceField(label="Send by", choices=Channels.choices, initial="email")

    def clean(self):
        data = super().clean()
        if data.get("action") and data.get("offset_days") is None:
            self.add_error("offset_days", "Enter the day, e.g. -3 or 5.")
        return data

    def step(self) -> rules.StepRule | None:
        data = getattr(self, "cleaned_data", None) or {}
        if not data.get("action") or data.get("offset_days") is None:
            return None
        return rules.StepRule(data["offset_days"], data["action"], data.get("channels") or "none")


StepFormSet = forms.formset_factory(StepForm, extra=2, max_num=30, absolute_max=40)


def step_formset(data=None, *, steps: tuple[rules.StepRule, ...] | list = ()) -> forms.BaseFormSet:
    initial = [
        {"offset_days": s.offset_days, "action": s.action, "channels": s.channels} for s in steps
    ]
    return StepFormSet(data, initial=initial, prefix="steps")


def formset_steps(formset) -> tuple[rules.StepRule, ...]:
    """The steps of a valid formset, in the order the rows were listed."""
    return tuple(step for form in formset.forms if (step := form.step()) is not None)


class PreviewForm(forms.Form):
    """The sample invoice the policy preview is worked out for."""

    sample_amount = forms.CharField(
        label="Sample invoice amount", required=False, initial="1000.00"
    )
    sample_due = forms.DateField(label="Due on", required=False, widget=DATE_INPUT)

    def __init__(self, *args, currency: str, due: date, **kwargs):
        self.currency = currency
        super().__init__(*args, **kwargs)
        self.fields["sample_amount"].label = f"Sample invoice amount ({currency})"
        self.fields["sample_due"].initial = due
        self.default_due = due

    def values(self) -> tuple[int, date]:
        amount, due = to_minor("1000", self.currency), self.default_due
        if self.is_bound and self.is_valid():
            try:
                text = (self.cleaned_data.get("sample_amount") or "").strip()
                amount = to_minor(text, self.currency) if text else amount
            except ValueError:
                self.add_error("sample_amount", f"Enter an amount in {self.currency}.")
            due = self.cleaned_data.get("sample_due") or due
        if not date(1900, 1, 1) <= due <= date(9000, 1, 1):
            due = self.default_due  # the calendar ends near year 9999; the preview adds days
        return min(max(amount, 0), MAX_MINOR), due


class TemplateForm(forms.Form):
    subject = forms.CharField(max_length=300, required=False)
    body = forms.CharField(
        label="Email text", required=False, widget=forms.Textarea(attrs={"rows": 12})
    )
    sms = forms.CharField(
        label="SMS text", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )


class PauseForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        help_text="e.g. Payment plan agreed until March.",
        error_messages={"required": "Say why dunning is paused, e.g. 'payment plan'."},
    )


class WaiveForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with the reversal, in the dunning timeline and the activity log.",
        error_messages={"required": "Say why the fee is waived."},
    )


class LeasePolicyForm(forms.Form):
    policy = forms.ModelChoiceField(
        queryset=DunningPolicy.objects.none(),
        required=False,
        empty_label="The default policy",
        label="Dunning policy",
    )

    def __init__(self, *args, policies, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["policy"].queryset = policies
