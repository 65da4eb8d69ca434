from datetime import datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from ledger.models import GENESIS_HASH, AccountCode, LedgerEntry, LedgerTransaction
from ledger.selectors import (
    account_balance,
    document_balance,
    document_balances,
    tenant_balance,
    tenant_statement,
    transaction_list,
    trial_balance,
)
from ledger.services import EntrySpec, transaction_post
from tests.factories import TenantFactory
from tests.ledger.factories import WHEN, books_for, post_charge, post_payment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("other_books")]


def test_a_charge_makes_the_tenant_owe_it(books):
    post_charge(books, 120_000, key="charge-1")

    assert tenant_balance(landlord=books.landlord, tenant=books.tenant) == {"EUR": 120_000}
    assert account_balance(account=books.receivable) == 120_000
    assert account_balance(account=books.rent_income) == -120_000
    assert document_balance(landlord=books.landlord, document_kind="invoice", document_id=1) == {
        "EUR": 120_000
    }


def test_a_payment_reduces_what_is_owed_on_the_invoice(books):
    post_charge(books, 120_000, key="charge-1")
    post_payment(books, 50_000, key="payment-1")

    assert document_balance(landlord=books.landlord, document_kind="invoice", document_id=1) == {
        "EUR": 70_000
    }
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant, currency="EUR") == {
        "EUR": 70_000
    }
    assert account_balance(account=books.bank) == 50_000


def test_credit_held_for_a_tenant_counts_against_what_they_owe(books):
    post_charge(books, 10_000, key="charge-1")
    transaction_post(
        landlord=books.landlord,
        idempotency_key="overpayment",
        effective_at=WHEN,
        description="Overpayment",
        entries=[
            EntrySpec(books.bank, 15_000, "EUR"),
            EntrySpec(books.receivable, -10_000, "EUR", document_kind="invoice", document_id=1),
            EntrySpec(books.credit, -5_000, "EUR"),
        ],
    )
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant) == {"EUR": -5_000}


def test_tenant_balance_for_a_currency_without_entries_is_zero(books):
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant, currency="CHF") == {
        "CHF": 0
    }


def test_entries_default_to_their_account_tenant(books):
    txn = post_charge(books, 100, key="charge-1")
    receivable_entry = txn.entries.get(account=books.receivable)
    assert receivable_entry.tenant_id == books.tenant.pk
    assert receivable_entry.landlord_id == books.landlord.pk


def test_reposting_with_the_same_key_returns_the_same_transaction(books):
    first = post_charge(books, 120_000, key="charge-1")
    again = post_charge(books, 120_000, key="charge-1")

    assert again.pk == first.pk
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 1
    assert LedgerEntry.objects.for_landlord(books.landlord).count() == 2


def test_reusing_a_key_for_different_content_is_rejected(books):
    post_charge(books, 120_000, key="charge-1")
    with pytest.raises(ValidationError, match="already used for a different posting"):
        post_charge(books, 120_001, key="charge-1")


def test_the_same_key_may_be_used_by_another_landlord(books, other_books):
    txn = post_charge(books, 99_900, key="b-charge-1")
    assert txn.landlord_id == books.landlord.pk
    assert txn.seq == 1


def test_postings_form_a_gapless_hash_chain(books):
    first = post_charge(books, 100, key="charge-1")
    second = post_payment(books, 100, key="payment-1")

    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert len(second.hash) == 64


@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        ([100, -99], "does not balance"),
        ([100], "at least two entries"),
        ([100, 0, -100], "non-zero integer"),
        ([100.0, -100.0], "non-zero integer"),
        ([True, -1], "non-zero integer"),
    ],
)
def test_malformed_postings_are_rejected_before_writing(books, amounts, message):
    accounts = [books.receivable, books.rent_income, books.bank]
    entries = [EntrySpec(accounts[i], amount, "EUR") for i, amount in enumerate(amounts)]
    with pytest.raises(ValidationError, match=message):
        transaction_post(
            landlord=books.landlord,
            idempotency_key="bad",
            effective_at=WHEN,
            description="",
            entries=entries,
        )
    assert not LedgerTransaction.objects.for_landlord(books.landlord).exists()


def test_balance_is_checked_per_currency(books):
    usd_bank = books_for(books.landlord, books.tenant, "USD").bank
    with pytest.raises(ValidationError, match="EUR \\+100, USD -100"):
        transaction_post(
            landlord=books.landlord,
            idempotency_key="fx",
            effective_at=WHEN,
            description="",
            entries=[EntrySpec(books.bank, 100, "EUR"), EntrySpec(usd_bank, -100, "USD")],
        )


