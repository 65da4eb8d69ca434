"""Management commands: bad arguments are a CommandError naming the option, nothing written."""

import pytest
from django.core.management import CommandError, call_command

from tests.tenants.helpers import snapshot

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("as_of", ["garbage", "2026-13-01"])
def test_billing_run_with_a_malformed_as_of_is_a_command_error_naming_it(world, as_of):
    before = snapshot()

    with pytest.raises(CommandError, match="--as-of"):
        call_command("billing_run", "--landlord", "acme", "--period", "2026-12", "--as-of", as_of)

    assert snapshot() == before


def test_billing_run_for_december_9999_is_a_command_error_naming_the_period(world):
    before = snapshot()

    with pytest.raises(CommandError, match="--period"):
        call_command("billing_run", "--landlord", "acme", "--period", "9999-12")

    assert snapshot() == before
