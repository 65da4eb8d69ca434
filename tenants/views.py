"""Staff dashboard (/app/): properties, units, tenants, leases, charges, staff, settings.

Edges only: parse input, make one call into a selector or service, render.
Scoping: `StaffView` requires a membership of the current landlord (resolved by
CurrentLandlordMiddleware) and a permission from ROLE_PERMISSIONS; objects are
fetched with `scoped_get`, so another landlord's id is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View

from tenants import selectors, services
from tenants.forms import (
    ChargeForm,
    InviteStaffForm,
    LandlordSettingsForm,
    LeaseForm,
    PropertyForm,
    TenantForm,
    UnitForm,
    apply_service_errors,
)
from tenants.middleware import SESSION_KEY
from tenants.models import (
    Charge,
    Lease,
    LeaseStatus,
    Membership,
    Permission,
    Property,
    Role,
    StaffInvitation,
    Tenant,
    Unit,
)

PAGE_SIZE = 25


class StaffView(View):
    """Base of every dashboard view: login, a landlord, and the view's permission."""

    permission: str = Permission.VIEW

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect(f"{reverse('login')}?next={request.get_full_path()}")
        if request.landlord is None:
            return render(request, "dashboard/no_landlord.html", status=403)
        self.landlord = request.landlord
        if not self.allowed(self.required_permission(request)):
            raise PermissionDenied("Your role does not allow this.")
        return super().dispatch(request, *args, **kwargs)

    def required_permission(self, request) -> str:
        return self.permission

    def allowed(self, permission: str) -> bool:
        return self.request.membership.allows(permission)

    def get_scoped(self, model, pk):
        return selectors.scoped_get(model, landlord=self.landlord, pk=pk)

    def today(self):
        return timezone.now().astimezone(self.landlord.tz).date()

    def page(self, queryset):
        paginator = Paginator(queryset, PAGE_SIZE)
        return paginator.get_page(self.request.GET.get("page"))

    def render(self, template: str, **context):
        context.setdefault("can", {p: self.allowed(p) for p in Permission.values})
        return render(self.request, template, context)


class SwitchLandlordView(View):
    """A user with several memberships picks which landlord they are working for."""

    def post(self, request, landlord_id: int):
        if not request.user.is_authenticated:
            return redirect("login")
        if not Membership.objects.filter(user=request.user, landlord_id=landlord_id).exists():
            raise PermissionDenied
        request.session[SESSION_KEY] = landlord_id
        return redirect("dashboard:home")


# --- lists and details -------------------------------------------------------------


class PropertyListView(StaffView):
    def get(self, request):
        q = request.GET.get("q", "").strip()
        return self.render(
            "dashboard/property_list.html",
            q=q,
            page=self.page(selectors.property_list(landlord=self.landlord, search=q)),
        )


class PropertyDetailView(StaffView):
    def get(self, request, pk: int):
        prop = self.get_scoped(Property, pk)
        units = selectors.unit_list(landlord=self.landlord, property_id=prop.pk, today=self.today())
        return self.render("dashboard/property_detail.html", object=prop, page=self.page(units))


class UnitListView(StaffView):
    def get(self, request):
        q = request.GET.get("q", "").strip()
        units = selectors.unit_list(landlord=self.landlord, search=q, today=self.today())
        return self.render("dashboard/unit_list.html", q=q, page=self.page(units))


class UnitDetailView(StaffView):
    def get(self, request, pk: int):
        unit = self.get_scoped(Unit, pk)
        leases = selectors.lease_list(landlord=self.landlord, unit_id=unit.pk)
        return self.render("dashboard/unit_detail.html", object=unit, leases=leases)


class TenantListView(StaffView):
    def get(self, request):
        q = request.GET.get("q", "").strip()
        return self.render(
            "dashboard/tenant_list.html",
            q=q,
            page=self.page(selectors.tenant_list(landlord=self.landlord, search=q)),
        )


class TenantDetailView(StaffView):
    def get(self, request, pk: int):
        tenant = self.get_scoped(Tenant, pk)
        leases = selectors.lease_list(landlord=self.landlord, tenant_id=tenant.pk)
        return self.render("dashboard/tenant_detail.html", object=tenant, leases=leases)


