import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction

from ledger.models import AccountCode, LedgerEntry, LedgerHead, LedgerTransaction
from ledger.selectors import document_balances, ledger_verify, tenant_balance
from ledger.services import (
    SMALL_POST,
    AccountKey,
    EntrySpec,
    TransactionSpec,
    account_get_or_create,
    accounts_get_or_create,
    transactions_post_bulk,
)
from tests.factories import TenantFactory
from tests.ledger.factories import WHEN, charge_spec, post_charge

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("other_books")]


def test_bulk_post_writes_a_verifiable_chain(books):
    created = transactions_post_bulk(
        landlord=books.landlord, specs=[charge_spec(books, i) for i in range(1, 51)]
    )

    assert [t.seq for t in created] == list(range(1, 51))
    assert all(t.pk for t in created)
    assert LedgerEntry.objects.for_landlord(books.landlord).count() == 100
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant) == {"EUR": 50_000}
    head = LedgerHead.objects.get(landlord=books.landlord)
    assert (head.last_seq, head.last_hash) == (50, created[-1].hash)
    assert ledger_verify(landlord=books.landlord).ok


def test_bulk_post_continues_the_chain_of_single_posts(books):
    post_charge(books, 100, key="single")
    created = transactions_post_bulk(landlord=books.landlord, specs=[charge_spec(books, 7)])
    assert created[0].seq == 2
    assert created[0].prev_hash == LedgerTransaction.objects.get(idempotency_key="single").hash
    transactions_post_bulk(landlord=books.landlord, specs=[charge_spec(books, 8)])
    assert ledger_verify(landlord=books.landlord).ok


def test_bulk_post_skips_keys_that_already_exist(books):
    transactions_post_bulk(landlord=books.landlord, specs=[charge_spec(books, i) for i in (1, 2)])

    created = transactions_post_bulk(
        landlord=books.landlord, specs=[charge_spec(books, i) for i in (1, 2, 3)]
    )

    assert [t.idempotency_key for t in created] == ["invoice-3"]
    assert created[0].seq == 3
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 3
    assert transactions_post_bulk(landlord=books.landlord, specs=[charge_spec(books, 1)]) == []


def test_bulk_post_refuses_a_known_key_with_different_content(books):
    transactions_post_bulk(landlord=books.landlord, specs=[charge_spec(books, 1)])
    with pytest.raises(ValidationError, match="already used for a different posting"):
        transactions_post_bulk(
            landlord=books.landlord, specs=[charge_spec(books, 1, amount=2), charge_spec(books, 2)]
        )
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 1


def test_bulk_post_refuses_a_key_twice_in_one_call(books):
    with pytest.raises(ValidationError, match="appears twice"):
        transactions_post_bulk(
            landlord=books.landlord, specs=[charge_spec(books, 1), charge_spec(books, 1)]
        )


def test_one_bad_spec_writes_nothing(books):
    bad = charge_spec(books, 2)
    bad = TransactionSpec(
        idempotency_key=bad.idempotency_key,
        effective_at=bad.effective_at,
        description="",
        entries=[*bad.entries, EntrySpec(books.bank, 1, "EUR")],
    )
    with pytest.raises(ValidationError, match="does not balance"):
        transactions_post_bulk(landlord=books.landlord, specs=[charge_spec(books, 1), bad])
    assert not LedgerTransaction.objects.for_landlord(books.landlord).exists()


def test_bulk_post_uses_a_constant_number_of_queries(books, django_assert_max_num_queries):
    post_charge(books, 1, key="creates-the-chain-head")
    tenants = TenantFactory.create_batch(3, landlord=books.landlord)
    specs = []
    for n in range(300):
        tenant = tenants[n % 3]
        specs.append(
            TransactionSpec(
                idempotency_key=f"k{n}",
                effective_at=WHEN,
                description="",
                entries=[
                    EntrySpec(books.bank, 5, "EUR", tenant_id=tenant.pk),
                    EntrySpec(books.rent_income, -5, "EUR"),
                ],
            )
        )
    # savepoint, head lock, existing keys, tenant scope, ids, 2 COPYs, head update, release
    with django_assert_max_num_queries(9):
        transactions_post_bulk(landlord=books.landlord, specs=specs)


