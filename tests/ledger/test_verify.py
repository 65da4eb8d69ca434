import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from ledger.models import LedgerEntry, LedgerHead, LedgerTransaction
from ledger.selectors import ledger_verify
from ledger.services import transaction_reverse
from tests.ledger.factories import WHEN, post_charge, post_payment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("other_books")]


@pytest.fixture
def posted(books):
    post_charge(books, 1_000, key="c1", invoice_id=1)
    post_charge(books, 2_000, key="c2", invoice_id=2)
    charge = post_charge(books, 3_000, key="c3", invoice_id=3)
    post_payment(books, 500, key="p1", invoice_id=1)
    transaction_reverse(landlord=books.landlord, transaction=charge, reason="x", effective_at=WHEN)
    return books


def tamper(sql, *params, table="ledger_ledgerentry", trigger="ledger_entry_append_only"):
    with connection.cursor() as cursor:
        # ALTER TABLE refuses to run while deferred checks are pending.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")
        cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")


def txn(landlord, seq):
    return LedgerTransaction.objects.for_landlord(landlord).get(seq=seq)


def test_an_untouched_ledger_verifies(posted, other_books):
    result = ledger_verify(landlord=posted.landlord)

    assert result.ok, result
    assert result.transactions_checked == 5
    assert result.last_seq == 5
    assert result.last_hash == txn(posted.landlord, 5).hash
    assert ledger_verify(landlord=other_books.landlord).ok


def test_an_empty_ledger_verifies(landlord):
    assert ledger_verify(landlord=landlord).ok


def test_a_changed_amount_is_reported_at_its_transaction(posted):
    second = txn(posted.landlord, 2)
    entry = second.entries.order_by("pk").first()
    tamper("UPDATE ledger_ledgerentry SET amount_minor = amount_minor + 1 WHERE id = %s", entry.pk)

    result = ledger_verify(landlord=posted.landlord)

    assert not result.ok
    assert result.chain_break.seq == 2
    assert result.chain_break.transaction_id == second.pk
    assert "do not balance" in result.chain_break.reason
    assert result.unbalanced_currencies == {"EUR": 1}


def test_a_balanced_change_of_amounts_is_caught_by_the_hash(posted):
    second = txn(posted.landlord, 2)
    tamper(
        "UPDATE ledger_ledgerentry SET amount_minor = amount_minor * 2 WHERE transaction_id = %s",
        second.pk,
    )

    result = ledger_verify(landlord=posted.landlord)

    assert result.chain_break.seq == 2
    assert result.chain_break.reason == "content does not match its hash"
    assert result.chain_break.stored_hash == second.hash
    assert result.chain_break.expected_hash != second.hash
    assert result.unbalanced_currencies == {}


def test_a_changed_description_is_caught(posted):
    tamper(
        "UPDATE ledger_ledgertransaction SET description = 'nothing to see' WHERE id = %s",
        txn(posted.landlord, 4).pk,
        table="ledger_ledgertransaction",
        trigger="ledger_transaction_append_only",
    )
    assert ledger_verify(landlord=posted.landlord).chain_break.seq == 4


def test_a_removed_transaction_is_caught_as_a_gap(posted):
    removed = txn(posted.landlord, 3)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("ALTER TABLE ledger_ledgerentry DISABLE TRIGGER USER")
        cursor.execute("ALTER TABLE ledger_ledgertransaction DISABLE TRIGGER USER")
        cursor.execute(
            "DELETE FROM ledger_ledgerentry WHERE transaction_id IN (%s, %s)",
            [removed.pk, txn(posted.landlord, 5).pk],
        )
        cursor.execute(
            "DELETE FROM ledger_ledgertransaction WHERE id IN (%s, %s)",
            [removed.pk, txn(posted.landlord, 5).pk],
        )
        cursor.execute("ALTER TABLE ledger_ledgerentry ENABLE TRIGGER USER")
        cursor.execute("ALTER TABLE ledger_ledgertransaction ENABLE TRIGGER USER")

    result = ledger_verify(landlord=posted.landlord)

    assert result.chain_break.seq == 4
    assert "gap" in result.chain_break.reason


def test_a_head_that_disagrees_with_the_chain_is_caught(posted):
    LedgerHead.objects.filter(landlord=posted.landlord).update(last_seq=4)
    result = ledger_verify(landlord=posted.landlord)
    assert "chain head says seq 4" in result.chain_break.reason


def test_the_command_prints_ok_per_landlord(posted, other_books, capsys):
    call_command("ledger_verify")
    out = capsys.readouterr().out
    assert f"OK {posted.landlord.slug}: 5 transactions" in out
    assert f"OK {other_books.landlord.slug}: 3 transactions" in out


def test_the_command_reports_the_first_break_and_fails(posted, other_books, capsys):
    second = txn(posted.landlord, 2)
    tamper(
        "UPDATE ledger_ledgerentry SET amount_minor = -amount_minor WHERE transaction_id = %s",
        second.pk,
    )
    with pytest.raises(CommandError, match="failed for 1 landlord"):
        call_command("ledger_verify")
    out = capsys.readouterr().out
    assert f"BREAK {posted.landlord.slug}: seq 2, transaction {second.pk}" in out
    assert f"stored {second.hash}" in out
    assert f"OK {other_books.landlord.slug}" in out


def test_the_command_can_verify_one_landlord(posted, other_books, capsys):
    call_command("ledger_verify", "--landlord", other_books.landlord.slug)
    out = capsys.readouterr().out
    assert posted.landlord.slug not in out
    with pytest.raises(CommandError, match="No landlord"):
        call_command("ledger_verify", "--landlord", "nobody")


def test_verify_reads_in_chunks(posted, monkeypatch):
    monkeypatch.setattr("ledger.selectors.VERIFY_CHUNK", 2)
    assert ledger_verify(landlord=posted.landlord).transactions_checked == 5
    assert LedgerEntry.objects.for_landlord(posted.landlord).count() == 10


def test_a_posting_that_commits_during_a_check_is_left_for_the_next_one(posted, monkeypatch):
    from ledger import selectors

    real, calls = selectors._entries_by_transaction, []

    def posting_meanwhile(ids):
        if not calls:  # the chain grows while the check reads it
            calls.append(post_charge(posted, 700, key="c-meanwhile", invoice_id=9))
        return real(ids)

    monkeypatch.setattr(selectors, "_entries_by_transaction", posting_meanwhile)
    result = ledger_verify(landlord=posted.landlord)

    assert calls and result.ok, result
    assert (result.transactions_checked, result.last_seq) == (5, 5)
    assert LedgerHead.objects.get(landlord=posted.landlord).last_seq == 6
    monkeypatch.undo()
    assert ledger_verify(landlord=posted.landlord).transactions_checked == 6
