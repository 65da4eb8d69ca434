"""Billing pages, mounted into the staff `dashboard` namespace by billing_site.urls."""

urlpatterns: list = []
