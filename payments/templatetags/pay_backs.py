"""Template filters for pages of lower apps that show payments' postings (the tenant
statement lives in invoices, which may not import payments)."""

from django import template

from payments.selectors import is_credit_pay_back as _is_credit_pay_back

register = template.Library()


@register.filter
def is_credit_pay_back(idempotency_key: str | None) -> bool:
    """The ledger posting with this key is a pay-back of credit (it can be undone)."""
    return bool(idempotency_key) and _is_credit_pay_back(idempotency_key)
