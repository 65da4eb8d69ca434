"""Dashboard forms. They parse input only; saving goes through tenants.services.

Every choice field that points at landlord-owned rows is limited to the current
landlord's rows, so a forged id of another landlord fails as "not a valid choice".
"""

from __future__ import annotations

import zoneinfo

from django import forms
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from money.currency import MAX_TYPED_MINOR, from_minor, is_known_currency, to_minor
from tenants.models import (
    Charge,
    ChargeKind,
    Landlord,
    Lease,
    Property,
    Role,
    Tenant,
    Unit,
    validate_phone,
)

TIMEZONE_CHOICES = sorted((tz, tz) for tz in zoneinfo.available_timezones() if "/" in tz)
DATE_INPUT = forms.DateInput(attrs={"type": "date"})


def apply_service_errors(form: forms.Form, error: ValidationError) -> None:
    """Attach a service's ValidationError to the form, on the fields it names."""
    if hasattr(error, "error_dict"):
        for field, messages in error.message_dict.items():
            target = field if field in form.fields else None
            for message in messages:
                form.add_error(target, message)
    else:
        for message in error.messages:
            form.add_error(None, message)


class CurrencyInput(forms.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 3)
        kwargs.setdefault("help_text", "ISO 4217 code, e.g. EUR, USD, GBP")
        super().__init__(**kwargs)

    def clean(self, value):
        value = (super().clean(value) or "").strip().upper()
        if value and not is_known_currency(value):
            raise ValidationError(f"{value} is not a currency code we know (ISO 4217, e.g. EUR).")
        return value


class AmountInput(forms.CharField):
    """A money amount typed by a person ("1,250.00"); converted to minor units by the form
    once the currency is known, so "12.345 EUR" is refused rather than rounded."""

    def __init__(self, *, allow_zero: bool = False, **kwargs):
        self.allow_zero = allow_zero
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal"}))
        super().__init__(**kwargs)


def amount_to_minor(
    form: forms.Form, field: str, currency: str, *, allow_zero: bool = False
) -> int | None:
    text = form.cleaned_data.get(field)
    if text in (None, ""):
        return None
    try:
        minor = to_minor(str(text), currency)
    except ValueError as exc:
        form.add_error(field, str(exc).replace("'", ""))
        return None
    if minor < 0 or (minor == 0 and not allow_zero):
        form.add_error(
            field, "Enter an amount greater than zero." if not allow_zero else "Enter zero or more."
        )
        return None
    if minor > MAX_TYPED_MINOR:
        limit = from_minor(MAX_TYPED_MINOR, currency)
        form.add_error(field, f"Enter an amount of at most {limit:,} {currency}.")
        return None
    return minor


class SignUpForm(forms.Form):
    company = forms.CharField(label="Company or landlord name", max_length=200)
    full_name = forms.CharField(label="Your name", max_length=150)
    email = forms.EmailField()
    password = forms.CharField(widget=forms.PasswordInput, min_length=8)
    timezone = forms.ChoiceField(choices=TIMEZONE_CHOICES, initial="Europe/Berlin")
    currency = CurrencyInput(initial="EUR")

    def clean_password(self):
        password = self.cleaned_data["password"]
        validate_password(password)
        return password


class InviteStaffForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MANAGER)


