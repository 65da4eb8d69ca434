"""Ledger invariants over random postings: every posting sums to zero, the trial
balance is zero, and every balance is the sum of its entries."""

from collections import defaultdict

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.models import AccountCode
from ledger.selectors import account_balance, ledger_verify, tenant_balance, trial_balance
from ledger.services import EntrySpec, account_get_or_create, transaction_post
from tests.ledger.factories import WHEN

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("other_books")]

amounts = st.integers(min_value=-(10**12), max_value=10**12).filter(lambda n: n != 0)


@pytest.fixture
def accounts(landlord, tenant):
    chart = [
        (AccountCode.RECEIVABLE, "EUR", tenant),
        (AccountCode.TENANT_CREDIT, "EUR", tenant),
        (AccountCode.RENT_INCOME, "EUR", None),
        (AccountCode.BANK, "EUR", None),
        (AccountCode.RECEIVABLE, "USD", tenant),
        (AccountCode.BANK, "USD", None),
    ]
    return [
        account_get_or_create(landlord=landlord, code=code, currency=currency, tenant=owner)
        for code, currency, owner in chart
    ]


def balanced(accounts, lines):
    """Turn random (account, amount) lines into a posting: one balancing line per currency."""
    entries = [EntrySpec(accounts[i], amount, accounts[i].currency) for i, amount in lines]
    totals = defaultdict(int)
    for entry in entries:
        totals[entry.currency] += entry.amount_minor
    balancing = {"EUR": accounts[3], "USD": accounts[5]}
    for currency, total in totals.items():
        if total:
            entries.append(EntrySpec(balancing[currency], -total, currency))
    return entries


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    postings=st.lists(
        st.lists(st.tuples(st.integers(0, 5), amounts), min_size=1, max_size=6),
        min_size=1,
        max_size=8,
    )
)
def test_random_balanced_postings_keep_every_invariant(landlord, tenant, accounts, postings):
    with transaction.atomic():
        expected = defaultdict(int)
        for n, lines in enumerate(postings):
            entries = balanced(accounts, lines)
            if len(entries) < 2:  # e.g. [+5, -5] on one account collapses to nothing new
                continue
            transaction_post(
                landlord=landlord,
                idempotency_key=f"p{n}",
                effective_at=WHEN,
                description="",
                entries=entries,
            )
            for entry in entries:
                expected[entry.account.pk] += entry.amount_minor

        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the at-commit checks pass too
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        result = trial_balance(landlord=landlord)
        assert result.is_balanced
        for account in accounts:
            assert account_balance(account=account) == expected[account.pk]
        owed = defaultdict(int)
        for account in accounts:
            if account.tenant_id == tenant.pk:
                owed[account.currency] += expected[account.pk]
        actual = tenant_balance(landlord=landlord, tenant=tenant)
        assert {c: t for c, t in actual.items() if t} == {c: t for c, t in owed.items() if t}
        assert ledger_verify(landlord=landlord).ok
        transaction.set_rollback(True)
