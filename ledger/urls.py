"""Ledger pages, mounted into the staff `dashboard` namespace by billing_site.urls."""

from django.urls import path

from ledger import views

urlpatterns = [
    path("ledger/", views.LedgerView.as_view(), name="ledger"),
    path("ledger/trial-balance.csv", views.TrialBalanceCsvView.as_view(), name="ledger_tb_csv"),
    path("ledger/journal/", views.JournalView.as_view(), name="ledger_journal"),
    path("ledger/journal.csv", views.JournalCsvView.as_view(), name="ledger_journal_csv"),
]
