"""PostgreSQL's own rules (migration 0002), exercised by writing around the services."""

import pytest
from django.db import IntegrityError, connection, transaction

from ledger.hashing import chain_hash
from ledger.models import GENESIS_HASH, LedgerEntry, LedgerTransaction
from ledger.services import account_get_or_create
from tests.ledger.factories import WHEN, post_charge

pytestmark = pytest.mark.usefixtures("other_books")


def insert_raw_transaction(landlord, entries, *, seq=1, prev_hash=GENESIS_HASH, key="raw"):
    """Write rows directly, as a buggy caller could, with a valid chain link."""
    content = "a" * 64
    txn = LedgerTransaction.objects.create(
        landlord=landlord,
        seq=seq,
        idempotency_key=key,
        effective_at=WHEN,
        content_hash=content,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash=prev_hash, seq=seq, content_hash=content),
    )
    LedgerEntry.objects.bulk_create(
        LedgerEntry(
            transaction=txn,
            landlord=landlord,
            account=account,
            amount_minor=amount,
            currency=account.currency,
        )
        for account, amount in entries
    )
    return txn


def check_now():
    """Run the deferred (at-commit) checks now, inside the test's transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        # back to deferred for whatever the test writes next (a posting inserts the
        # transaction row before its entries)
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@pytest.mark.django_db
def test_a_balanced_raw_transaction_passes_the_commit_checks(books):
    insert_raw_transaction(books.landlord, [(books.receivable, 100), (books.rent_income, -100)])
    check_now()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amounts", "message"),
    [
        ([100, -99], "does not balance: its EUR entries sum to 1"),
        ([100], "has 1 entries"),
        ([], "has 0 entries"),
    ],
)
def test_an_unbalanced_transaction_fails_the_commit_checks(books, amounts, message):
    accounts = [books.receivable, books.rent_income]
    with pytest.raises(IntegrityError, match=message), transaction.atomic():
        insert_raw_transaction(books.landlord, list(zip(accounts, amounts, strict=False)))
        check_now()


@pytest.mark.django_db(transaction=True)
def test_an_unbalanced_transaction_is_rolled_back_at_commit(books):
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        insert_raw_transaction(books.landlord, [(books.receivable, 100), (books.rent_income, -1)])
        # no error yet: the check is deferred to COMMIT
        assert LedgerEntry.objects.for_landlord(books.landlord).count() == 2
    assert not LedgerTransaction.objects.for_landlord(books.landlord).exists()


@pytest.mark.django_db
def test_an_entry_on_another_landlords_account_fails_the_commit_checks(books, other_books):
    theirs = account_get_or_create(landlord=other_books.landlord, code="bank", currency="EUR")
    with pytest.raises(IntegrityError, match="another landlord"), transaction.atomic():
        insert_raw_transaction(books.landlord, [(books.receivable, 100), (theirs, -100)])
        check_now()


@pytest.mark.django_db
def test_an_entry_in_another_currency_than_its_account_fails_the_commit_checks(books):
    usd = account_get_or_create(landlord=books.landlord, code="bank", currency="USD")
    with pytest.raises(IntegrityError, match="another currency"), transaction.atomic():
        txn = insert_raw_transaction(books.landlord, [(books.bank, 100), (books.rent_income, -100)])
        LedgerEntry.objects.create(
            transaction=txn, landlord=books.landlord, account=usd, amount_minor=5, currency="EUR"
        )
        LedgerEntry.objects.create(
            transaction=txn,
            landlord=books.landlord,
            account=books.bank,
            amount_minor=-5,
            currency="EUR",
        )
        check_now()


@pytest.mark.django_db
def test_a_transaction_that_does_not_continue_the_chain_fails_the_commit_checks(books):
    post_charge(books, 100, key="c1")
    with (
        pytest.raises(IntegrityError, match="does not continue the hash chain"),
        transaction.atomic(),
    ):
        insert_raw_transaction(
            books.landlord,
            [(books.receivable, 100), (books.rent_income, -100)],
            seq=2,
            prev_hash="b" * 64,
        )
        check_now()


@pytest.mark.django_db
def test_entries_added_later_to_a_posted_transaction_fail_the_commit_checks(books):
    txn = post_charge(books, 100, key="c1")
    check_now()
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        LedgerEntry.objects.create(
            transaction=txn,
            landlord=books.landlord,
            account=books.bank,
            amount_minor=1,
            currency="EUR",
        )
        check_now()


@pytest.mark.django_db
def test_a_zero_amount_is_refused(books):
    txn = post_charge(books, 100, key="c1")
    with pytest.raises(IntegrityError, match="ledger_entry_amount_not_zero"), transaction.atomic():
        LedgerEntry.objects.create(
            transaction=txn,
            landlord=books.landlord,
            account=books.bank,
            amount_minor=0,
            currency="EUR",
        )


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_ledgerentry SET amount_minor = amount_minor + 1",
        "DELETE FROM ledger_ledgerentry",
        "UPDATE ledger_ledgertransaction SET description = 'edited'",
        "DELETE FROM ledger_ledgertransaction",
        "TRUNCATE ledger_ledgerentry",
        "TRUNCATE ledger_ledgertransaction CASCADE",
    ],
)
def test_raw_sql_cannot_change_or_remove_ledger_rows(books, sql):
    post_charge(books, 100, key="c1")
    check_now()  # TRUNCATE refuses to run while deferred checks are pending
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)
    assert LedgerEntry.objects.for_landlord(books.landlord).count() == 2


@pytest.mark.django_db
def test_orm_updates_and_deletes_are_refused_by_the_database(books):
    post_charge(books, 100, key="c1")
    entries = LedgerEntry.objects.for_landlord(books.landlord)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        entries.update(amount_minor=5)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        entries.delete()
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerTransaction.objects.for_landlord(books.landlord).update(description="x")


@pytest.mark.django_db
def test_saving_or_deleting_a_loaded_row_is_refused_before_reaching_the_database(books):
    txn = post_charge(books, 100, key="c1")
    entry = txn.entries.first()
    entry.amount_minor = 5
    with pytest.raises(TypeError, match="append-only"):
        entry.save()
    with pytest.raises(TypeError, match="append-only"):
        txn.delete()


@pytest.mark.django_db(transaction=True)
def test_a_full_reset_of_all_ledger_tables_is_allowed(books):
    """Django's flush (TransactionTestCase teardown) truncates every table in one statement."""
    post_charge(books, 100, key="c1")
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE ledger_ledgerentry, ledger_ledgertransaction, ledger_ledgerhead,"
            " ledger_account"
        )
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db
def test_an_entry_of_a_transaction_that_does_not_exist_fails_the_commit_checks(books):
    """Entries have no FK to their transaction: the commit check stands in for it."""
    txn = post_charge(books, 100, key="c1")
    check_now()
    with pytest.raises(IntegrityError, match="does not exist"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger_ledgerentry (transaction_id, landlord_id, account_id,"
                " amount_minor, currency, document_kind) VALUES (%s, %s, %s, 5, 'EUR', '')",
                [txn.pk + 1_000_000, books.landlord.pk, books.bank.pk],
            )
        check_now()


@pytest.mark.django_db
def test_an_entry_on_an_account_that_does_not_exist_fails_the_commit_checks(books):
    txn = insert_raw_transaction(books.landlord, [(books.receivable, 100), (books.bank, -100)])
    check_now()
    with pytest.raises(IntegrityError, match="another landlord"), transaction.atomic():
        for account_id, amount in ((books.bank.pk, 7), (books.bank.pk + 1_000_000, -7)):
            LedgerEntry.objects.create(
                transaction=txn,
                landlord=books.landlord,
                account_id=account_id,
                amount_minor=amount,
                currency="EUR",
            )
        check_now()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM ledger_account WHERE id = %s",
        "UPDATE ledger_account SET currency = 'USD' WHERE id = %s",
        "UPDATE ledger_account SET id = id + 1000000 WHERE id = %s",
    ],
)
def test_an_account_cannot_be_deleted_or_rekeyed(books, sql):
    with (
        pytest.raises(IntegrityError, match="ledger_account"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, [books.bank.pk])
