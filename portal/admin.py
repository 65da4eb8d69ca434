from django.contrib import admin

from portal.models import TenantInvitation


@admin.register(TenantInvitation)
class TenantInvitationAdmin(admin.ModelAdmin):
    """Read-only: invitations are created and used through portal.services."""

    list_display = ("email", "tenant", "landlord", "created_at", "expires_at", "accepted_at")
    list_filter = ("landlord",)
    search_fields = ("email", "tenant__full_name")
    exclude = ("token_hash",)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
