"""Staff billing pages (/app/billing/, /app/invoices/): billing runs, invoices, statements.

Edges only, on the dashboard's `StaffView` (login, current landlord, permission):
parse input, call a selector or service, render. Looking needs VIEW; starting a run
and voiding need MANAGE_MONEY. Objects come through `get_scoped`, so another
landlord's id is a 404.
"""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import content_disposition_header

from invoices import selectors, services
from invoices.forms import InvoiceSettingsForm, MeterReadingForm
from invoices.models import (
    BillingRun,
    BillingRunStatus,
    Invoice,
)
from ledger import selectors as ledger_selectors
from tenants import selectors as tenant_selectors
from tenants.exports import csv_amount, csv_download, csv_text
from tenants.forms import EndLeaseForm, apply_service_errors
from tenants.models import Lease, Permission, Tenant, Unit
from tenants.query import (
    FIRST_YEAR,
    LAST_YEAR,
    bad_query,
    in_calendar,
    month_start,
    query_errors,
    whole_number,
)
from tenants.views import PAGE_SIZE, StaffView

MONTH_INPUT = forms.DateInput(attrs={"type": "month"}, format="%Y-%m")


class BillingMonthForm(forms.Form):
    month = forms.DateField(
        input_formats=["%Y-%m"],
        widget=MONTH_INPUT,
        help_text="The month to bill, e.g. 2026-12.",
        error_messages={"invalid": "Enter a month as YYYY-MM, e.g. 2026-12."},
    )

    def clean_month(self) -> date:
        month = self.cleaned_data["month"].replace(day=1)
        if not in_calendar(month):
            raise forms.ValidationError(
                f"Enter a month between {FIRST_YEAR}-01 and {LAST_YEAR}-12."
            )
        return month


class InvoiceVoidForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Kept with the ledger reversal and in the activity log, e.g. Billed the wrong tenant.",
        error_messages={"required": "Say why the invoice is voided."},
    )


# --- billing runs -------------------------------------------------------------------


class BillingRunListView(StaffView):
    def get(self, request):
        return self.render(
            "invoices/dashboard/billingrun_list.html",
            page=self.page(selectors.billing_run_list(landlord=self.landlord)),
        )


class BillingRunDetailView(StaffView):
    def get(self, request, pk: int):
        run = self.get_scoped(BillingRun, pk)
        drafts = (
            selectors.draft_totals(landlord=self.landlord, run=run)
            if run.status == BillingRunStatus.REVIEW
            else None
        )
        invoices = selectors.invoice_page(
            landlord=self.landlord,
            filters=selectors.InvoiceFilters(run_id=run.pk),
            today=self.today(),
            size=10,
        )
        return self.render(
            "invoices/dashboard/billingrun_detail.html",
            object=run,
            issues=self.page(selectors.billing_run_issues(landlord=self.landlord, run=run)),
            invoices=invoices,
            drafts=drafts,
        )


class BillingRunIssueView(StaffView):
    """Issue a reviewed run's drafts (or discard them): a confirmation page, then the
    service. Posting `action=discard` discards instead."""

    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        run = self.get_scoped(BillingRun, pk)
        return self.render(
            "invoices/dashboard/billingrun_issue.html",
            object=run,
            drafts=selectors.draft_totals(landlord=self.landlord, run=run),
        )

    def post(self, request, pk: int):
        run = self.get_scoped(BillingRun, pk)
        discard = request.POST.get("action") == "discard"
        action = services.billing_run_discard_drafts if discard else services.billing_run_issue
        try:
            count = action(run=run, actor=request.user)
        except ValidationError as exc:
            for message in exc.messages:
                messages.error(request, message)
        else:
            plural = "" if count == 1 else "s"
            if discard:
                messages.success(request, f"{count} draft{plural} discarded.")
            else:
                messages.success(request, f"{count} invoice{plural} issued.")
        return redirect("dashboard:billingrun_detail", pk=run.pk)


