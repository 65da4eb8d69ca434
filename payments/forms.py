"""Staff forms for payments: record a manual payment, reverse one."""

from __future__ import annotations

import uuid

from django import forms

from invoices.models import Invoice, InvoiceState
from invoices.selectors import invoice_balances
from money.currency import from_minor, is_known_currency, to_minor
from payments.models import MANUAL_METHODS, Method

# Far above any rent, far below the database's bigint.
MAX_MINOR = 10**14


class _TypedAmount(forms.Form):
    """`amount` as a person types it, in the form's `currency`, turned into minor units
    exactly (`amount_minor` in cleaned_data) or refused on the amount field."""

    amount_example = "1200.50"

    def clean(self):
        data = super().clean()
        amount, currency = data.get("amount"), data.get("currency")
        if amount is not None and currency:
            try:
                minor = to_minor(amount, currency)
            except ValueError:
                self.add_error(
                    "amount",
                    f"Enter an amount like {self.amount_example} "
                    f"(no more decimals than {currency} has).",
                )
            else:
                if minor <= 0:
                    self.add_error("amount", "Enter an amount above zero.")
                elif minor > MAX_MINOR:
                    self.add_error("amount", "This amount is too large.")
                else:
                    data["amount_minor"] = minor
        return data


class ManualPaymentForm(_TypedAmount):
    """Cash, a cheque or a bank transfer received by staff. The amount is text (as a
    person types it) turned into minor units exactly; `token` makes a double submit
    record once."""

    amount = forms.CharField(
        max_length=32,
        help_text="As received, e.g. 1200.00 or 1,200.50",
        error_messages={"required": "Enter the amount received."},
    )
    currency = forms.CharField(max_length=3, help_text="ISO 4217 code, e.g. EUR, USD, GBP")
    method = forms.ChoiceField(
        choices=[(m.value, m.label) for m in Method if m in MANUAL_METHODS],
    )
    reference = forms.CharField(
        max_length=200,
        required=False,
        help_text="Cheque number, transfer reference or receipt number.",
    )
    received_on = forms.DateField(
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        input_formats=["%Y-%m-%d"],
        error_messages={"invalid": "Enter a date as YYYY-MM-DD."},
    )
    invoice = forms.ModelChoiceField(
        queryset=Invoice.objects.none(),
        required=False,
        empty_label="Oldest open invoices first",
        help_text="Optional: the invoice this payment is for (paid first).",
    )
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, landlord, tenant, **kwargs):
        super().__init__(*args, **kwargs)
        issued = (
            Invoice.objects.for_landlord(landlord)
            .filter(tenant=tenant, state=InvoiceState.ISSUED)
            .order_by("-issue_date", "-pk")
        )
        # Only invoices with something left to pay: choosing a paid one would only turn
        # the payment into credit. A tenant has a few dozen invoices: one balance query.
        open_minor = {
            pk: minor
            for pk, minor in invoice_balances(landlord=landlord, invoices=issued).items()
            if minor > 0
        }
        self.fields["invoice"].queryset = issued.filter(pk__in=list(open_minor))
        self.fields["invoice"].label_from_instance = lambda inv: (
            f"{inv.number} · {inv.period_start:%b %Y} · "
            f"{from_minor(open_minor.get(inv.pk, 0), inv.currency)} {inv.currency} open"
        )
        if not self.is_bound:
            self.initial.setdefault("token", uuid.uuid4().hex)
            self.initial.setdefault("currency", landlord.default_currency)

    def clean_currency(self) -> str:
        code = self.cleaned_data["currency"].strip().upper()
        if not is_known_currency(code):
            raise forms.ValidationError("Unknown currency code.")
        return code


class PaymentReverseForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with the ledger reversal and in the activity log, e.g. Cheque bounced.",
        error_messages={"required": "Say why the payment is reversed."},
    )


class CreditPayBackReverseForm(forms.Form):
    reason = forms.CharField(
        max_length=200,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with the ledger reversal and in the activity log, e.g. Wrong amount typed.",
        error_messages={"required": "Say why the pay-back is undone."},
    )


class PaymentSettingsForm(forms.Form):
    allow_partial = forms.BooleanField(
        label="Allow partial payments",
        required=False,
        help_text=(
            "Tenants may pay less than the open amount in the portal (the rest stays open). "
            "Off: the full open amount or more. Paying more is always allowed and kept as "
            "the tenant's credit for the next invoice."
        ),
    )


class CreditPayBackForm(_TypedAmount):
    """Staff paid a tenant's credit back. Currencies offered are those the tenant holds
    credit in; the amount is text turned into minor units exactly; `token` makes a
    double submit record once."""

    amount = forms.CharField(
        max_length=32,
        help_text="As paid, e.g. 430.00",
        error_messages={"required": "Enter the amount paid back."},
    )
    currency = forms.ChoiceField(choices=())
    method = forms.ChoiceField(
        label="Paid by",
        choices=[(m.value, m.label) for m in Method if m in MANUAL_METHODS],
        initial=Method.BANK_TRANSFER,
    )
    reference = forms.CharField(
        max_length=200,
        required=False,
        help_text="Transfer reference or cheque number.",
    )
    paid_on = forms.DateField(
        label="Paid on",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        input_formats=["%Y-%m-%d"],
        error_messages={"invalid": "Enter a date as YYYY-MM-DD."},
    )
    token = forms.CharField(widget=forms.HiddenInput, max_length=64)

    amount_example = "430.50"

    def __init__(self, *args, credits: dict[str, int], currencies: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        # Every currency the tenant is billed in, not only those with credit now: a
        # second submit of a pay-back that took the last of it must reach the service,
        # which answers it as the same request.
        codes = sorted(set(credits) | set(currencies))
        self.fields["currency"].choices = [(code, code) for code in codes]
        if not self.is_bound:
            self.initial.setdefault("token", uuid.uuid4().hex)
            if len(credits) == 1:
                ((code, held),) = credits.items()
                self.initial.setdefault("currency", code)
                self.initial.setdefault("amount", str(from_minor(held, code)))