class LeaseListView(StaffView):
    def get(self, request):
        q = request.GET.get("q", "").strip()
        status = request.GET.get("status", "")
        if status not in LeaseStatus.values:
            status = ""
        leases = selectors.lease_list(landlord=self.landlord, search=q, status=status)
        return self.render(
            "dashboard/lease_list.html",
            q=q,
            status=status,
            statuses=LeaseStatus.choices,
            page=self.page(leases),
        )


class LeaseDetailView(StaffView):
    def get(self, request, pk: int):
        lease = self.get_scoped(Lease, pk)
        return self.render(
            "dashboard/lease_detail.html",
            object=lease,
            charges=selectors.charge_list(landlord=self.landlord, lease=lease),
            history=selectors.audit_list(
                landlord=self.landlord, object_type="Lease", object_id=lease.pk
            ),
        )


# --- create and edit ---------------------------------------------------------------


class ObjectFormView(StaffView):
    """Create (no pk) or edit (pk) one landlord-owned object through its service."""

    model: type
    form_class: type
    noun: str
    permission = Permission.EDIT_PROPERTIES

    def get_instance(self):
        pk = self.kwargs.get("pk")
        return self.get_scoped(self.model, pk) if pk else None

    def form_kwargs(self) -> dict:
        return {"landlord": self.landlord}

    def save(self, form, instance):
        raise NotImplementedError

    def success_url(self, obj) -> str:
        return reverse(f"dashboard:{self.model.__name__.lower()}_detail", args=[obj.pk])

    def show(self, form, instance):
        title = f"Edit {self.noun}" if instance else f"New {self.noun}"
        return self.render(
            "dashboard/form.html",
            form=form,
            title=title,
            object=instance,
            cancel_url=self.success_url(instance) if instance else self.cancel_url(),
        )

    def cancel_url(self) -> str:
        return reverse(f"dashboard:{self.model.__name__.lower()}_list")

    def get(self, request, **kwargs):
        instance = self.get_instance()
        return self.show(self.form_class(instance=instance, **self.form_kwargs()), instance)

    def post(self, request, **kwargs):
        instance = self.get_instance()
        form = self.form_class(request.POST, request.FILES, instance=instance, **self.form_kwargs())
        if form.is_valid():
            try:
                obj = self.save(form, instance)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"{self.noun.capitalize()} saved.")
                return HttpResponseRedirect(self.success_url(obj))
        return self.show(form, instance)


def _model_fields(form) -> dict:
    return {
        name: form.cleaned_data[name] for name in form._meta.fields if name in form.cleaned_data
    }


class PropertyFormView(ObjectFormView):
    model, form_class, noun = Property, PropertyForm, "property"

    def form_kwargs(self):
        return {}

    def save(self, form, instance):
        return services.property_save(
            landlord=self.landlord,
            actor=self.request.user,
            instance=instance,
            **_model_fields(form),
        )


class UnitFormView(ObjectFormView):
    model, form_class, noun = Unit, UnitForm, "unit"

    def get(self, request, **kwargs):
        instance = self.get_instance()
        initial = {"property": request.GET.get("property")} if not instance else None
        form = self.form_class(instance=instance, initial=initial, **self.form_kwargs())
        return self.show(form, instance)

    def save(self, form, instance):
        return services.unit_save(
            landlord=self.landlord,
            actor=self.request.user,
            instance=instance,
            **_model_fields(form),
        )


class TenantFormView(ObjectFormView):
    model, form_class, noun = Tenant, TenantForm, "tenant"

    def form_kwargs(self):
        return {}

    def save(self, form, instance):
        return services.tenant_save(
            landlord=self.landlord,
            actor=self.request.user,
            instance=instance,
            **_model_fields(form),
        )


class LeaseFormView(ObjectFormView):
    model, form_class, noun = Lease, LeaseForm, "lease"
    permission = Permission.EDIT_LEASES

    def get(self, request, **kwargs):
        instance = self.get_instance()
        initial = None
        if not instance:
            initial = {k: request.GET.get(k) for k in ("unit", "tenants") if request.GET.get(k)}
        return self.show(
            self.form_class(instance=instance, initial=initial, **self.form_kwargs()), instance
        )

    def save(self, form, instance):
        return services.lease_save(
            landlord=self.landlord,
            actor=self.request.user,
            instance=instance,
            tenants=list(form.cleaned_data["tenants"]),
            **form.service_fields(),
        )


