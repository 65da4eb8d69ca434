"""Operator admin (/ops/admin/) for every tenants model; landlord is always a filter."""

from django.contrib import admin

from tenants.models import (
    AuditEvent,
    Charge,
    Landlord,
    Lease,
    Membership,
    Property,
    StaffInvitation,
    Tenant,
    Unit,
)


@admin.register(Landlord)
class LandlordAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "timezone", "default_currency", "created_at"]
    search_fields = ["name", "slug"]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "landlord", "role"]
    list_filter = ["role", "landlord"]
    raw_id_fields = ["user"]


class LandlordOwnedAdmin(admin.ModelAdmin):
    list_filter = ["landlord"]
    list_select_related = ["landlord"]
    show_full_result_count = False  # no COUNT(*) over big tables


@admin.register(StaffInvitation)
class StaffInvitationAdmin(LandlordOwnedAdmin):
    list_display = ["email", "landlord", "role", "expires_at", "accepted_at"]
    exclude = ["token_hash"]


@admin.register(Property)
class PropertyAdmin(LandlordOwnedAdmin):
    list_display = ["name", "landlord", "city"]
    search_fields = ["name", "city"]


@admin.register(Unit)
class UnitAdmin(LandlordOwnedAdmin):
    list_display = ["name", "property", "landlord"]
    search_fields = ["name", "property__name"]
    raw_id_fields = ["property"]


@admin.register(Tenant)
class TenantAdmin(LandlordOwnedAdmin):
    list_display = ["full_name", "email", "landlord"]
    search_fields = ["full_name", "email"]
    raw_id_fields = ["user"]


class ChargeInline(admin.TabularInline):
    model = Charge
    extra = 0
    exclude = ["landlord"]


@admin.register(Lease)
class LeaseAdmin(LandlordOwnedAdmin):
    list_display = ["id", "unit", "landlord", "start_date", "end_date", "status"]
    list_filter = ["status", "landlord"]
    raw_id_fields = ["unit", "tenants"]
    inlines = [ChargeInline]


@admin.register(Charge)
class ChargeAdmin(LandlordOwnedAdmin):
    list_display = ["id", "lease", "kind", "amount_minor", "currency", "frequency"]
    raw_id_fields = ["lease"]


@admin.register(AuditEvent)
class AuditEventAdmin(LandlordOwnedAdmin):
    list_display = ["created_at", "landlord", "actor", "action", "summary"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
