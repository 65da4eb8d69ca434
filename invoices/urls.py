"""Billing pages, mounted into the staff `dashboard` namespace by billing_site.urls."""

from django.urls import path

from invoices import views

urlpatterns = [
    # Ending a lease may void and replace invoices, so the page lives with them.
    path("leases/<int:pk>/end/", views.LeaseEndView.as_view(), name="lease_end"),
    path("billing/", views.BillingRunListView.as_view(), name="billingrun_list"),
    path("billing/run/", views.BillingRunStartView.as_view(), name="billingrun_start"),
    path("billing/settings/", views.InvoiceSettingsView.as_view(), name="invoice_settings"),
    path(
        "billing/meter-readings/",
        views.MeterReadingIndexView.as_view(),
        name="meter_reading_index",
    ),
    path("billing/<int:pk>/", views.BillingRunDetailView.as_view(), name="billingrun_detail"),
    path("billing/<int:pk>/issue/", views.BillingRunIssueView.as_view(), name="billingrun_issue"),
    path(
        "units/<int:pk>/meter-readings/",
        views.UnitMeterReadingsView.as_view(),
        name="unit_meter_readings",
    ),
    path(
        "billing/<int:pk>/progress/",
        views.BillingRunProgressView.as_view(),
        name="billingrun_progress",
    ),
    path("invoices/", views.InvoiceListView.as_view(), name="invoice_list"),
    path("invoices.csv", views.InvoiceListCsvView.as_view(), name="invoice_list_csv"),
    path("invoices/<int:pk>/", views.InvoiceDetailView.as_view(), name="invoice_detail"),
    path("invoices/<int:pk>/pdf/", views.InvoicePdfView.as_view(), name="invoice_pdf"),
    path("invoices/<int:pk>/void/", views.InvoiceVoidView.as_view(), name="invoice_void"),
    path(
        "tenants/<int:pk>/statement/",
        views.TenantStatementView.as_view(),
        name="tenant_statement",
    ),
    path(
        "tenants/<int:pk>/statement.csv",
        views.TenantStatementCsvView.as_view(),
        name="tenant_statement_csv",
    ),
]
