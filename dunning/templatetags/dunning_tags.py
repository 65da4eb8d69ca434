"""Dunning panels on pages of lower apps (invoice, tenant and lease detail).

Those apps never import dunning: their templates load this library, and each tag
reads through `dunning.selectors`, scoped to the landlord of the page."""

from django import template

from dunning import selectors
from dunning.models import Action, Channels, StepStatus

register = template.Library()

ACTION_LABELS = dict(Action.choices) | {
    "daily_fee": "Daily late fee",
    "autopay": "Autopay charge",
    "retry": "Payment retry",
    "payment_failed": "Payment failed notice",
    "update_method": "Update payment method notice",
    "waive": "Late fee waived",
}
TENANT_PANEL_STEPS = 5


@register.filter
def dunning_action(action: str) -> str:
    return str(ACTION_LABELS.get(action, action.replace("_", " ")))


@register.filter
def dunning_channels(channels: str) -> str:
    return str(dict(Channels.choices).get(channels, channels))


@register.filter
def dunning_status(status: str) -> str:
    return str(dict(StepStatus.choices).get(status, status))


@register.filter
def bp_percent(bp: int) -> str:
    """Basis points as a percentage: 250 → "2.5 %"."""
    return f"{(bp or 0) / 100:g} %"


def _landlord(context, obj):
    """The page's landlord, and only if the object is theirs."""
    landlord = context.get("current_landlord")
    if landlord is None or obj.landlord_id != landlord.pk:
        return None
    return landlord


@register.inclusion_tag("dunning/_invoice_timeline.html", takes_context=True)
def dunning_invoice_timeline(context, invoice):
    landlord = _landlord(context, invoice)
    can = context.get("can") or {}
    return {
        "invoice": invoice,
        "entries": selectors.invoice_timeline(landlord=landlord, invoice=invoice)
        if landlord
        else [],
        "may_waive": bool(can.get("manage_money"))
        and invoice.kind == "late_fee"
        and invoice.state == "issued",
    }


@register.inclusion_tag("dunning/_tenant_panel.html", takes_context=True)
def dunning_tenant_panel(context, tenant):
    landlord = _landlord(context, tenant)
    if landlord is None:
        return {"tenant": tenant, "entries": [], "state": None}
    return {
        "tenant": tenant,
        "state": selectors.tenant_dunning_state(landlord=landlord, tenant=tenant),
        "entries": selectors.tenant_timeline(
            landlord=landlord, tenant=tenant, limit=TENANT_PANEL_STEPS
        ),
        "limit": TENANT_PANEL_STEPS,
    }


@register.inclusion_tag("dunning/_lease_policy.html", takes_context=True)
def dunning_lease_policy(context, lease):
    landlord = _landlord(context, lease)
    can = context.get("can") or {}
    return {
        "lease": lease,
        "assignment": selectors.lease_assignment(landlord=landlord, lease=lease)
        if landlord
        else None,
        "may_change": bool(can.get("manage_settings")),
    }
