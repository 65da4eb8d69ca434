"""Dunning pages, mounted into the staff `dashboard` namespace by billing_site.urls."""

from django.urls import path

from dunning import views

urlpatterns = [
    path("arrears/", views.ArrearsView.as_view(), name="arrears"),
    path("dunning/", views.PolicyListView.as_view(), name="dunning_policy_list"),
    path("dunning/policies/new/", views.PolicyFormView.as_view(), name="dunning_policy_create"),
    path("dunning/policies/<int:pk>/", views.PolicyFormView.as_view(), name="dunning_policy_edit"),
    path(
        "dunning/policies/<int:pk>/default/",
        views.PolicyDefaultView.as_view(),
        name="dunning_policy_default",
    ),
    path("dunning/messages/", views.TemplateListView.as_view(), name="dunning_template_list"),
    path(
        "dunning/messages/<slug:kind>/<slug:language>/",
        views.TemplateEditView.as_view(),
        name="dunning_template_edit",
    ),
    path(
        "dunning/messages/<slug:kind>/<slug:language>/reset/",
        views.TemplateResetView.as_view(),
        name="dunning_template_reset",
    ),
    path(
        "leases/<int:pk>/dunning-policy/",
        views.LeasePolicyView.as_view(),
        name="lease_dunning_policy",
    ),
    path("tenants/<int:pk>/dunning/", views.TenantDunningView.as_view(), name="tenant_dunning"),
    path(
        "tenants/<int:pk>/dunning/pause/",
        views.TenantPauseView.as_view(),
        name="tenant_dunning_pause",
    ),
    path(
        "tenants/<int:pk>/dunning/resume/",
        views.TenantResumeView.as_view(),
        name="tenant_dunning_resume",
    ),
    path(
        "tenants/<int:pk>/dunning/clear-escalation/",
        views.TenantEscalationClearView.as_view(),
        name="tenant_dunning_clear",
    ),
    path("invoices/<int:pk>/waive-fee/", views.FeeWaiveView.as_view(), name="invoice_fee_waive"),
]