class ChargeFormView(ObjectFormView):
    model, form_class, noun = Charge, ChargeForm, "charge"
    permission = Permission.EDIT_LEASES

    def get_instance(self):
        instance = super().get_instance()
        self.lease = instance.lease if instance else self.get_scoped(Lease, self.kwargs["lease_pk"])
        return instance

    def form_kwargs(self):
        return {"lease": self.lease}

    def success_url(self, obj):
        return reverse("dashboard:lease_detail", args=[self.lease.pk])

    def cancel_url(self):
        return self.success_url(None)

    def save(self, form, instance):
        return services.charge_save(
            landlord=self.landlord,
            actor=self.request.user,
            lease=self.lease,
            instance=instance,
            **form.service_fields(),
        )


# --- staff and settings --------------------------------------------------------------


class StaffListView(StaffView):
    permission = Permission.MANAGE_STAFF

    def get(self, request, form=None):
        return self.render(
            "dashboard/staff.html",
            form=form or InviteStaffForm(),
            roles=Role.choices,
            members=selectors.membership_list(landlord=self.landlord),
            invitations=selectors.invitation_list(landlord=self.landlord),
            now=timezone.now(),
        )

    def post(self, request):
        form = InviteStaffForm(request.POST)
        if form.is_valid():
            try:
                invitation, token = services.staff_invitation_create(
                    landlord=self.landlord,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=request.user,
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                link = request.build_absolute_uri(reverse("invitation_accept", args=[token]))
                services.staff_invitation_send(invitation=invitation, link=link)
                messages.success(request, f"Invitation sent to {invitation.email}.")
                return redirect("dashboard:staff")
        return self.get(request, form=form)


class MembershipRoleView(StaffView):
    permission = Permission.MANAGE_STAFF

    def post(self, request, pk: int):
        membership = selectors.membership_get(landlord=self.landlord, pk=pk)
        try:
            services.membership_set_role(
                landlord=self.landlord,
                membership=membership,
                role=request.POST.get("role", ""),
                actor=request.user,
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, "Role updated.")
        return redirect("dashboard:staff")


class InvitationRevokeView(StaffView):
    """Revoke a pending invitation: a confirmation page, then the revoke."""

    permission = Permission.MANAGE_STAFF
    model = StaffInvitation

    def get(self, request, pk: int):
        invitation = self.get_scoped(StaffInvitation, pk)
        return self.render("dashboard/invitation_revoke.html", object=invitation)

    def post(self, request, pk: int):
        invitation = self.get_scoped(StaffInvitation, pk)
        try:
            services.staff_invitation_revoke(
                landlord=self.landlord, invitation=invitation, actor=request.user
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(
                request, f"Invitation of {invitation.email} revoked; its link no longer works."
            )
        return redirect("dashboard:staff")


class SettingsView(StaffView):
    permission = Permission.MANAGE_SETTINGS

    def get(self, request, form=None):
        form = form or LandlordSettingsForm(instance=self.landlord)
        return self.render(
            "dashboard/form.html", form=form, title="Settings", cancel_url=reverse("dashboard:home")
        )

    def post(self, request):
        landlord = selectors.scoped_landlord(landlord=self.landlord)
        form = LandlordSettingsForm(request.POST, request.FILES, instance=landlord)
        if form.is_valid():
            try:
                services.landlord_update(
                    landlord=selectors.scoped_landlord(landlord=self.landlord),
                    actor=request.user,
                    **form.service_fields(),
                )
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, "Settings saved.")
                return redirect("dashboard:settings")
        return self.get(request, form=form)


class AuditListView(StaffView):
    permission = Permission.MANAGE_SETTINGS

    def get(self, request):
        return self.render(
            "dashboard/audit_list.html",
            page=self.page(selectors.audit_list(landlord=self.landlord)),
        )
