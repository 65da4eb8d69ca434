from django.urls import path

from tenants import views

urlpatterns = [
    # The overview ("" → dashboard:home) is reports.views.OverviewView: it reads money
    # from invoices, the ledger and dunning, which this app may not import.
    path("switch/<int:landlord_id>/", views.SwitchLandlordView.as_view(), name="switch_landlord"),
    path("properties/", views.PropertyListView.as_view(), name="property_list"),
    path("properties/new/", views.PropertyFormView.as_view(), name="property_create"),
    path("properties/<int:pk>/", views.PropertyDetailView.as_view(), name="property_detail"),
    path("properties/<int:pk>/edit/", views.PropertyFormView.as_view(), name="property_edit"),
    path("units/", views.UnitListView.as_view(), name="unit_list"),
    path("units/new/", views.UnitFormView.as_view(), name="unit_create"),
    path("units/<int:pk>/", views.UnitDetailView.as_view(), name="unit_detail"),
    path("units/<int:pk>/edit/", views.UnitFormView.as_view(), name="unit_edit"),
    path("tenants/", views.TenantListView.as_view(), name="tenant_list"),
    path("tenants/new/", views.TenantFormView.as_view(), name="tenant_create"),
    path("tenants/<int:pk>/", views.TenantDetailView.as_view(), name="tenant_detail"),
    path("tenants/<int:pk>/edit/", views.TenantFormView.as_view(), name="tenant_edit"),
    path("leases/", views.LeaseListView.as_view(), name="lease_list"),
    path("leases/new/", views.LeaseFormView.as_view(), name="lease_create"),
    path("leases/<int:pk>/", views.LeaseDetailView.as_view(), name="lease_detail"),
    path("leases/<int:pk>/edit/", views.LeaseFormView.as_view(), name="lease_edit"),
    path(
        "leases/<int:lease_pk>/charges/new/", views.ChargeFormView.as_view(), name="charge_create"
    ),
    path("charges/<int:pk>/edit/", views.ChargeFormView.as_view(), name="charge_edit"),
    path("staff/", views.StaffListView.as_view(), name="staff"),
    path("staff/<int:pk>/role/", views.MembershipRoleView.as_view(), name="membership_role"),
    path(
        "staff/invitations/<int:pk>/revoke/",
        views.InvitationRevokeView.as_view(),
        name="invitation_revoke",
    ),
    path("settings/", views.SettingsView.as_view(), name="settings"),
    path("activity/", views.AuditListView.as_view(), name="audit_list"),
]
