from django import template

from money.currency import format_money

register = template.Library()


@register.filter
def money(minor, currency):
    """{{ charge.amount_minor|money:charge.currency }} → "€1,200.00"."""
    if minor is None or not currency:
        return ""
    return format_money(int(minor), currency)
