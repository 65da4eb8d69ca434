def current_landlord(request):
    return {
        "current_landlord": getattr(request, "landlord", None),
        "current_membership": getattr(request, "membership", None),
        "memberships": getattr(request, "memberships", []),
    }
