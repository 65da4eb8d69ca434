from django import template
from django.utils import timezone
from django.utils.translation import get_language

from money.currency import format_money, from_minor
from portal.formats import decimal_comma, failure_text
from portal.models import TenantInvitation

register = template.Library()


@register.filter
def pmoney(minor, currency):
    """Money in the language the page is rendered in: "€1,200.00" / "1.200,00 €"."""
    if minor is None or not currency:
        return ""
    return format_money(int(minor), currency, (get_language() or "en").split("-")[0])


@register.filter
def absolute(minor):
    return abs(int(minor or 0))


@register.filter
def plain_amount(minor, currency):
    """Minor units as the tenant would type them, for the amount input: 1200.00, or
    1200,00 in a language that writes a decimal comma."""
    if minor is None or not currency:
        return ""
    text = str(from_minor(int(minor), currency))
    return text.replace(".", ",") if decimal_comma() else text


@register.filter
def received_day(payment, landlord):
    """The day the payment's money arrived, in the landlord's time zone (see
    Payment.received_date); None while it has not."""
    return payment.received_date(landlord.tz)


@register.filter
def payment_day(payment, landlord):
    """The date a payment is listed under: when the money arrived, else (on its way,
    or failed) the landlord's day it was started. Never the row's creation alone: staff
    record cash and transfers days after they arrive."""
    received = payment.received_date(landlord.tz)
    return received or timezone.localtime(payment.created_at, landlord.tz).date()


@register.inclusion_tag("portal/staff/_invite.html", takes_context=True)
def portal_invite(context, tenant):
    """The tenant's portal access on the staff tenant page: linked login, the open
    invitation, and the "Invite to portal" form for staff who may send it."""
    can = context.get("can") or {}
    invitation = (
        TenantInvitation.objects.for_landlord(tenant.landlord_id)
        .filter(
            tenant=tenant,
            accepted_at__isnull=True,
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )
        .order_by("-created_at")
        .first()
    )
    return {
        "tenant": tenant,
        "invitation": invitation,
        "may_invite": bool(can.get("edit_properties") or can.get("manage_money")),
        "csrf_token": context.get("csrf_token"),
    }


@register.filter(name="failure_text")
def failure_text_filter(payment):
    """Why a payment failed, in the page's language (`portal.formats.failure_text`)."""
    return failure_text(payment)