def test_an_empty_bulk_post_does_nothing(books):
    assert transactions_post_bulk(landlord=books.landlord, specs=[]) == []


def test_accounts_are_fetched_or_created_in_bulk(landlord, django_assert_max_num_queries):
    tenants = TenantFactory.create_batch(20, landlord=landlord)
    keys = [AccountKey(AccountCode.RECEIVABLE, "EUR", t.pk) for t in tenants]
    existing = account_get_or_create(
        landlord=landlord, code=AccountCode.RECEIVABLE, currency="EUR", tenant=tenants[0]
    )

    with django_assert_max_num_queries(4):  # select, tenant scope, insert, select missing
        accounts = accounts_get_or_create(landlord=landlord, keys=keys)
    assert accounts[keys[0]].pk == existing.pk
    assert {a.tenant_id for a in accounts.values()} == {t.pk for t in tenants}

    with django_assert_max_num_queries(1):
        again = accounts_get_or_create(
            landlord=landlord, keys=[*keys, AccountKey(AccountCode.BANK, "EUR")][:-1]
        )
    assert {k: a.pk for k, a in again.items()} == {k: a.pk for k, a in accounts.items()}


def test_account_get_or_create_returns_the_same_account(landlord):
    first = account_get_or_create(landlord=landlord, code="income:parking", currency="EUR")
    again = account_get_or_create(landlord=landlord, code="income:parking", currency="EUR")
    assert first.pk == again.pk
    assert first.kind == "income"
    assert first.tenant_id is None


def test_a_landlord_wide_account_is_unique_even_without_a_tenant(landlord):
    """NULL tenant: the unique constraint is NULLS NOT DISTINCT."""
    account_get_or_create(landlord=landlord, code="bank", currency="EUR")
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_account (landlord_id, code, kind, currency, created_at, updated_at)"
            " VALUES (%s, 'bank', 'asset', 'EUR', now(), now()) ON CONFLICT DO NOTHING",
            [landlord.pk],
        )
        assert cursor.rowcount == 0


@pytest.mark.parametrize(
    ("code", "with_tenant", "message"),
    [
        ("receivable", False, "belongs to one tenant"),
        ("bank", True, "landlord-wide"),
        ("petty_cash", False, "not an account code"),
        ("income:", False, "not an account code"),
    ],
)
def test_accounts_outside_the_chart_are_refused(landlord, code, with_tenant, message):
    tenant = TenantFactory(landlord=landlord) if with_tenant else None
    with pytest.raises(ValidationError, match=message):
        account_get_or_create(landlord=landlord, code=code, currency="EUR", tenant=tenant)


def test_an_account_for_another_landlords_tenant_is_refused(landlord, other_books):
    with pytest.raises(ValidationError, match="No tenant"):
        account_get_or_create(
            landlord=landlord, code="receivable", currency="EUR", tenant=other_books.tenant
        )


def test_document_balances_follow_bulk_posted_invoices(books, other_books):
    transactions_post_bulk(landlord=books.landlord, specs=[charge_spec(books, i) for i in (1, 2)])
    assert document_balances(
        landlord=books.landlord, document_kind="invoice", document_ids=[1, 2]
    ) == {1: {"EUR": 1_000}, 2: {"EUR": 1_000}}


def _posting(books, n: int, amount: int = 1_000):
    from ledger.hashing import EntryContent
    from ledger.services import Posting

    cur, tenant_id = books.currency, books.tenant.pk
    return Posting(
        f"invoice:{n}:issue",
        WHEN,
        f"Invoice {n}",
        "invoice",
        n,
        [
            EntryContent("receivable", cur, tenant_id, amount, cur, tenant_id, None, "invoice", n),
            EntryContent("rent_income", cur, None, -amount, cur, tenant_id, None, "invoice", n),
        ],
    )


