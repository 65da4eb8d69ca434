"""ISO 4217 currencies and their minor-unit exponents (from Babel's CLDR data)."""

from functools import cache

from babel.numbers import format_currency, get_currency_precision, list_currencies

# Currencies that CLDR still lists but that no landlord can bill in any more.
_RETIRED = {"XXX", "XTS", "XAU", "XAG", "XPT", "XPD", "XDR", "XSU", "XUA", "XBA", "XBB", "XBC", "XBD"}


@cache
def known_currencies() -> frozenset[str]:
    return frozenset(c for c in list_currencies() if len(c) == 3 and c.isupper()) - _RETIRED


def is_known_currency(code: str) -> bool:
    return code in known_currencies()


def minor_exponent(code: str) -> int:
    """Digits after the decimal point: 2 for EUR/USD, 0 for JPY, 3 for KWD."""
    return get_currency_precision(code)


def to_minor(amount_text: str, code: str) -> int:
    """Parse a human amount ("1,250.50" or "1250.5") into minor units, exactly."""
    from decimal import Decimal, InvalidOperation

    cleaned = amount_text.strip().replace(",", "").replace(" ", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation as exc:
        raise ValueError(f"{amount_text!r} is not an amount") from exc
    scaled = value.scaleb(minor_exponent(code))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount_text!r} has more decimals than {code} allows")
    return int(scaled)


def from_minor(minor: int, code: str):
    """Minor units as an exact Decimal for display and export."""
    from decimal import Decimal

    return Decimal(minor).scaleb(-minor_exponent(code))


def format_money(minor: int, code: str, locale: str = "en") -> str:
    return format_currency(from_minor(minor, code), code, locale=locale)
