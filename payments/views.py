"""Staff payment pages (/app/payments/, /app/stripe-events/): payments list and
detail, manual payments recorded and reversed by staff, the Stripe webhook event log.

Edges only, on the dashboard's `StaffView`: looking needs VIEW; recording, reversing
and reprocessing need MANAGE_MONEY. Objects come through the landlord-scoped
selectors, so another landlord's id is a 404.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse

from ledger.models import LedgerTransaction
from payments import selectors, services
from payments.forms import (
    CreditPayBackForm,
    CreditPayBackReverseForm,
    ManualPaymentForm,
    PaymentReverseForm,
    PaymentSettingsForm,
)
from payments.models import (
    EventStatus,
    Method,
    Payment,
    PaymentStatus,
    Source,
    StripeEvent,
)
from tenants.exports import csv_amount, csv_download, csv_text
from tenants.forms import apply_service_errors
from tenants.models import Permission, Tenant
from tenants.query import bad_query, query_errors, whole_number
from tenants.views import StaffView

# Events an operator may push through the processor again.
REPROCESSABLE = (EventStatus.FAILED, EventStatus.UNMATCHED, EventStatus.RECEIVED)


def _choice(params, name: str, choices) -> str:
    value = params.get(name, "")
    return value if value in choices.values else ""


def _payment_filters(params) -> selectors.PaymentFilters:
    return selectors.PaymentFilters(
        q=params.get("q", "").strip()[:100],
        status=_choice(params, "status", PaymentStatus),
        method=_choice(params, "method", Method),
        source=_choice(params, "source", Source),
        tenant_id=whole_number(params.get("tenant")),
    )


class PaymentListView(StaffView):
    def get(self, request):
        filters = _payment_filters(request.GET)
        kept = filters.as_query()
        qs = selectors.payment_search(landlord=self.landlord, filters=filters)
        return self.render(
            "payments/dashboard/payment_list.html",
            q=filters.q,
            filters=kept,
            active=any(kept.values()),
            query=urlencode({k: v for k, v in kept.items() if v}),
            page=self.page(qs),
            statuses=PaymentStatus.choices,
            methods=Method.choices,
            sources=Source.choices,
        )


class PaymentListCsvView(StaffView):
    """The payments the list's filters select, newest first, as CSV."""

    permission = Permission.EXPORT

    def get(self, request):
        errors = query_errors(
            request.GET,
            choices={
                "status": PaymentStatus.values,
                "method": Method.values,
                "source": Source.values,
            },
            numbers=("tenant",),
        )
        if errors:
            return bad_query(errors)
        qs = selectors.payment_search(landlord=self.landlord, filters=_payment_filters(request.GET))
        tz = self.landlord.tz

        def moment(value) -> str:
            return value.astimezone(tz).isoformat() if value else ""

        def rows():
            for p in qs.iterator(chunk_size=2_000):
                yield (
                    p.pk,
                    moment(p.created_at),
                    moment(p.succeeded_at),
                    p.received_on.isoformat() if p.received_on else "",
                    p.status,
                    p.method,
                    p.source,
                    p.tenant_id,
                    csv_text(p.tenant.full_name),
                    csv_text(p.invoice.number or "") if p.invoice_id else "",
                    p.currency,
                    csv_amount(p.amount_minor, p.currency),
                    csv_amount(p.fee_minor, p.currency),
                    csv_text(p.reference),
                    csv_text(p.stripe_payment_intent_id),
                    csv_text(p.stripe_charge_id),
                    csv_text(p.failure_code),
                    moment(p.reversed_at),
                )

        return csv_download(
            filename=f"{self.landlord.slug}-payments-{self.today().isoformat()}.csv",
            header=(
                "payment_id",
                "created_at",
                "succeeded_at",
                "received_on",
                "status",
                "method",
                "source",
                "tenant_id",
                "tenant",
                "invoice",
                "currency",
                "amount",
                "processor_fee",
                "reference",
                "stripe_payment_intent",
                "stripe_charge",
                "failure_code",
                "reversed_at",
            ),
            rows=rows(),
        )


