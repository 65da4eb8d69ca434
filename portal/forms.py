"""Portal forms: they parse input; saving goes through portal.services."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from money.currency import to_minor
from payments.forms import MAX_MINOR
from payments.models import STRIPE_METHODS, Method
from portal import selectors
from portal.formats import PORTAL_LANGUAGES, decimal_comma
from tenants.models import validate_phone


class PortalAuthenticationForm(AuthenticationForm):
    """Django's login form, refusing logins that rent nothing (e.g. staff only)."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "no_tenancy": _(
            "This account has no tenant portal. If you work for a landlord, log in to "
            "the staff dashboard at /accounts/login/ instead."
        ),
    }

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not selectors.tenancy_list(user=user).exists():
            raise ValidationError(self.error_messages["no_tenancy"], code="no_tenancy")


class InvitationAcceptForm(forms.Form):
    """New login: choose a password (twice). Existing login with the invited email:
    confirm it is yours with its password."""

    password = forms.CharField(
        label=_("Password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    password2 = forms.CharField(
        label=_("Password again"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def __init__(self, *args, existing: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.existing = existing
        if existing:
            del self.fields["password2"]
            self.fields["password"].label = _("Your current password")
            self.fields["password"].widget.attrs["autocomplete"] = "current-password"
        else:
            self.fields["password"].label = _("Choose a password")
            self.fields["password"].help_text = _(
                "At least 8 characters; not only digits, not a common password."
            )

    def clean(self):
        data = super().clean()
        if not self.existing and data.get("password") != data.get("password2"):
            self.add_error("password2", _("The two passwords differ."))
        return data


class InviteForm(forms.Form):
    email = forms.EmailField(label=_("Email"))


class ProfileForm(forms.Form):
    email = forms.EmailField(
        label=_("Email for invoices and receipts"),
        required=False,
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    phone = forms.CharField(
        label=_("Phone"),
        max_length=40,
        required=False,
        validators=[validate_phone],
        widget=forms.TextInput(attrs={"autocomplete": "tel", "inputmode": "tel"}),
    )
    # Only languages the portal has texts for: a tenant choosing another would
    # still read English here.
    language = forms.ChoiceField(
        label=_("Language"),
        choices=[(code, name) for code, name in settings.LANGUAGES if code in PORTAL_LANGUAGES],
    )


class PayForm(forms.Form):
    """The pay button's POST. `amount` is what the tenant typed (the open amount when
    left empty); whether less than that is accepted, and whether `method` suits the
    currency, is the payments service's rule. `payment_method_id` comes from
    Stripe.js (card, SEPA); an ACH payment has none yet."""

    key = forms.CharField(max_length=200)
    invoice = forms.IntegerField(required=False, min_value=1)
    currency = forms.CharField(max_length=3, required=False)
    amount = forms.CharField(label=_("Amount"), max_length=30, required=False)
    method = forms.ChoiceField(
        label=_("Pay by"), choices=[(m.value, m.label) for m in STRIPE_METHODS], required=False
    )
    payment_method_id = forms.CharField(max_length=255, required=False)
    save_card = forms.BooleanField(required=False)

    def __init__(self, *args, currency: str, due_minor: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.pay_currency = currency
        self.due_minor = due_minor

    def clean_method(self):
        return self.cleaned_data.get("method") or Method.CARD

    def clean_amount(self):
        text = (self.cleaned_data.get("amount") or "").strip()
        if not text:
            return self.due_minor
        if decimal_comma():
            # "1.250,50" / "1 250,50" as written in German, French or Spanish.
            text = re.sub(r"[.\s\u00a0\u202f]", "", text).replace(",", ".")
        try:
            minor = to_minor(text, self.pay_currency)
        except ValueError as exc:
            raise ValidationError(
                _("Enter an amount like %(example)s.")
                % {"example": "250,00" if decimal_comma() else "250.00"}
            ) from exc
        if minor <= 0:
            raise ValidationError(_("Enter an amount above zero."))
        if minor > MAX_MINOR:
            raise ValidationError(_("This amount is too large."))
        return minor
