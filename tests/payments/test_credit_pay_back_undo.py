"""Undoing a pay-back recorded in error: its reversing posting (bank → tenant credit),
effective when it is undone; the credit is the tenant's again and first pays what they
owe; once only (a repeated submit returns the same reversal); a reason is required;
another landlord's postings and postings that are no pay-back are out of reach."""

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from ledger.models import LedgerTransaction
from payments import selectors, services
from tenants.models import AuditEvent
from tests.factories import MembershipFactory
from tests.payments.helpers import balance_of, books_ok
from tests.payments.test_credit_pay_back import RENT, credit, overpay, pay_back

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _today(time_machine):
    time_machine.move_to(NOW, tick=False)


def undo(world, posting, reason="Wrong amount typed", landlord=None):
    return services.tenant_credit_pay_back_reverse(
        landlord=landlord or world.landlord, posting=posting, reason=reason, actor=None
    )


def test_undo_gives_the_credit_back_once(world):
    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    assert credit(world) == 0

    reversal = undo(world, posting)
    again = undo(world, posting)  # the confirmation submitted twice

    assert again.pk == reversal.pk
    assert reversal.reverses_id == posting.pk
    assert reversal.effective_at == NOW
    assert sorted(
        (e.account.code, e.amount_minor) for e in reversal.entries.select_related("account")
    ) == [("bank", 43_000), ("tenant_credit", -43_000)]
    assert "Wrong amount typed" in reversal.description
    assert credit(world) == 43_000
    assert (
        AuditEvent.objects.filter(landlord=world.landlord, action="credit.pay_back_reverse").count()
        == 1
    )
    books_ok(world.landlord)
    # The right pay-back can then be recorded.
    pay_back(world, 40_000, key="k2")
    assert credit(world) == 3_000


def test_the_credit_given_back_first_pays_what_is_owed(world):
    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    # The overpayment bounces afterwards: both invoices are open again.
    services.payment_reverse(payment=world.tenant.payments.get(), reason="Bounced", actor=None)
    owed = [world.november, world.december]
    assert sum(balance_of(world.landlord, i) for i in owed) == 2 * RENT

    undo(world, posting)

    assert sum(balance_of(world.landlord, i) for i in owed) == 2 * RENT - 43_000
    assert credit(world) == 0
    books_ok(world.landlord)


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_reason_is_required_and_nothing_is_posted(world, reason):
    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    count = LedgerTransaction.objects.count()
    with pytest.raises(ValidationError) as raised:
        undo(world, posting, reason=reason)
    assert "reason" in raised.value.message_dict
    assert LedgerTransaction.objects.count() == count


def test_only_a_pay_back_of_this_landlord_can_be_undone(world):
    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    invoice_posting = LedgerTransaction.objects.filter(
        landlord=world.landlord, idempotency_key__startswith="invoice:"
    ).first()
    count = LedgerTransaction.objects.count()
    with pytest.raises(ValidationError):
        undo(world, invoice_posting)
    with pytest.raises(ValidationError):
        undo(world, posting, landlord=world.other)
    assert LedgerTransaction.objects.count() == count


def test_a_pay_back_reversed_another_way_is_not_reversed_again(world):
    from ledger.services import transaction_reverse

    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    transaction_reverse(
        landlord=world.landlord, transaction=posting, reason="by hand", effective_at=NOW
    )
    with pytest.raises(ValidationError, match="already reversed"):
        undo(world, posting)


def test_the_statement_links_it_and_the_page_undoes_it(client, world):
    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    client.force_login(MembershipFactory(landlord=world.landlord, role="owner").user)
    statement = reverse("dashboard:tenant_statement", args=[world.tenant.pk])
    url = reverse("dashboard:credit_pay_back_reverse", args=[posting.pk])
    assert url in client.get(statement).content.decode()

    page = client.get(url)
    assert page.status_code == 200 and "€430.00" in page.content.decode()
    refused = client.post(url, {"reason": ""})
    assert refused.status_code == 200
    assert "Say why the pay-back is undone." in refused.content.decode()
    assert credit(world) == 0

    done = client.post(url, {"reason": "Transfer never sent"})
    assert done.status_code == 302 and done.url == statement
    assert credit(world) == 43_000
    body = client.get(statement).content.decode()
    assert url not in body and "reversed by #" in body
    assert "was undone" in client.get(url).content.decode()


def test_other_landlords_postings_and_other_postings_are_404(client, world):
    overpay(world, 2 * RENT + 43_000)
    pay_back(world, 43_000)
    client.force_login(MembershipFactory(landlord=world.landlord, role="owner").user)
    theirs = LedgerTransaction.objects.filter(landlord=world.other).first()
    ours = LedgerTransaction.objects.filter(
        landlord=world.landlord, idempotency_key__startswith="invoice:"
    ).first()
    for posting in (theirs, ours):
        url = reverse("dashboard:credit_pay_back_reverse", args=[posting.pk])
        assert client.get(url).status_code == 404
        assert client.post(url, {"reason": "x"}).status_code == 404


def test_staff_without_money_rights_see_no_link_and_are_refused(client, world):
    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    client.force_login(MembershipFactory(landlord=world.landlord, role="finance").user)
    url = reverse("dashboard:credit_pay_back_reverse", args=[posting.pk])
    statement = reverse("dashboard:tenant_statement", args=[world.tenant.pk])
    assert url not in client.get(statement).content.decode()
    assert client.post(url, {"reason": "x"}).status_code == 403
    assert selectors.tenant_credits(landlord=world.landlord, tenant=world.tenant) == {}


def test_the_pay_back_form_sent_again_after_its_undo_is_refused(world):
    """The stale form (browser Back) must not answer 'recorded' with the undone posting."""
    overpay(world, 2 * RENT + 43_000)
    posting = pay_back(world, 43_000)
    undo(world, posting)
    count = LedgerTransaction.objects.count()

    with pytest.raises(ValidationError, match="undone"):
        pay_back(world, 43_000)

    assert LedgerTransaction.objects.count() == count
    assert credit(world) == 43_000


def test_the_tenant_comes_from_the_posting_not_its_key(world):
    """A pay-back posted under the first key shape (`credit-payback:<form key>`) is
    undone under its own tenant's lock, not a tenant read out of the form key."""
    from ledger.models import AccountCode
    from ledger.services import EntrySpec, account_get_or_create, transaction_post

    overpay(world, 2 * RENT + 43_000)
    accounts = [
        account_get_or_create(landlord=world.landlord, code=code, currency="EUR", tenant=tenant)
        for code, tenant in ((AccountCode.TENANT_CREDIT, world.tenant), (AccountCode.BANK, None))
    ]
    posting = transaction_post(
        landlord=world.landlord,
        idempotency_key=f"{selectors.CREDIT_PAY_BACK_KEY}staff-form:0123abcd",
        effective_at=NOW,
        description="Credit paid back (first key shape)",
        entries=[
            EntrySpec(account=accounts[0], amount_minor=43_000, currency="EUR"),
            EntrySpec(account=accounts[1], amount_minor=-43_000, currency="EUR"),
        ],
    )
    assert credit(world) == 0

    undo(world, posting)

    assert credit(world) == 43_000
    books_ok(world.landlord)
