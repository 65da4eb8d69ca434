"""The tenant portal's own rows: invitations that link a login to a Tenant.

Everything a tenant sees in the portal (leases, invoices, payments, balances) lives
in the apps below; the portal only reads it, scoped to the logged-in tenant.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from tenants.models import LandlordOwned


class TenantInvitation(LandlordOwned):
    """An emailed, expiring (7 days), single-use link that lets a tenant set a
    password and use the portal. Only the SHA-256 of the token is stored, so a copy
    of the database cannot be used to take over a tenancy. A newer invitation for the
    same tenant retires the older ones (`revoked_at`)."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, related_name="portal_invitations"
    )
    email = models.EmailField()
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(accepted_at__isnull=True) | Q(revoked_at__isnull=True),
                name="tenantinvitation_accepted_or_revoked",
            ),
        ]
        indexes = [
            models.Index(
                fields=["landlord", "tenant", "-created_at"], name="tenantinv_tenant_recent"
            ),
        ]

    def __str__(self) -> str:
        return f"Portal invitation of {self.email} (tenant {self.tenant_id})"