class PaymentDetailView(StaffView):
    model = Payment  # the object its <pk> names (tests/tenants/test_isolation.py)

    def get(self, request, pk: int):
        payment = selectors.payment_get(landlord=self.landlord, pk=pk)
        return self.render(
            "payments/dashboard/payment_detail.html",
            object=payment,
            transactions=selectors.payment_transactions(landlord=self.landlord, payment=payment),
            reversible=payment.source == Source.MANUAL
            and payment.posting_id is not None
            and payment.reversal_id is None,
        )


class ManualPaymentRecordView(StaffView):
    """Record cash, a cheque or a bank transfer received from a tenant."""

    model = Tenant  # the object its <pk> names (tests/tenants/test_isolation.py)
    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        form = ManualPaymentForm(
            landlord=self.landlord, tenant=tenant, initial={"received_on": self.today()}
        )
        invoice = whole_number(request.GET.get("invoice"))
        if invoice and form.fields["invoice"].queryset.filter(pk=invoice).exists():
            form.initial["invoice"] = invoice
        return self.show(tenant, form)

    def show(self, tenant, form):
        return self.render("payments/dashboard/payment_record.html", tenant=tenant, form=form)

    def post(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        form = ManualPaymentForm(request.POST, landlord=self.landlord, tenant=tenant)
        if form.is_valid():
            data = form.cleaned_data
            try:
                payment = services.manual_payment_record(
                    landlord=self.landlord,
                    tenant=tenant,
                    amount_minor=data["amount_minor"],
                    currency=data["currency"],
                    method=data["method"],
                    reference=data["reference"],
                    received_on=data["received_on"],
                    invoice=data["invoice"],
                    actor=request.user,
                    idempotency_key=f"staff-form:{data['token']}",
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Payment recorded for {tenant.full_name}.")
                return redirect("dashboard:payment_detail", pk=payment.pk)
        return self.show(tenant, form)


class CreditPayBackView(StaffView):
    """Record that the tenant's credit was paid back to them (a confirmation form)."""

    model = Tenant  # the object its <pk> names (tests/tenants/test_isolation.py)
    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        credits = selectors.tenant_credits(landlord=self.landlord, tenant=tenant)
        form = CreditPayBackForm(
            credits=credits,
            currencies=selectors.tenant_currencies(landlord=self.landlord, tenant=tenant),
            initial={"paid_on": self.today()},
        )
        return self.show(tenant, credits, form)

    def show(self, tenant, credits, form):
        return self.render(
            "payments/dashboard/credit_pay_back.html", tenant=tenant, credits=credits, form=form
        )

    def post(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        credits = selectors.tenant_credits(landlord=self.landlord, tenant=tenant)
        form = CreditPayBackForm(
            request.POST,
            credits=credits,
            currencies=selectors.tenant_currencies(landlord=self.landlord, tenant=tenant),
        )
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.tenant_credit_pay_back(
                    landlord=self.landlord,
                    tenant=tenant,
                    amount_minor=data["amount_minor"],
                    currency=data["currency"],
                    method=data["method"],
                    reference=data["reference"],
                    paid_on=data["paid_on"],
                    actor=request.user,
                    idempotency_key=f"staff-form:{data['token']}",
                )
            except ValidationError as exc:
                if hasattr(exc, "error_dict") and "amount_minor" in exc.error_dict:
                    exc = ValidationError({"amount": exc.error_dict.pop("amount_minor")})
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Credit paid back to {tenant.full_name} is recorded.")
                return redirect("dashboard:tenant_statement", pk=tenant.pk)
        return self.show(tenant, credits, form)


class CreditPayBackReverseView(StaffView):
    """Undo a pay-back recorded in error: a confirmation page that requires a reason."""

    model = LedgerTransaction  # the object its <pk> names (tests/tenants/test_isolation.py)
    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        pay_back = selectors.credit_pay_back_get(landlord=self.landlord, pk=pk)
        return self.show(pay_back, CreditPayBackReverseForm())

    def show(self, pay_back, form):
        return self.render(
            "payments/dashboard/credit_pay_back_reverse.html", pay_back=pay_back, form=form
        )

    def post(self, request, pk: int):
        pay_back = selectors.credit_pay_back_get(landlord=self.landlord, pk=pk)
        form = CreditPayBackReverseForm(request.POST)
        if form.is_valid():
            try:
                services.tenant_credit_pay_back_reverse(
                    landlord=self.landlord,
                    posting=pay_back.posting,
                    reason=form.cleaned_data["reason"],
                    actor=request.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(
                    request,
                    f"The pay-back to {pay_back.tenant.full_name} is undone: the credit is "
                    "theirs again.",
                )
                return redirect("dashboard:tenant_statement", pk=pay_back.tenant.pk)
        return self.show(pay_back, form)


class PaymentReverseView(StaffView):
    """Reverse a manual payment: a confirmation page that requires a reason."""

    model = Payment  # the object its <pk> names (tests/tenants/test_isolation.py)
    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        payment = selectors.payment_get(landlord=self.landlord, pk=pk)
        return self.show(payment, PaymentReverseForm())

    def show(self, payment, form):
        return self.render("payments/dashboard/payment_reverse.html", object=payment, form=form)

    def post(self, request, pk: int):
        payment = selectors.payment_get(landlord=self.landlord, pk=pk)
        form = PaymentReverseForm(request.POST)
        if form.is_valid():
            try:
                services.payment_reverse(
                    payment=payment, reason=form.cleaned_data["reason"], actor=request.user
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Payment {payment.pk} is reversed.")
                return redirect("dashboard:payment_detail", pk=payment.pk)
        return self.show(payment, form)


# --- Stripe webhook events ----------------------------------------------------------


class StripeEventListView(StaffView):
    """The landlord's Stripe events (never those of no or another landlord)."""

    def get(self, request):
        status = _choice(request.GET, "status", EventStatus)
        return self.render(
            "payments/dashboard/event_list.html",
            status=status,
            page=self.page(selectors.stripe_event_list(landlord=self.landlord, status=status)),
            statuses=EventStatus.choices,
        )


class StripeEventDetailView(StaffView):
    model = StripeEvent  # the object its <pk> names (tests/tenants/test_isolation.py)

    def get(self, request, pk: int):
        event = self.get_scoped(StripeEvent, pk)
        return self.render(
            "payments/dashboard/event_detail.html",
            object=event,
            payload=json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False),
            reprocessable=event.status in REPROCESSABLE,
        )


class StripeEventReprocessView(StaffView):
    """POST only: process one failed (or unmatched) event of the landlord again."""

    model = StripeEvent  # the object its <pk> names (tests/tenants/test_isolation.py)
    permission = Permission.MANAGE_MONEY
    http_method_names = ["post"]

    def post(self, request, pk: int):
        event = self.get_scoped(StripeEvent, pk)
        if event.status not in REPROCESSABLE:
            messages.info(request, f"Event {event.event_id} is already {event.status}.")
            return redirect("dashboard:stripe_event_detail", pk=event.pk)
        result = services.stripe_event_process(event_id=event.event_id)
        if result is not None and result.status == EventStatus.PROCESSED:
            messages.success(request, f"Event {event.event_id} processed.")
        elif result is not None:
            messages.error(
                request, f"Event {event.event_id} is {result.get_status_display().lower()}."
            )
        return redirect("dashboard:stripe_event_detail", pk=event.pk)


class PaymentSettingsView(StaffView):
    """How tenants may pay online: whether less than the open amount is accepted."""

    permission = Permission.MANAGE_SETTINGS

    def get(self, request, form=None):
        row = services.payment_settings_get(landlord=self.landlord)
        form = form or PaymentSettingsForm(initial={"allow_partial": row.allow_partial})
        return self.render(
            "dashboard/form.html",
            form=form,
            title="Payment settings",
            cancel_url=reverse("dashboard:payment_list"),
        )

    def post(self, request):
        form = PaymentSettingsForm(request.POST)
        if form.is_valid():
            try:
                services.payment_settings_update(
                    landlord=self.landlord,
                    actor=request.user,
                    allow_partial=form.cleaned_data["allow_partial"],
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Payment settings saved.")
                return redirect("dashboard:payment_settings")
        return self.get(request, form=form)