class InvoiceSettingsView(StaffView):
    """Invoice numbering, draft review, emails and the tax rate of each charge kind."""

    permission = Permission.MANAGE_SETTINGS

    def get(self, request):
        row = services.invoice_settings_get(landlord=self.landlord)
        rates = selectors.tax_rates(landlord=self.landlord)
        return self.show(InvoiceSettingsForm(initial=InvoiceSettingsForm.initial_for(row, rates)))

    def show(self, form):
        return self.render(
            "dashboard/form.html",
            form=form,
            title="Invoice settings",
            cancel_url=reverse("dashboard:billingrun_list"),
        )

    def post(self, request):
        form = InvoiceSettingsForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                services.invoice_settings_update(
                    landlord=self.landlord,
                    actor=request.user,
                    number_prefix=data["number_prefix"],
                    review_drafts=data["review_drafts"],
                    send_emails=data["send_emails"],
                    tax_rates_bp=data["tax_rates_bp"],
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Invoice settings saved.")
                return redirect("dashboard:invoice_settings")
        return self.show(form)


class MeterReadingIndexView(StaffView):
    """Billing section's entry to meter readings: the latest readings, and a unit
    search leading to each unit's readings page (where one is recorded)."""

    def get(self, request):
        q = request.GET.get("q", "").strip()[:100]
        units = tenant_selectors.unit_list(landlord=self.landlord, search=q) if q else None
        return self.render(
            "invoices/dashboard/meter_reading_index.html",
            q=q,
            units=self.page(units) if units is not None else None,
            recent=selectors.meter_reading_list(landlord=self.landlord)[:20],
        )


class UnitMeterReadingsView(StaffView):
    """A unit's sub-meter readings, and a form to record one (MANAGE_MONEY)."""

    def required_permission(self, request) -> str:
        return Permission.MANAGE_MONEY if request.method == "POST" else Permission.VIEW

    def get(self, request, pk: int):
        return self.show(self.get_scoped(Unit, pk), MeterReadingForm())

    def show(self, unit, form):
        readings = selectors.meter_reading_list(landlord=self.landlord, unit=unit)
        return self.render(
            "invoices/dashboard/meter_readings.html",
            object=unit,
            form=form,
            page=self.page(readings),
        )

    def post(self, request, pk: int):
        unit = self.get_scoped(Unit, pk)
        form = MeterReadingForm(request.POST)
        if form.is_valid():
            try:
                services.meter_reading_record(
                    landlord=self.landlord, unit=unit, actor=request.user, **form.cleaned_data
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Meter reading recorded.")
                return redirect("dashboard:unit_meter_readings", pk=unit.pk)
        return self.show(unit, form)


class BillingRunProgressView(StaffView):
    """JSON polled by the run page's progress bar while the run is running."""

    def get(self, request, pk: int):
        run = self.get_scoped(BillingRun, pk)
        response = JsonResponse(selectors.billing_run_progress(run=run))
        response["Cache-Control"] = "no-store"
        return response


class BillingRunStartView(StaffView):
    """Run billing now: a confirmation page that says what will happen, then the run."""

    permission = Permission.MANAGE_MONEY

    def get(self, request):
        if "month" in request.GET:
            form = BillingMonthForm(request.GET)
            month = form.cleaned_data["month"] if form.is_valid() else None
        else:
            month = self.today().replace(day=1)
            form = BillingMonthForm(initial={"month": month})
        return self.show(form, month)

    def show(self, form, month: date | None):
        preview = None
        if month is not None:
            preview = selectors.billing_run_preview(
                landlord=self.landlord, period_start=month, as_of=self.today()
            )
        return self.render(
            "invoices/dashboard/billingrun_start.html", form=form, month=month, preview=preview
        )

    def post(self, request):
        form = BillingMonthForm(request.POST)
        if not form.is_valid():
            return self.show(form, None)
        run, leases = services.billing_run_start_now(
            landlord=self.landlord,
            period_start=form.cleaned_data["month"],
            as_of=self.today(),
            actor=request.user,
        )
        messages.success(
            request,
            f"Billing run for {run.period_start:%B %Y} started: {leases} "
            f"lease{'' if leases == 1 else 's'} to bill.",
        )
        return redirect("dashboard:billingrun_detail", pk=run.pk)


# --- invoices -----------------------------------------------------------------------


def _invoice_filters(params) -> selectors.InvoiceFilters:
    status = params.get("status", "")
    return selectors.InvoiceFilters(
        status=status if status in selectors.InvoiceStatus.values else "",
        period=month_start(params.get("period")),
        property_id=whole_number(params.get("property")),
        tenant_id=whole_number(params.get("tenant")),
        lease_id=whole_number(params.get("lease")),
        run_id=whole_number(params.get("run")),
        number=params.get("q", "").strip()[:32],
    )


class InvoiceListView(StaffView):
    def get(self, request):
        params = request.GET
        filters = _invoice_filters(params)
        page = selectors.invoice_page(
            landlord=self.landlord,
            filters=filters,
            today=self.today(),
            after=params.get("after"),
            before=params.get("before"),
        )
        kept = {
            "q": filters.number,
            "status": filters.status,
            "period": filters.period.strftime("%Y-%m") if filters.period else "",
            "property": filters.property_id or "",
            "tenant": filters.tenant_id or "",
            "lease": filters.lease_id or "",
            "run": filters.run_id or "",
        }
        query = urlencode({k: v for k, v in kept.items() if v})
        return self.render(
            "invoices/dashboard/invoice_list.html",
            filters=filters,
            q=filters.number,
            page=page,
            query=query,
            statuses=selectors.InvoiceStatus.choices,
            properties=selectors.invoice_filter_properties(landlord=self.landlord),
            tenant=selectors.tenant_get_or_none(landlord=self.landlord, pk=filters.tenant_id),
        )


class InvoiceListCsvView(StaffView):
    """The invoice register as CSV: every invoice the list's filters select, newest
    first, with its status and what is still owed."""

    permission = Permission.EXPORT

    def get(self, request):
        errors = query_errors(
            request.GET,
            choices={"status": selectors.InvoiceStatus.values},
            numbers=("property", "tenant", "lease", "run"),
            months=("period",),
        )
        if errors:
            return bad_query(errors)
        filters = _invoice_filters(request.GET)
        today = self.today()
        rows = selectors.invoice_rows_every(landlord=self.landlord, filters=filters, today=today)

        def formatted():
            for row in rows:
                inv = row.invoice
                unit = inv.lease.unit
                yield (
                    csv_text(inv.number or ""),
                    row.status,
                    inv.issue_date.isoformat(),
                    inv.due_date.isoformat(),
                    inv.period_start.isoformat(),
                    (inv.period_end - timedelta(days=1)).isoformat(),
                    inv.tenant_id,
                    csv_text(inv.bill_to_name or inv.tenant.full_name),
                    csv_text(unit.property.name),
                    csv_text(unit.name),
                    inv.lease_id,
                    inv.currency,
                    csv_amount(inv.subtotal_minor, inv.currency),
                    csv_amount(inv.tax_minor, inv.currency),
                    csv_amount(inv.total_minor, inv.currency),
                    csv_amount(row.balance_minor, inv.currency),
                    inv.pk,
                )

        return csv_download(
            filename=f"{self.landlord.slug}-invoices-{today.isoformat()}.csv",
            header=(
                "number",
                "status",
                "issue_date",
                "due_date",
                "period_from",
                "period_to",
                "tenant_id",
                "bill_to",
                "property",
                "unit",
                "lease_id",
                "currency",
                "subtotal",
                "tax",
                "total",
                "balance",
                "invoice_id",
            ),
            rows=formatted(),
        )


class InvoiceDetailView(StaffView):
    def get(self, request, pk: int):
        invoice = selectors.invoice_get(landlord=self.landlord, pk=pk)
        balance = selectors.invoice_balances(landlord=self.landlord, invoices=[invoice])[invoice.pk]
        status = selectors.invoice_status(
            invoice=invoice, balance_minor=balance, today=self.today()
        )
        return self.render(
            "invoices/dashboard/invoice_detail.html",
            object=invoice,
            status=status,
            status_label=selectors.InvoiceStatus.labels[status],
            balance=balance,
            transactions=selectors.invoice_transactions(landlord=self.landlord, invoice=invoice),
            notifications=selectors.invoice_notifications(landlord=self.landlord, invoice=invoice),
            replaced_by=selectors.invoice_replacement(landlord=self.landlord, invoice=invoice),
        )


class InvoicePdfView(StaffView):
    def get(self, request, pk: int):
        # Imported here: the PDF module pulls in WeasyPrint, which only this view needs.
        from invoices.pdf import invoice_pdf

        invoice = self.get_scoped(Invoice, pk)
        name = f"{invoice.number or f'draft-{invoice.pk}'}.pdf"
        response = HttpResponse(invoice_pdf(invoice=invoice), content_type="application/pdf")
        response["Content-Disposition"] = content_disposition_header(True, name)
        return response


class InvoiceVoidView(StaffView):
    """Void an issued invoice: a confirmation page that requires a reason."""

    permission = Permission.MANAGE_MONEY

    def get(self, request, pk: int):
        invoice = self.get_scoped(Invoice, pk)
        return self.show(invoice, InvoiceVoidForm())

    def show(self, invoice, form):
        return self.render("invoices/dashboard/invoice_void.html", object=invoice, form=form)

    def post(self, request, pk: int):
        invoice = self.get_scoped(Invoice, pk)
        form = InvoiceVoidForm(request.POST)
        if form.is_valid():
            try:
                services.invoice_void(
                    invoice=invoice, reason=form.cleaned_data["reason"], actor=request.user
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Invoice {invoice.number} is void.")
                return redirect("dashboard:invoice_detail", pk=invoice.pk)
        return self.show(invoice, form)


# --- tenant statement ---------------------------------------------------------------


class TenantStatementView(StaffView):
    """The tenant's ledger entries with a running balance; opens on the latest page."""

    def get(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        entries = ledger_selectors.tenant_statement(landlord=self.landlord, tenant=tenant)
        paginator = Paginator(entries, PAGE_SIZE)
        page = paginator.get_page(request.GET.get("page") or paginator.num_pages)
        return self.render(
            "invoices/dashboard/tenant_statement.html",
            object=tenant,
            page=page,
            balances=ledger_selectors.tenant_balance(landlord=self.landlord, tenant=tenant),
            invoice_document=selectors.INVOICE_DOCUMENT,
        )


class TenantStatementCsvView(StaffView):
    """The statement as CSV, oldest first: every entry with its running balance."""

    permission = Permission.EXPORT

    def get(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        tz = self.landlord.tz
        entries = ledger_selectors.tenant_statement(landlord=self.landlord, tenant=tenant)

        def rows():
            for e in entries.iterator(chunk_size=2_000):
                amount, currency = e.amount_minor, e.currency
                yield (
                    e.effective_at.astimezone(tz).date().isoformat(),
                    e.seq,
                    csv_text(e.description),
                    e.document_kind,
                    "" if e.document_id is None else e.document_id,
                    csv_text(e.account.code),
                    currency,
                    csv_amount(amount, currency) if amount > 0 else "",
                    csv_amount(-amount, currency) if amount < 0 else "",
                    csv_amount(e.running_balance, currency),
                )

        return csv_download(
            filename=f"{self.landlord.slug}-statement-tenant-{tenant.pk}.csv",
            header=(
                "date",
                "seq",
                "description",
                "document_kind",
                "document_id",
                "account",
                "currency",
                "charge",
                "credit",
                "balance",
            ),
            rows=rows(),
        )


class LeaseEndView(StaffView):
    """End a lease: a confirmation page with the move-out date and reason, the
    invoices that may be voided and replaced, and what was done afterwards."""

    permission = Permission.EDIT_LEASES

    def page(self, lease: Lease, form):
        invoices = selectors.lease_invoices_billing_after(
            landlord=self.landlord, lease=lease, day=lease.start_date
        )[:6]
        return self.render("dashboard/lease_end.html", object=lease, form=form, invoices=invoices)

    def get(self, request, pk: int):
        lease = self.get_scoped(Lease, pk)
        return self.page(lease, EndLeaseForm(initial={"end_date": lease.end_date or self.today()}))

    def post(self, request, pk: int):
        lease = self.get_scoped(Lease, pk)
        form = EndLeaseForm(request.POST)
        if form.is_valid():
            try:
                ended = services.lease_end_and_rebill(
                    landlord=self.landlord,
                    lease=lease,
                    actor=request.user,
                    end_date=form.cleaned_data["end_date"],
                    reason=form.cleaned_data["reason"],
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                done = ["Lease ended."]
                if ended.voided:
                    done.append("Voided " + ", ".join(str(i) for i in ended.voided) + ".")
                if ended.replacements:
                    done.append(
                        "Issued "
                        + ", ".join(str(i) for i in ended.replacements)
                        + " for what is still owed."
                    )
                if ended.drafts_changed:
                    done.append(f"{ended.drafts_changed} draft invoice(s) cut to the end date.")
                messages.success(request, " ".join(done))
                return redirect("dashboard:lease_detail", pk=lease.pk)
        return self.page(lease, form)
