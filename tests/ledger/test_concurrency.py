"""Real concurrency: each thread has its own connection and commits for real."""

import threading

import pytest
from django.db import connection

from ledger.models import Account, AccountCode, LedgerTransaction
from ledger.selectors import ledger_verify, tenant_balance
from ledger.services import account_get_or_create, transactions_post_bulk
from tests.ledger.factories import charge_spec, post_charge

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("other_books")]


def run_in_threads(*targets):
    barrier = threading.Barrier(len(targets))
    errors = []

    def wrap(target):
        try:
            barrier.wait()
            target()
        except Exception as exc:  # reported to the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrap, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors


def test_concurrent_posters_of_one_landlord_keep_one_gapless_chain(books):
    def single_posts(name):
        def run():
            for i in range(20):
                post_charge(books, 100, key=f"{name}-{i}", invoice_id=i)

        return run

    def bulk_posts():
        for start in range(100, 180, 20):
            transactions_post_bulk(
                landlord=books.landlord,
                specs=[charge_spec(books, i) for i in range(start, start + 20)],
            )

    run_in_threads(single_posts("a"), single_posts("b"), bulk_posts)

    seqs = list(
        LedgerTransaction.objects.for_landlord(books.landlord)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert seqs == list(range(1, 121))
    assert ledger_verify(landlord=books.landlord).ok
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant) == {"EUR": 84_000}


def test_the_same_posting_from_two_threads_is_written_once(books):
    def post():
        for i in range(10):
            post_charge(books, 100, key=f"same-{i}", invoice_id=i)

    run_in_threads(post, post)

    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 10
    assert ledger_verify(landlord=books.landlord).ok


def test_concurrent_account_creation_yields_one_account(landlord):
    found = []

    def create():
        for currency in ("EUR", "USD", "GBP", "CHF"):
            found.append(
                account_get_or_create(
                    landlord=landlord, code=AccountCode.LATE_FEE_INCOME, currency=currency
                ).pk
            )

    run_in_threads(create, create, create)

    assert len(found) == 12
    assert len(set(found)) == 4
    assert Account.objects.for_landlord(landlord).count() == 4