def test_another_landlords_account_is_rejected(books, other_books):
    with pytest.raises(ValidationError, match="does not belong to this landlord"):
        transaction_post(
            landlord=books.landlord,
            idempotency_key="x",
            effective_at=WHEN,
            description="",
            entries=[
                EntrySpec(books.bank, 100, "EUR"),
                EntrySpec(other_books.rent_income, -100, other_books.currency),
            ],
        )


def test_an_amount_in_another_currency_than_its_account_is_rejected(books):
    with pytest.raises(ValidationError, match="USD amount cannot be booked"):
        transaction_post(
            landlord=books.landlord,
            idempotency_key="x",
            effective_at=WHEN,
            description="",
            entries=[EntrySpec(books.bank, 100, "USD"), EntrySpec(books.rent_income, -100, "USD")],
        )


def test_another_landlords_tenant_or_lease_is_rejected(books, other_landlord):
    stranger = TenantFactory(landlord=other_landlord)
    with pytest.raises(ValidationError, match="No tenant"):
        transaction_post(
            landlord=books.landlord,
            idempotency_key="x",
            effective_at=WHEN,
            description="",
            entries=[
                EntrySpec(books.bank, 100, "EUR", tenant_id=stranger.pk),
                EntrySpec(books.rent_income, -100, "EUR"),
            ],
        )


def test_a_naive_effective_at_is_rejected(books):
    with pytest.raises(ValidationError, match="timezone-aware"):
        transaction_post(
            landlord=books.landlord,
            idempotency_key="x",
            effective_at=datetime(2026, 1, 1),  # noqa: DTZ001 - the point of the test
            description="",
            entries=[EntrySpec(books.bank, 100, "EUR"), EntrySpec(books.rent_income, -100, "EUR")],
        )


def test_document_balances_answers_many_invoices_in_one_query(books, django_assert_num_queries):
    for invoice_id in (1, 2, 3):
        post_charge(books, 1_000 * invoice_id, key=f"charge-{invoice_id}", invoice_id=invoice_id)
    post_payment(books, 500, key="payment-1", invoice_id=2)

    with django_assert_num_queries(1):
        balances = document_balances(
            landlord=books.landlord, document_kind="invoice", document_ids=[1, 2, 3, 4]
        )
    assert balances == {1: {"EUR": 1_000}, 2: {"EUR": 1_500}, 3: {"EUR": 3_000}, 4: {}}


def test_tenant_statement_has_a_running_balance_in_effective_order(books):
    post_charge(books, 1_000, key="jan", invoice_id=1, when=WHEN)
    post_charge(books, 1_000, key="mar", invoice_id=3, when=WHEN + timedelta(days=59))
    post_payment(books, 700, key="pay", invoice_id=1, when=WHEN + timedelta(days=10))

    lines = list(tenant_statement(landlord=books.landlord, tenant=books.tenant))

    assert [(line.amount_minor, line.running_balance) for line in lines] == [
        (1_000, 1_000),
        (-700, 300),
        (1_000, 1_300),
    ]
    assert lines[0].description == "Invoice 1"


def test_transaction_list_filters_by_document_and_tenant(books, django_assert_num_queries):
    other_tenant_books = books_for(books.landlord, TenantFactory(landlord=books.landlord))
    post_charge(books, 1_000, key="c1", invoice_id=1)
    post_charge(other_tenant_books, 1_000, key="c2", invoice_id=2)
    post_payment(books, 1_000, key="p1", invoice_id=1, payment_id=7)

    with django_assert_num_queries(2):  # transactions + prefetched entries with accounts
        everything = list(transaction_list(landlord=books.landlord))
        assert [len(t.entries.all()) for t in everything] == [2, 2, 2]
        assert everything[0].entries.all()[0].account.code in {
            AccountCode.RECEIVABLE,
            AccountCode.RENT_INCOME,
        }
    assert [t.idempotency_key for t in everything] == ["c1", "c2", "p1"]
    by_doc = transaction_list(landlord=books.landlord, document_kind="payment", document_id=7)
    assert [t.idempotency_key for t in by_doc] == ["p1"]
    by_tenant = transaction_list(landlord=books.landlord, tenant=books.tenant)
    assert [t.idempotency_key for t in by_tenant] == ["c1", "p1"]


def test_trial_balance_lists_debits_and_credits_and_sums_to_zero(books):
    post_charge(books, 1_000, key="c1")
    post_payment(books, 400, key="p1")

    result = trial_balance(landlord=books.landlord)

    assert result.is_balanced
    assert result.totals == {"EUR": 0}
    lines = {line.code: (line.debit, line.credit, line.balance) for line in result.lines}
    assert lines == {
        "bank": (400, 0, 400),
        "receivable": (1_000, 400, 600),
        "rent_income": (0, 1_000, -1_000),
    }
