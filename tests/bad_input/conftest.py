"""Bad input from every edge (forms, query parameters, commands, service calls) is a
clear error naming the field and writes nothing. These reuse the payments suite's
fixtures: `world`: landlord A ("acme", Europe/Berlin, EUR) with tenant Ada and
issued November/December 2026 invoices; landlord B with look-alike data.
"""

import pytest

from tests.factories import MembershipFactory
from tests.payments.conftest import (  # noqa: F401
    FakeStripe,
    deliver,
    fake_stripe,
    stripe_settings,
    world,
)


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def owner_client(client, world):  # noqa: F811
    """A's owner, logged in; server errors come back as 500 responses, not exceptions."""
    client.raise_request_exception = False
    client.force_login(MembershipFactory(landlord=world.landlord, role="owner").user)
    return client
