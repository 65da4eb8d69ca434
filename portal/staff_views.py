"""Staff actions for the tenant portal (in the dashboard, /app/)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse

from portal import services
from portal.forms import InviteForm
from tenants.models import Permission, Tenant
from tenants.views import StaffView


class TenantPortalInviteView(StaffView):
    """Email a tenant a link to set a password for the portal. Staff who edit
    tenants or manage money may send it."""

    model = Tenant

    def required_permission(self, request) -> str:
        if request.membership.allows(Permission.MANAGE_MONEY):
            return Permission.MANAGE_MONEY
        return Permission.EDIT_PROPERTIES

    def post(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        form = InviteForm({"email": request.POST.get("email") or tenant.email})
        if not form.is_valid():
            messages.error(request, "Enter the tenant's email address to invite them.")
            return redirect("dashboard:tenant_detail", tenant.pk)
        try:
            invitation, token = services.tenant_invitation_create(
                tenant=tenant, email=form.cleaned_data["email"], invited_by=request.user
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            link = request.build_absolute_uri(reverse("portal:invitation_accept", args=[token]))
            services.tenant_invitation_send(invitation=invitation, link=link)
            messages.success(
                request,
                f"Portal invitation sent to {invitation.email}; the link works once, for 7 days.",
            )
        return redirect("dashboard:tenant_detail", tenant.pk)
