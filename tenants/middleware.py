"""Resolves the current landlord for each staff request: the one mechanism that
scopes every dashboard query (see tenants.selectors and tenants.views.LandlordViewMixin)."""

from __future__ import annotations

from tenants.models import Membership

SESSION_KEY = "current_landlord_id"


class CurrentLandlordMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.landlord = None
        request.membership = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            memberships = list(
                Membership.objects.filter(user=user)
                .select_related("landlord")
                .order_by("landlord__name")
            )
            request.memberships = memberships
            wanted = request.session.get(SESSION_KEY)
            chosen = next((m for m in memberships if m.landlord_id == wanted), None)
            chosen = chosen or (memberships[0] if memberships else None)
            if chosen is not None:
                request.membership = chosen
                request.landlord = chosen.landlord
        else:
            request.memberships = []
        return self.get_response(request)