def test_posting_by_account_key_writes_the_same_chain_as_posting_by_account(books):
    from ledger.services import postings_post_bulk

    created = postings_post_bulk(
        landlord=books.landlord, postings=[_posting(books, i) for i in (1, 2, 3)]
    )

    assert created == 3
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant) == {"EUR": 3_000}
    assert ledger_verify(landlord=books.landlord).ok
    assert LedgerHead.objects.get(landlord=books.landlord).last_seq == 3


def test_posting_by_account_key_skips_existing_keys_and_refuses_changed_content(books):
    from ledger.services import postings_post_bulk

    postings_post_bulk(landlord=books.landlord, postings=[_posting(books, 1)])

    assert postings_post_bulk(landlord=books.landlord, postings=[_posting(books, 1)]) == 0
    with pytest.raises(ValidationError, match="already used for a different posting"):
        postings_post_bulk(landlord=books.landlord, postings=[_posting(books, 1, amount=5)])
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 1


def test_posting_by_account_key_refuses_an_unbalanced_posting_and_another_landlords_tenant(
    books, other_books
):
    from ledger.hashing import EntryContent
    from ledger.services import Posting, postings_post_bulk

    good = _posting(books, 1)
    unbalanced = good._replace(entries=[good.entries[0], good.entries[1]._replace(amount_minor=-1)])
    with pytest.raises(ValidationError, match="does not balance"):
        postings_post_bulk(landlord=books.landlord, postings=[unbalanced])
    theirs = other_books.tenant.pk
    foreign = Posting(
        "x",
        WHEN,
        "",
        "",
        None,
        [
            EntryContent("bank", "EUR", None, 5, "EUR", theirs, None, "", None),
            EntryContent("rent_income", "EUR", None, -5, "EUR", theirs, None, "", None),
        ],
    )
    with pytest.raises(ValidationError, match="No tenant"):
        postings_post_bulk(landlord=books.landlord, postings=[foreign])


def test_posting_for_several_landlords_at_once_keeps_each_chain_its_own(books, other_books):
    from ledger.services import postings_post_bulk, postings_post_bulk_many

    postings_post_bulk(landlord=other_books.landlord, postings=[_posting(other_books, 7)])
    theirs_before = LedgerHead.objects.get(landlord=other_books.landlord).last_seq
    created = postings_post_bulk_many(
        batches=[
            (other_books.landlord, [_posting(other_books, 7), _posting(other_books, 8)]),
            (books.landlord, [_posting(books, i) for i in (1, 2)]),
        ]
    )

    # The other landlord's 7 existed: skipped; each landlord's chain continues its own.
    assert created == 3
    assert LedgerHead.objects.get(landlord=books.landlord).last_seq == 2
    assert LedgerHead.objects.get(landlord=other_books.landlord).last_seq == theirs_before + 1
    for owner in (books, other_books):
        assert ledger_verify(landlord=owner.landlord).ok
    assert tenant_balance(landlord=books.landlord, tenant=books.tenant) == {"EUR": 2_000}


def test_a_refusal_for_one_landlord_writes_nothing_for_any(books, other_books):
    from ledger.services import postings_post_bulk_many

    # A posting of the first landlord naming the second one's tenant.
    foreign = _posting(other_books, 9)._replace(idempotency_key="stray")
    foreign = foreign._replace(
        entries=[
            foreign.entries[0]._replace(account_code="bank", account_tenant_id=None),
            foreign.entries[1],
        ]
    )
    before = LedgerTransaction.objects.count()
    with pytest.raises(ValidationError, match="No tenant"):
        postings_post_bulk_many(
            batches=[
                (other_books.landlord, [_posting(other_books, 1)]),
                (books.landlord, [_posting(books, 1), foreign]),
            ]
        )
    assert LedgerTransaction.objects.count() == before


