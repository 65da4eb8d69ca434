"""ISO 4217 currencies and their minor-unit exponents (from Babel's CLDR data).

Exponents are CLDR's `digits`, which match ISO 4217 for the currencies landlords bill
in (EUR/USD 2, JPY 0, KWD 3); CLDR differs from ISO for a few currencies with no
coins in use (e.g. IQD 0 instead of 3).
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import cache

from babel.numbers import format_currency, get_currency_precision, list_currencies

# Currencies that CLDR still lists but that no landlord can bill in any more.
_RETIRED = {
    "XXX",
    "XTS",
    "XAU",
    "XAG",
    "XPT",
    "XPD",
    "XDR",
    "XSU",
    "XUA",
    "XBA",
    "XBB",
    "XBC",
    "XBD",
}

# What a person types: an optional sign, ASCII digits, optionally grouped in threes by
# commas or spaces ("1,250" / "1 250"), and an optional decimal point with digits.
# Anything else ("12,5", "1e3", "NaN", "1_000", non-ASCII digits) is refused rather
# than guessed at: "12,5" is 12.50 to a German and 125 to Python.
_GROUP = "[, \u00a0\u202f]"
_AMOUNT = re.compile(
    rf"[+-]?(?:[0-9]{{1,3}}(?:{_GROUP}[0-9]{{3}})+|[0-9]+)(?:\.[0-9]+)?|[+-]?\.[0-9]+"
)


@cache
def known_currencies() -> frozenset[str]:
    return frozenset(c for c in list_currencies() if len(c) == 3 and c.isupper()) - _RETIRED


def is_known_currency(code: str) -> bool:
    return code in known_currencies()


def minor_exponent(code: str) -> int:
    """Digits after the decimal point: 2 for EUR/USD, 0 for JPY, 3 for KWD.

    An unknown code is a ValueError, never a silent default of 2.
    """
    if not is_known_currency(code):
        raise ValueError(f"{code!r} is not a known ISO 4217 currency code")
    return get_currency_precision(code)


def to_minor(amount_text: str, code: str) -> int:
    """Parse a human amount ("1,250.50" or "1250.5") into minor units, exactly.

    Raises ValueError for anything that is not a plain amount and for amounts with
    more decimals than the currency has (12.345 EUR is refused, never rounded).
    """
    if not isinstance(amount_text, str):
        raise TypeError("amount_text must be a str")
    stripped = amount_text.strip()
    if not _AMOUNT.fullmatch(stripped):
        raise ValueError(f"{amount_text!r} is not an amount")
    # Integer arithmetic on the digits, not Decimal: Decimal.scaleb rounds to the
    # context precision (28 digits) and would silently accept a rounded huge amount.
    sign, digits = (-1, stripped[1:]) if stripped[0] == "-" else (1, stripped.lstrip("+"))
    whole, _, fraction = re.sub(_GROUP, "", digits).partition(".")
    exponent = minor_exponent(code)
    fraction = fraction.rstrip("0")
    if len(fraction) > exponent:
        raise ValueError(f"{amount_text!r} has more decimals than {code} allows")
    return sign * int((whole or "0") + fraction.ljust(exponent, "0"))


# The largest amount a person may type for one charge, deposit or fee, in minor units
# (ten billion in a two-decimal currency). Totals of a few such lines, with tax, stay
# far inside PostgreSQL's bigint, so no invoice can overflow at month end.
MAX_TYPED_MINOR = 10**12


def from_minor(minor: int, code: str) -> Decimal:
    """Minor units as an exact Decimal for display and export."""
    if not isinstance(minor, int):
        raise TypeError("minor must be an int")
    # Built from text so no context precision applies: exact for any size.
    return Decimal(f"{minor}e-{minor_exponent(code)}")


def format_money(minor: int, code: str, locale: str = "en") -> str:
    return format_currency(from_minor(minor, code), code, locale=locale)
