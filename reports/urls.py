"""Report pages, mounted into the staff `dashboard` namespace by billing_site.urls."""

from django.urls import path

from reports import views

urlpatterns = [
    path("", views.OverviewView.as_view(), name="home"),
    path("reports/rent-roll/", views.RentRollView.as_view(), name="rent_roll"),
    path("reports/rent-roll.csv", views.RentRollCsvView.as_view(), name="rent_roll_csv"),
    path("reports/monthly/", views.MonthlySummaryView.as_view(), name="monthly_summary"),
    path(
        "reports/monthly.csv",
        views.MonthlySummaryCsvView.as_view(),
        name="monthly_summary_csv",
    ),
]
