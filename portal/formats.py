"""Language choices of the portal: which languages it has texts for, and how the
tenant writes amounts."""

from __future__ import annotations

from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

# Languages the portal has texts for (portal/locale); other tenants read English.
PORTAL_LANGUAGES = ("en", "de")
# Languages that write a decimal comma: 1.250,50 / 1 250,50.
DECIMAL_COMMA_LANGUAGES = frozenset({"de", "fr", "es"})


def portal_language(language: str | None) -> str:
    code = (language or "").split("-")[0].lower()
    return code if code in PORTAL_LANGUAGES else "en"


def decimal_comma() -> bool:
    """Whether the active language writes 12,50 rather than 12.50."""
    return (get_language() or "en").split("-")[0] in DECIMAL_COMMA_LANGUAGES


# Why a card or bank payment failed, in the tenant's words and language. Stripe's own
# message is English only; a known code gets one of these (decline code first, the
# more precise), anything else the plain "did not go through".
_FAILURE_TEXTS = {
    "insufficient_funds": _("Your card has insufficient funds."),
    "expired_card": _("Your card has expired."),
    "incorrect_cvc": _("Your card's security code is incorrect."),
    "invalid_cvc": _("Your card's security code is incorrect."),
    "incorrect_number": _("Your card number is incorrect."),
    "invalid_number": _("Your card number is incorrect."),
    "invalid_expiry_month": _("Your card's expiry date is incorrect."),
    "invalid_expiry_year": _("Your card's expiry date is incorrect."),
    "processing_error": _("Your card could not be processed. Please try again."),
    "authentication_required": _(
        "Your bank asks you to confirm this payment. Pay again to confirm it."
    ),
    "lost_card": _("Your card was declined."),
    "stolen_card": _("Your card was declined."),
    "generic_decline": _("Your card was declined."),
    "do_not_honor": _("Your card was declined."),
    "card_declined": _("Your card was declined."),
}


def failure_text(payment) -> str:
    """The reason shown to the tenant for a failed payment, or "" when it has none.

    In English, Stripe's message is the most specific and is shown as it is; in another
    portal language a known code is translated and an unknown one gets a plain
    sentence, never English in a German page."""
    message = payment.failure_message or ""
    if not (message or payment.failure_code or payment.decline_code):
        return ""
    if (get_language() or "en").split("-")[0] == "en" and message:
        return message
    for code in (payment.decline_code, payment.failure_code):
        if code in _FAILURE_TEXTS:
            return str(_FAILURE_TEXTS[code])
    return str(_("The payment did not go through."))
