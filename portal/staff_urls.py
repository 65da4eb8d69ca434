"""Staff-side portal actions, mounted into the `dashboard` namespace by billing_site.urls."""

from django.urls import path

from portal import staff_views

urlpatterns = [
    path(
        "tenants/<int:pk>/portal-invite/",
        staff_views.TenantPortalInviteView.as_view(),
        name="tenant_portal_invite",
    ),
]
