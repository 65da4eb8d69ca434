import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from ledger.hashing import chain_hash
from ledger.models import LedgerTransaction
from ledger.selectors import account_balance, document_balance, ledger_verify, tenant_balance
from ledger.services import transaction_reverse
from tests.ledger.factories import WHEN, post_charge

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("other_books")]


def test_a_reversal_posts_the_negated_entries_and_links_the_original(books):
    charge = post_charge(books, 120_000, key="c1")

    reversal = transaction_reverse(
        landlord=books.landlord, transaction=charge, reason="billed twice", effective_at=WHEN
    )

    assert reversal.reverses_id == charge.pk
    assert reversal.seq == charge.seq + 1
    assert reversal.description == "Reversal of #1: billed twice"
    assert reversal.document_kind == "invoice"
    assert sorted(e.amount_minor for e in reversal.entries.all()) == [-120_000, 120_000]
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant) == {"EUR": 0}
    assert account_balance(account=books.rent_income) == 0
    assert document_balance(landlord=books.landlord, document_kind="invoice", document_id=1) == {
        "EUR": 0
    }
    assert ledger_verify(landlord=books.landlord).ok


def test_reversing_twice_is_refused(books):
    charge = post_charge(books, 100, key="c1")
    first = transaction_reverse(
        landlord=books.landlord, transaction=charge, reason="oops", effective_at=WHEN
    )

    with pytest.raises(ValidationError, match=f"already reversed by #{first.seq}"):
        transaction_reverse(
            landlord=books.landlord, transaction=charge, reason="oops", effective_at=WHEN
        )
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 2


def test_a_retried_reversal_with_the_same_key_returns_the_first(books):
    charge = post_charge(books, 100, key="c1")
    first = transaction_reverse(
        landlord=books.landlord,
        transaction=charge,
        reason="oops",
        effective_at=WHEN,
        idempotency_key="reverse-c1",
    )
    again = transaction_reverse(
        landlord=books.landlord,
        transaction=charge,
        reason="oops",
        effective_at=WHEN,
        idempotency_key="reverse-c1",
    )
    assert again.pk == first.pk


def test_another_landlords_transaction_cannot_be_reversed(books, other_books):
    theirs = LedgerTransaction.objects.for_landlord(other_books.landlord).first()
    with pytest.raises(ValidationError, match="does not belong to this landlord"):
        transaction_reverse(
            landlord=books.landlord, transaction=theirs, reason="x", effective_at=WHEN
        )


def test_the_database_allows_one_reversal_per_transaction(books):
    charge = post_charge(books, 100, key="c1")
    reversal = transaction_reverse(
        landlord=books.landlord, transaction=charge, reason="oops", effective_at=WHEN
    )
    with (
        pytest.raises(IntegrityError, match="ledger_transaction_reversed_once"),
        transaction.atomic(),
    ):
        LedgerTransaction.objects.create(
            landlord=books.landlord,
            seq=3,
            idempotency_key="second-reversal",
            effective_at=WHEN,
            reverses=charge,
            content_hash="a" * 64,
            prev_hash=reversal.hash,
            hash=chain_hash(prev_hash=reversal.hash, seq=3, content_hash="a" * 64),
        )
