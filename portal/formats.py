"""Language choices of the portal: which languages it has texts for, and how the
tenant writes amounts."""

from __future__ import annotations

from django.utils.translation import get_language

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
