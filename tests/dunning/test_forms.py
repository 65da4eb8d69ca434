"""Policy form input that the database could not hold is a field error, not a 500."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from dunning.forms import DaysField, MoneyField


def test_an_absurd_amount_is_a_field_error():
    with pytest.raises(ValidationError, match="too large"):
        MoneyField(currency="EUR").clean("99999999999999999999")


@pytest.mark.parametrize("text", ["²", "1, ³", "1.5", "-2"])
def test_retry_days_must_be_plain_digits(text):
    with pytest.raises(ValidationError):
        DaysField().clean(text)
