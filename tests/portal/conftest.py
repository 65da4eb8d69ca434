"""Fixtures for the tenant portal: landlord A with two tenants (the one logged in and
a neighbour with look-alike data), landlord B with a tenant of its own, each with a
portal login, invoices and a payment, so a query that forgets its tenant (or
landlord) scope shows someone else's rows.

Stripe: unit tests use the payments tests' FakeStripe (extended with the SetupIntent
and payment-method calls the portal makes); modules that set USES_LOCALSTRIPE talk
to a real localstripe process (the payments tests' fixtures, imported here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import date

import pytest

from invoices.models import Invoice
from payments import services as payment_services
from payments import stripe_client
from payments.models import Method, Payment
from tenants.models import Landlord, Lease, Tenant
from tests.factories import MembershipFactory, UserFactory
from tests.invoices.factories import emails_off, lease_with_charges
from tests.payments.conftest import DECEMBER, NOVEMBER, FakeStripe, bill
from tests.payments.conftest import stripe_settings as stripe_settings
from tests.payments.test_localstripe import localstripe_url as localstripe_url
from tests.payments.test_localstripe import stripe_env as stripe_env

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


class PortalFakeStripe(FakeStripe):
    """FakeStripe plus what the portal calls: SetupIntents and payment methods."""

    def __init__(self):
        super().__init__()
        self.methods: dict[str, dict] = {}

    def setup_intent_create(self, **kwargs):
        self._record("setup_intent_create", **kwargs)
        n = next(self._n)
        return {"id": f"seti_fake{n}", "client_secret": f"seti_fake{n}_secret_x"}

    def add_card(self, last4: str = "4242") -> str:
        pm_id = f"pm_fake{next(self._n)}"
        self.methods[pm_id] = {
            "id": pm_id,
            "type": "card",
            "customer": None,
            "card": {"brand": "visa", "last4": last4, "exp_month": 12, "exp_year": 2030},
        }
        return pm_id

    def add_sepa(self, iban: str = "DE89370400440532013000") -> str:
        """A SEPA Direct Debit payment method, as confirmSepaDebitSetup leaves it."""
        pm_id = f"pm_fake{next(self._n)}"
        self.methods[pm_id] = {
            "id": pm_id,
            "type": "sepa_debit",
            "customer": None,
            "sepa_debit": {"bank_code": iban[4:12], "country": iban[:2], "last4": iban[-4:]},
        }
        return pm_id

    def payment_method_retrieve(self, *, payment_method_id, stripe_account=None):
        return self.methods[payment_method_id]

    def payment_method_attach(self, *, payment_method_id, customer_id, **kwargs):
        self._record("payment_method_attach", id=payment_method_id)
        self.methods[payment_method_id]["customer"] = customer_id
        return self.methods[payment_method_id]

    def payment_method_detach(self, *, payment_method_id, **kwargs):
        self._record("payment_method_detach", id=payment_method_id)
        self.methods[payment_method_id]["customer"] = None
        return self.methods[payment_method_id]


@pytest.fixture(autouse=True)
def fast_password_hasher(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def fake_stripe(request, monkeypatch, settings):
    settings.STRIPE_JS_URL = "/static/portal/test-no-stripe.js"
    if getattr(request.module, "USES_LOCALSTRIPE", False):
        yield None
        return
    fake = PortalFakeStripe()
    for name in (
        "customer_create",
        "payment_intent_create",
        "payment_intent_retrieve",
        "charge_retrieve",
        "refund_list",
        "payout_balance_transactions",
        "events_list",
        "setup_intent_create",
        "payment_method_retrieve",
        "payment_method_attach",
        "payment_method_detach",
    ):
        monkeypatch.setattr(stripe_client, name, getattr(fake, name))
    yield fake


@dataclass
class Renter:
    """One tenant with a portal login, a lease, November and December invoices."""

    landlord: Landlord
    tenant: Tenant
    user: object
    lease: Lease
    november: Invoice
    december: Invoice
    payments: list[Payment] = field(default_factory=list)


@dataclass
class PortalWorld:
    me: Renter
    neighbour: Renter  # same landlord, another tenant
    other: Renter  # landlord B's tenant


def _renter(landlord, lease, invoices, email) -> Renter:
    tenant = lease.tenants.get()
    user = UserFactory(username=email)
    tenant.user = user
    tenant.save(update_fields=["user"])
    november, december = sorted(
        (i for i in invoices if i.lease_id == lease.pk), key=lambda i: i.period_start
    )
    return Renter(landlord, tenant, user, lease, november, december)


def _cash(renter: Renter, amount: int, reference: str) -> Payment:
    payment = payment_services.manual_payment_record(
        landlord=renter.landlord,
        tenant=renter.tenant,
        amount_minor=amount,
        currency=renter.november.currency,
        method=Method.CASH,
        reference=reference,
        received_on=date(2026, 11, 20),
        actor=None,
    )
    renter.payments.append(payment)
    return payment


@pytest.fixture
def portal_world(landlord, other_landlord) -> PortalWorld:
    """A's tenant Ada (logged in in most tests) and neighbour Nils, B's tenant Bo;
    Nils and Bo have partly paid November (a manual payment each), Ada owes both
    months. Names and references carry markers: "Nils"/"Bo" never appear on Ada's
    pages."""
    emails_off(landlord=landlord)
    emails_off(landlord=other_landlord)
    ada_lease = lease_with_charges(
        landlord=landlord, renter="Ada Tenant", email="ada@example.test", property_name="Linden Hof"
    )
    nils_lease = lease_with_charges(
        landlord=landlord,
        renter="Nils Neighbour",
        email="nils@example.test",
        property_name="Nilsgasse",
        rent_minor=99_000,
    )
    bo_lease = lease_with_charges(
        landlord=other_landlord,
        renter="Bo Other",
        email="bo@example.test",
        property_name="Bo Towers",
        rent_minor=150_000,
    )
    mine = bill(landlord, NOVEMBER) + bill(landlord, DECEMBER)
    theirs = bill(other_landlord, NOVEMBER) + bill(other_landlord, DECEMBER)
    world = PortalWorld(
        me=_renter(landlord, ada_lease, mine, "ada@example.test"),
        neighbour=_renter(landlord, nils_lease, mine, "nils@example.test"),
        other=_renter(other_landlord, bo_lease, theirs, "bo@example.test"),
    )
    _cash(world.neighbour, 40_000, "Nils cash")
    _cash(world.other, 50_000, "Bo cash")
    return world


@pytest.fixture
def tenant_client(client, portal_world):
    """The test client logged in as Ada (landlord A's tenant)."""
    client.force_login(portal_world.me.user)
    return client


@pytest.fixture
def staff_user(landlord):
    return MembershipFactory(landlord=landlord, role="manager").user