class AcceptInvitationForm(forms.Form):
    full_name = forms.CharField(max_length=150, required=False)
    password = forms.CharField(widget=forms.PasswordInput, required=False)

    def __init__(self, *args, needs_password: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.needs_password = needs_password
        if not needs_password:
            del self.fields["password"]
            del self.fields["full_name"]

    def clean_password(self):
        password = self.cleaned_data.get("password", "")
        if self.needs_password:
            if not password:
                raise ValidationError("Choose a password.")
            validate_password(password)
        return password


class LandlordSettingsForm(forms.ModelForm):
    timezone = forms.ChoiceField(choices=TIMEZONE_CHOICES)
    default_currency = CurrencyInput()

    class Meta:
        model = Landlord
        fields = [
            "name",
            "timezone",
            "default_currency",
            "email",
            "phone",
            "address_line1",
            "address_line2",
            "city",
            "postal_code",
            "country",
            "tax_id",
            "brand_color",
            "logo",
            "invoice_footer",
            "payment_instructions",
        ]
        widgets = {"brand_color": forms.TextInput(attrs={"type": "color"})}

    def service_fields(self) -> dict:
        fields = dict(self.cleaned_data)
        logo = fields.pop("logo", None)
        if logo is False:  # "clear" ticked
            fields["logo"] = ""
        elif logo is not None and logo != self.initial.get("logo"):
            fields["logo"] = logo
        return fields


class PropertyForm(forms.ModelForm):
    class Meta:
        model = Property
        fields = ["name", "address_line1", "address_line2", "city", "postal_code", "country"]


class UnitForm(forms.ModelForm):
    class Meta:
        model = Unit
        fields = ["property", "name", "bedrooms", "floor_area_m2"]

    def __init__(self, *args, landlord: Landlord, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["property"].queryset = Property.objects.for_landlord(landlord).order_by("name")


class TenantForm(forms.ModelForm):
    class Meta:
        model = Tenant
        fields = ["full_name", "email", "phone", "language", "timezone"]

    def clean_phone(self) -> str:
        """Dunning texts this number, so a new or changed one must look like one; a
        number stored before the check stays editable as long as it is not changed."""
        phone = (self.cleaned_data.get("phone") or "").strip()
        if phone and phone != (self.instance.phone or ""):
            validate_phone(phone)
        return phone


class LeaseForm(forms.ModelForm):
    currency = CurrencyInput()
    deposit = AmountInput(
        required=False, allow_zero=True, help_text="Security deposit held, e.g. 2400.00"
    )
    tenants = forms.ModelMultipleChoiceField(
        queryset=Tenant.objects.none(), widget=forms.SelectMultiple(attrs={"size": 6})
    )

    class Meta:
        model = Lease
        fields = [
            "unit",
            "tenants",
            "start_date",
            "end_date",
            "currency",
            "billing_day",
            "due_days",
        ]
        widgets = {"start_date": DATE_INPUT, "end_date": DATE_INPUT}
        help_texts = {
            "billing_day": "Day of the month the invoice is issued (1–28).",
            "due_days": "Days after issue until the invoice is due.",
            "end_date": "Move-out: the first day no longer let. Leave empty for open-ended.",
        }

    def __init__(self, *args, landlord: Landlord, **kwargs):
        super().__init__(*args, **kwargs)
        self.landlord = landlord
        self.fields["unit"].queryset = (
            Unit.objects.for_landlord(landlord)
            .select_related("property")
            .order_by("property__name", "name")
        )
        self.fields["tenants"].queryset = Tenant.objects.for_landlord(landlord).order_by(
            "full_name"
        )
        if not self.instance.pk:
            self.fields["currency"].initial = landlord.default_currency
        else:
            self.fields["deposit"].initial = from_minor(
                self.instance.deposit_minor, self.instance.currency
            )
        self.fields["billing_day"].widget.attrs.update({"min": 1, "max": 28})

    def clean_billing_day(self):
        day = self.cleaned_data["billing_day"]
        if day is None or not 1 <= day <= 28:
            raise ValidationError(
                "The billing day must be between 1 and 28, so it exists in every month."
            )
        return day

    def clean(self):
        data = super().clean()
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and end <= start:
            self.add_error("end_date", "The end date must be after the start date.")
        currency = data.get("currency")
        if currency:
            data["deposit_minor"] = amount_to_minor(self, "deposit", currency, allow_zero=True) or 0
        return data

    def service_fields(self) -> dict:
        data = self.cleaned_data
        return {
            "unit": data["unit"],
            "start_date": data["start_date"],
            "end_date": data.get("end_date"),
            "currency": data["currency"],
            "billing_day": data["billing_day"],
            "due_days": data["due_days"],
            "deposit_minor": data.get("deposit_minor", 0),
        }


class EndLeaseForm(forms.Form):
    end_date = forms.DateField(
        widget=DATE_INPUT, help_text="The first day the unit is no longer let."
    )
    reason = forms.CharField(max_length=200, help_text="e.g. Tenant gave notice")


class ChargeForm(forms.ModelForm):
    amount = AmountInput(help_text="e.g. 1200.00")
    currency = CurrencyInput(required=False, help_text="Leave empty to use the lease's currency.")

    class Meta:
        model = Charge
        fields = ["kind", "description", "frequency", "start_date", "end_date"]
        widgets = {"start_date": DATE_INPUT, "end_date": DATE_INPUT}
        help_texts = {"start_date": "For a one-off charge: the date it is billed."}

    def __init__(self, *args, lease: Lease, **kwargs):
        super().__init__(*args, **kwargs)
        self.lease = lease
        self.fields["kind"].choices = [
            choice for choice in self.fields["kind"].choices if choice[0] != ChargeKind.LATE_FEE
        ]
        if self.instance.pk:
            self.fields["amount"].initial = from_minor(
                self.instance.amount_minor, self.instance.currency
            )
            self.fields["currency"].initial = self.instance.currency
        else:
            self.fields["start_date"].initial = lease.start_date

    def clean(self):
        data = super().clean()
        currency = data.get("currency") or self.lease.currency
        if currency != self.lease.currency:
            self.add_error(
                "currency",
                f"This lease is billed in {self.lease.currency}; use {self.lease.currency}.",
            )
            return data
        data["currency"] = currency
        data["amount_minor"] = amount_to_minor(self, "amount", currency)
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and end <= start:
            self.add_error("end_date", "The end date must be after the start date.")
        if data.get("frequency") == "one_off" and end:
            self.add_error("end_date", "A one-off charge has no end date.")
        return data

    def service_fields(self) -> dict:
        data = self.cleaned_data
        return {
            k: data.get(k)
            for k in (
                "kind",
                "description",
                "frequency",
                "start_date",
                "end_date",
                "currency",
                "amount_minor",
            )
        }
