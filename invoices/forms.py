"""Forms of the billing pages that parse more than one field (settings, meter readings)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django import forms
from django.core.exceptions import ValidationError

from invoices.rules import kind_label
from tenants.models import ChargeKind


def percent_to_bp(value: str) -> int | None:
    """ "19" or "7.5" (or "7,5") percent as basis points; blank is None (untaxed)."""
    value = (value or "").strip().rstrip("%").strip().replace(",", ".")
    if not value:
        return None
    try:
        percent = Decimal(value)
    except InvalidOperation:
        raise ValidationError(f"Enter a percentage such as 19 or 7.5, not {value!r}.") from None
    if not percent.is_finite():
        raise ValidationError("Enter a percentage such as 19 or 7.5.")
    if percent < 0:
        raise ValidationError("A tax rate cannot be negative.")
    if percent > 100:
        raise ValidationError("A tax rate cannot be more than 100 %.")
    if percent.as_tuple().exponent < -2:
        raise ValidationError("Use at most two decimals, e.g. 7.25.")
    return int(percent * 100)


class InvoiceSettingsForm(forms.Form):
    number_prefix = forms.CharField(
        max_length=10,
        help_text="Starts every invoice number, e.g. INV gives INV-2026-000001.",
    )
    review_drafts = forms.BooleanField(
        required=False,
        help_text="Stop billing runs at drafts so totals can be reviewed before issuing.",
    )
    send_emails = forms.BooleanField(required=False, help_text="Email each invoice when issued.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for kind, _label in ChargeKind.choices:
            self.fields[f"tax_{kind}"] = forms.CharField(
                required=False,
                max_length=12,
                label=f"Tax on {kind_label(kind).lower()} (%)",
                help_text="A percentage such as 19 or 7.5; leave empty for no tax.",
            )

    def clean(self):
        cleaned = super().clean()
        rates: dict[str, int | None] = {}
        for kind in ChargeKind.values:
            try:
                rates[kind] = percent_to_bp(cleaned.get(f"tax_{kind}", ""))
            except ValidationError as exc:
                self.add_error(f"tax_{kind}", exc)
        cleaned["tax_rates_bp"] = rates
        return cleaned

    @staticmethod
    def initial_for(settings_row, tax_rates: dict[str, int]) -> dict:
        initial = {
            "number_prefix": settings_row.number_prefix,
            "review_drafts": settings_row.review_drafts,
            "send_emails": settings_row.send_emails,
        }
        for kind, rate in tax_rates.items():
            initial[f"tax_{kind}"] = f"{Decimal(rate) / 100:f}"
        return initial


class MeterReadingForm(forms.Form):
    meter = forms.CharField(max_length=60, help_text="e.g. Cold water, Heat.")
    reading_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    value = forms.DecimalField(max_digits=12, decimal_places=3, min_value=0)
    rate_minor_per_unit = forms.DecimalField(
        max_digits=12,
        decimal_places=4,
        min_value=0,
        label="Rate per unit (cents)",
        help_text="Minor units per unit consumed, e.g. 215.5 for 2.155 € per m³.",
    )
