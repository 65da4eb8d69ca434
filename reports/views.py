"""Report pages: the overview (/app/), the rent roll and the monthly summary (with CSVs).

Edges only, on the dashboard's `StaffView`: parse the query, call a selector, render
or stream. Looking needs VIEW; downloading needs EXPORT. A bad parameter on the page
shows the form's error; on the download it is a 400 naming it (tenants.query)."""

from __future__ import annotations

from urllib.parse import urlencode

from django import forms

from dunning import selectors as dunning_selectors
from invoices import selectors as invoice_selectors
from reports import monthly, selectors
from tenants import selectors as tenant_selectors
from tenants.exports import csv_amount, csv_download, csv_text
from tenants.models import Permission, Property
from tenants.query import FIRST_YEAR, LAST_YEAR, bad_query, whole_number
from tenants.views import StaffView


class OverviewView(StaffView):
    """The landlord's front page: the portfolio's counts, how this month's rent stands,
    the latest billing run, arrears and recent activity."""

    def get(self, request):
        today = self.today()
        month = today.replace(day=1)
        return self.render(
            "dashboard/home.html",
            counts=tenant_selectors.dashboard_counts(landlord=self.landlord, today=today),
            recent=tenant_selectors.audit_list(landlord=self.landlord)[:10],
            month=month,
            collection=invoice_selectors.period_collection(
                landlord=self.landlord, period_start=month, today=today
            ),
            latest_run=invoice_selectors.billing_run_list(landlord=self.landlord).first(),
            arrears=dunning_selectors.arrears_totals(landlord=self.landlord, today=today),
        )


class RentRollForm(forms.Form):
    day = forms.DateField(
        required=False,
        label="On",
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text="The units as they stood at the end of this day. Empty: today.",
        error_messages={"invalid": "Enter a date as YYYY-MM-DD, e.g. 2026-12-31."},
    )
    property = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    q = forms.CharField(required=False, max_length=100, label="Search")

    def __init__(self, *args, landlord, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["property"].choices = [("", "All properties")] + [
            (p.pk, p.name) for p in Property.objects.for_landlord(landlord).order_by("name", "pk")
        ]
        self.fields["q"].widget.attrs["placeholder"] = "Unit, property or tenant"

    def clean_day(self):
        day = self.cleaned_data.get("day")
        if day is not None and not FIRST_YEAR <= day.year <= LAST_YEAR:
            raise forms.ValidationError(f"Enter a date between {FIRST_YEAR} and {LAST_YEAR}.")
        return day


class _RentRollMixin:
    def filters(self, request):
        form = RentRollForm(request.GET, landlord=self.landlord)
        if not form.is_valid():
            return form, None
        data = form.cleaned_data
        return form, {
            "day": data["day"] or self.today(),
            "search": data["q"].strip(),
            "property_id": data["property"],
        }


class RentRollView(_RentRollMixin, StaffView):
    def get(self, request):
        form, filters = self.filters(request)
        if filters is None:
            response = self.render("reports/rent_roll.html", form=form)
            response.status_code = 400
            return response
        units = selectors.rent_roll_units(
            landlord=self.landlord, search=filters["search"], property_id=filters["property_id"]
        )
        page = self.page(units)
        return self.render(
            "reports/rent_roll.html",
            form=form,
            day=filters["day"],
            page=page,
            rows=selectors.rent_roll_rows(
                landlord=self.landlord, units=list(page.object_list), day=filters["day"]
            ),
            totals=selectors.rent_roll_totals(landlord=self.landlord, **filters),
            active=any(request.GET.get(k) for k in ("q", "property")),
            query=urlencode(
                {k: request.GET[k] for k in ("day", "property", "q") if request.GET.get(k)}
            ),
        )


class RentRollCsvView(_RentRollMixin, StaffView):
    permission = Permission.EXPORT

    def get(self, request):
        if request.GET.get("property") and whole_number(request.GET["property"]) is None:
            return bad_query({"property": "Enter a whole number."})
        form, filters = self.filters(request)
        if filters is None:
            return bad_query(form.errors)
        day = filters["day"]

        def rows():
            for row in selectors.rent_roll_iter(landlord=self.landlord, **filters):
                lease = row.lease
                yield (
                    day.isoformat(),
                    csv_text(row.unit.property.name),
                    csv_text(row.unit.name),
                    "let" if lease else "vacant",
                    csv_text(row.tenants),
                    lease.start_date.isoformat() if lease else "",
                    lease.end_date.isoformat() if lease and lease.end_date else "",
                    row.currency,
                    csv_amount(row.monthly_minor, row.currency) if lease else "",
                    csv_amount(lease.deposit_minor, row.currency) if lease else "",
                    csv_amount(row.owed_minor, row.currency) if lease else "",
                )

        return csv_download(
            filename=f"{self.landlord.slug}-rent-roll-{day.isoformat()}.csv",
            header=(
                "day",
                "property",
                "unit",
                "status",
                "tenants",
                "lease_start",
                "lease_end",
                "currency",
                "monthly_charges",
                "deposit",
                "owed",
            ),
            rows=rows(),
        )


class MonthlySummaryForm(forms.Form):
    year = forms.IntegerField(
        required=False,
        min_value=FIRST_YEAR,
        max_value=LAST_YEAR,
        error_messages={"invalid": "Enter a year, e.g. 2026."},
    )


class _MonthlySummaryMixin:
    def summary(self, request):
        """(form, year, summaries); summaries is None when the query is bad."""
        form = MonthlySummaryForm(request.GET)
        if not form.is_valid():
            return form, None, None
        today = self.today()
        year = form.cleaned_data["year"] or today.year
        return form, year, monthly.monthly_summary(landlord=self.landlord, year=year, through=today)


class MonthlySummaryView(_MonthlySummaryMixin, StaffView):
    def get(self, request):
        form, year, summaries = self.summary(request)
        response = self.render(
            "reports/monthly_summary.html",
            form=form,
            year=year,
            summaries=summaries or [],
            # The identity under the table names adjustments once, whatever the currencies.
            any_adjustments=any(s.has_adjustments for s in summaries or []),
            this_year=self.today().year,
        )
        if summaries is None:
            response.status_code = 400
        return response


class MonthlySummaryCsvView(_MonthlySummaryMixin, StaffView):
    permission = Permission.EXPORT

    def get(self, request):
        form, year, summaries = self.summary(request)
        if summaries is None:
            return bad_query(form.errors)

        def line(label: str, row: monthly.MonthSummary, currency: str, owed_start: int):
            return (
                label,
                currency,
                csv_amount(owed_start, currency),
                *(csv_amount(getattr(row, name), currency) for name in monthly.BILLED_COLUMNS),
                csv_amount(row.billed, currency),
                csv_amount(row.received, currency),
                csv_amount(row.processor_fees, currency),
                csv_amount(row.written_off, currency),
                csv_amount(row.adjustments, currency),
                csv_amount(row.owed_end, currency),
            )

        def rows():
            for summary in summaries:
                owed = summary.owed_start
                for row in summary.months:
                    yield line(row.month.strftime("%Y-%m"), row, summary.currency, owed)
                    owed = row.owed_end
                yield line(f"{year} total", summary.totals, summary.currency, summary.owed_start)

        return csv_download(
            filename=f"{self.landlord.slug}-monthly-summary-{year}.csv",
            header=(
                "month",
                "currency",
                "owed_at_start",
                "rent",
                "other_charges",
                "late_fees",
                "tax",
                "billed",
                "received",
                "processor_fees_in_received",
                "written_off",
                "adjustments",
                "owed_at_end",
            ),
            rows=rows(),
        )
