"""Reads for the dashboard. Every function takes the landlord and scopes through
`LandlordQuerySet.for_landlord`, so no caller can forget it."""

from __future__ import annotations

from datetime import date

from django.db.models import Count, Q, QuerySet
from django.shortcuts import get_object_or_404

from tenants.models import (
    OCCUPYING_STATUSES,
    AuditEvent,
    Charge,
    Landlord,
    Lease,
    LeaseStatus,
    Membership,
    Property,
    StaffInvitation,
    Tenant,
    Unit,
)


def scoped_get(model, *, landlord: Landlord, pk) -> object:
    """One landlord's object by id, or 404: another landlord's id looks like no id at all."""
    return get_object_or_404(model.objects.for_landlord(landlord), pk=pk)


def scoped_landlord(*, landlord: Landlord) -> Landlord:
    """A fresh copy of the current landlord (forms mutate the instance they edit)."""
    return Landlord.objects.get(pk=landlord.pk)


def membership_get(*, landlord: Landlord, pk) -> Membership:
    return get_object_or_404(
        Membership.objects.filter(landlord=landlord).select_related("user"), pk=pk
    )


def property_list(*, landlord: Landlord, search: str = "") -> QuerySet[Property]:
    qs = Property.objects.for_landlord(landlord).annotate(unit_count=Count("units"))
    if search:
        qs = qs.filter(
            Q(name__icontains=search)
            | Q(address_line1__icontains=search)
            | Q(city__icontains=search)
        )
    return qs.order_by("name", "pk")


def occupying_on(day: date, *, via: str = "") -> Q:
    """Leases that occupy their unit on `day` (`via`: the path to the lease, e.g.
    "leases" from a unit). An ended lease (notice given) still occupies it until its
    end date."""
    p = f"{via}__" if via else ""
    return Q(**{f"{p}status__in": OCCUPYING_STATUSES, f"{p}start_date__lte": day}) & (
        Q(**{f"{p}end_date__isnull": True}) | Q(**{f"{p}end_date__gt": day})
    )


def unit_list(
    *,
    landlord: Landlord,
    search: str = "",
    property_id: int | None = None,
    today: date | None = None,
) -> QuerySet[Unit]:
    qs = Unit.objects.for_landlord(landlord).select_related("property")
    if property_id:
        qs = qs.filter(property_id=property_id)
    if search:
        qs = qs.filter(Q(name__icontains=search) | Q(property__name__icontains=search))
    if today is not None:
        qs = qs.annotate(occupied=Count("leases", filter=occupying_on(today, via="leases")))
    return qs.order_by("property__name", "name", "pk")


def tenant_list(*, landlord: Landlord, search: str = "") -> QuerySet[Tenant]:
    qs = Tenant.objects.for_landlord(landlord)
    if search:
        qs = qs.filter(
            Q(full_name__icontains=search) | Q(email__icontains=search) | Q(phone__icontains=search)
        )
    return qs.order_by("full_name", "pk")


def lease_list(
    *,
    landlord: Landlord,
    search: str = "",
    status: str = "",
    unit_id: int | None = None,
    tenant_id: int | None = None,
) -> QuerySet[Lease]:
    qs = (
        Lease.objects.for_landlord(landlord)
        .select_related("unit__property")
        .prefetch_related("tenants")
    )
    if status:
        qs = qs.filter(status=status)
    if unit_id:
        qs = qs.filter(unit_id=unit_id)
    if tenant_id:
        qs = qs.filter(tenants__id=tenant_id)
    if search:
        qs = qs.filter(
            Q(unit__name__icontains=search)
            | Q(unit__property__name__icontains=search)
            | Q(tenants__full_name__icontains=search)
        ).distinct()
    return qs.order_by("-start_date", "-pk")


def charge_list(*, landlord: Landlord, lease: Lease) -> QuerySet[Charge]:
    return (
        Charge.objects.for_landlord(landlord)
        .filter(lease=lease)
        .order_by("frequency", "start_date", "pk")
    )


def membership_list(*, landlord: Landlord) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(landlord=landlord).select_related("user").order_by("user__email")
    )


def invitation_list(*, landlord: Landlord) -> QuerySet[StaffInvitation]:
    return (
        StaffInvitation.objects.for_landlord(landlord)
        .filter(accepted_at__isnull=True, revoked_at__isnull=True)
        .order_by("-created_at")
    )


def audit_list(
    *, landlord: Landlord, object_type: str = "", object_id: str = ""
) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.for_landlord(landlord).select_related("actor")
    if object_type:
        qs = qs.filter(object_type=object_type, object_id=str(object_id))
    return qs.order_by("-created_at", "-pk")


def dashboard_counts(*, landlord: Landlord, today: date) -> dict[str, int]:
    running = Q(start_date__lte=today) & (Q(end_date__isnull=True) | Q(end_date__gt=today))
    active = running & Q(status=LeaseStatus.ACTIVE)
    occupying = occupying_on(today)
    units = Unit.objects.for_landlord(landlord)
    leases = Lease.objects.for_landlord(landlord)
    return {
        "properties": Property.objects.for_landlord(landlord).count(),
        "units": units.count(),
        "tenants": Tenant.objects.for_landlord(landlord).count(),
        "active_leases": leases.filter(active).count(),
        "vacant_units": units.exclude(leases__in=leases.filter(occupying)).count(),
    }