def test_several_posts_under_one_lock_return_each_transaction_and_replay_as_one(books):
    from ledger.services import transaction_post, transactions_post

    first, second = transactions_post(
        landlord=books.landlord, specs=[charge_spec(books, 1), charge_spec(books, 2)]
    )
    assert (first.seq, second.seq) == (1, 2)
    assert second.prev_hash == first.hash
    # A replay returns the same transactions (with a new one beside them).
    again = transactions_post(
        landlord=books.landlord,
        specs=[charge_spec(books, 2), charge_spec(books, 1), charge_spec(books, 3)],
    )
    assert [t.pk for t in again[:2]] == [second.pk, first.pk]
    assert again[2].seq == 3
    # transaction_post goes the same way: one spec, the existing transaction.
    single = charge_spec(books, 1)
    assert (
        transaction_post(
            landlord=books.landlord,
            idempotency_key=single.idempotency_key,
            effective_at=single.effective_at,
            description=single.description,
            entries=single.entries,
            document_kind=single.document_kind,
            document_id=single.document_id,
        ).pk
        == first.pk
    )
    assert ledger_verify(landlord=books.landlord).ok


def test_several_posts_are_all_or_none(books):
    from ledger.services import transactions_post

    transactions_post(landlord=books.landlord, specs=[charge_spec(books, 1)])
    with pytest.raises(ValidationError):
        transactions_post(
            landlord=books.landlord,
            specs=[charge_spec(books, 2), charge_spec(books, 1, amount=5)],
        )
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 1
    with pytest.raises(ValidationError):
        transactions_post(
            landlord=books.landlord, specs=[charge_spec(books, 4), charge_spec(books, 4)]
        )
    assert transactions_post(landlord=books.landlord, specs=[]) == []
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 1


@pytest.mark.parametrize("count", [1, 3, SMALL_POST + 1])
def test_both_write_paths_return_what_they_stored(books, count):
    # Up to SMALL_POST transactions are one statement, more go through COPY: either
    # way the returned transactions are the stored rows, ids follow the chain order
    # and every entry names its own transaction.
    post_charge(books, 100, key="before")
    created = transactions_post_bulk(
        landlord=books.landlord, specs=[charge_spec(books, i) for i in range(1, count + 1)]
    )
    names = [f.attname for f in LedgerTransaction._meta.concrete_fields]
    stored = {t.pk: t for t in LedgerTransaction.objects.filter(pk__in=[t.pk for t in created])}
    assert [{n: getattr(t, n) for n in names} for t in created] == [
        {n: getattr(stored[t.pk], n) for n in names} for t in created
    ]
    assert [t.pk for t in created] == sorted(t.pk for t in created)
    assert [t.seq for t in created] == list(range(2, count + 2))
    for txn in created:
        entries = LedgerEntry.objects.filter(transaction=txn)
        assert sorted(e.amount_minor for e in entries) == [-1_000, 1_000]
    assert ledger_verify(landlord=books.landlord).ok


def test_keys_known_new_are_not_looked_up_but_the_unique_key_still_holds(books):
    from ledger.services import postings_post_bulk_many

    created = postings_post_bulk_many(
        batches=[(books.landlord, [_posting(books, 1), _posting(books, 2)])], keys_known_new=True
    )
    assert created == 2
    # A caller whose promise was wrong is refused by the constraint, not skipped, and
    # the ledger keeps what it had.
    with pytest.raises(IntegrityError), transaction.atomic():
        postings_post_bulk_many(
            batches=[(books.landlord, [_posting(books, 3), _posting(books, 1)])],
            keys_known_new=True,
        )
    assert LedgerTransaction.objects.for_landlord(books.landlord).count() == 2
    assert ledger_verify(landlord=books.landlord).ok
