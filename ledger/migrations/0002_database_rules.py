"""The ledger's rules, enforced by PostgreSQL for every role and every code path.

1. Append-only: UPDATE and DELETE on entries and transactions raise. TRUNCATE is only
   accepted as a full reset that empties every ledger table in one statement (what
   Django's `flush` and TransactionTestCase do); a partial TRUNCATE raises.
2. At commit (DEFERRABLE INITIALLY DEFERRED constraint triggers): every transaction
   has at least two entries, balances per currency, books only on accounts of its own
   landlord in the account's currency, and continues its landlord's hash chain
   (seq 1 starts from the genesis hash, seq n from the hash of seq n-1).
   `SET CONSTRAINTS ALL IMMEDIATE` runs the pending checks early (tests use it).
"""

from django.db import migrations

GENESIS = "0" * 64

FORWARD = f"""
CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Correct a posting with a reversing transaction (ledger.services.transaction_reverse).';
END
$$;

CREATE TRIGGER ledger_entry_append_only
    BEFORE UPDATE OR DELETE ON ledger_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();
CREATE TRIGGER ledger_transaction_append_only
    BEFORE UPDATE OR DELETE ON ledger_ledgertransaction
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

-- AFTER TRUNCATE triggers of a multi-table TRUNCATE run after every listed table is
-- emptied, so a full reset passes and a partial one is rolled back.
CREATE FUNCTION ledger_reject_partial_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_ledgerentry)
       OR EXISTS (SELECT 1 FROM ledger_ledgertransaction)
       OR EXISTS (SELECT 1 FROM ledger_ledgerhead)
       OR EXISTS (SELECT 1 FROM ledger_account) THEN
        RAISE EXCEPTION '% is append-only: TRUNCATE is only allowed as a reset of all ledger tables at once', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_entry_no_partial_truncate
    AFTER TRUNCATE ON ledger_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_partial_truncate();
CREATE TRIGGER ledger_transaction_no_partial_truncate
    AFTER TRUNCATE ON ledger_ledgertransaction
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_partial_truncate();

-- One indexed query (entries by transaction_id) checks count, balance and accounts.
CREATE FUNCTION ledger_check_transaction(txn_id bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    txn_landlord bigint;
    entry_count bigint := 0;
    unbalanced record;
    foreign_currency text;
    r record;
BEGIN
    SELECT landlord_id INTO txn_landlord FROM ledger_ledgertransaction WHERE id = txn_id;
    FOR r IN
        SELECT e.currency, sum(e.amount_minor) AS total, count(*) AS n,
               bool_and(e.landlord_id = txn_landlord
                        AND a.landlord_id = txn_landlord
                        AND a.currency = e.currency) AS consistent
          FROM ledger_ledgerentry e
          JOIN ledger_account a ON a.id = e.account_id
         WHERE e.transaction_id = txn_id
         GROUP BY e.currency
    LOOP
        entry_count := entry_count + r.n;
        IF r.total <> 0 AND unbalanced IS NULL THEN
            unbalanced := r;
        END IF;
        IF NOT r.consistent THEN
            foreign_currency := r.currency;
        END IF;
    END LOOP;
    IF entry_count < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % entries; a posting needs at least two', txn_id, entry_count
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its % entries sum to % (must be 0)',
            txn_id, unbalanced.currency, unbalanced.total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF foreign_currency IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % has a % entry of another landlord or on an account in another currency',
            txn_id, foreign_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_account_consistent';
    END IF;
END
$$;

CREATE FUNCTION ledger_entry_check_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_transaction(NEW.transaction_id);
    RETURN NULL;
END
$$;

-- Per row (constraint triggers cannot be statement-level): also catches entries added
-- later to a transaction committed earlier.
CREATE CONSTRAINT TRIGGER ledger_entry_balanced
    AFTER INSERT ON ledger_ledgerentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_check_at_commit();

CREATE FUNCTION ledger_transaction_check_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A transaction with no entries fires no entry trigger: check it here.
    IF NOT EXISTS (SELECT 1 FROM ledger_ledgerentry WHERE transaction_id = NEW.id) THEN
        RAISE EXCEPTION 'ledger transaction % has 0 entries; a posting needs at least two', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF NEW.seq = 1 THEN
        IF NEW.prev_hash <> '{GENESIS}' THEN
            RAISE EXCEPTION 'ledger transaction % (landlord %, seq 1) must start from the genesis hash',
                NEW.id, NEW.landlord_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_chained';
        END IF;
    ELSIF NOT EXISTS (
        SELECT 1 FROM ledger_ledgertransaction
         WHERE landlord_id = NEW.landlord_id AND seq = NEW.seq - 1 AND hash = NEW.prev_hash
    ) THEN
        RAISE EXCEPTION 'ledger transaction % (landlord %, seq %) does not continue the hash chain: no seq % with hash %',
            NEW.id, NEW.landlord_id, NEW.seq, NEW.seq - 1, NEW.prev_hash
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_chained';
    END IF;
    IF NEW.reverses_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM ledger_ledgertransaction WHERE id = NEW.reverses_id AND landlord_id = NEW.landlord_id
    ) THEN
        RAISE EXCEPTION 'ledger transaction % reverses a transaction of another landlord', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_reverses_own';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_transaction_valid
    AFTER INSERT ON ledger_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_transaction_check_at_commit();
"""

REVERSE = """
DROP TRIGGER ledger_transaction_valid ON ledger_ledgertransaction;
DROP FUNCTION ledger_transaction_check_at_commit();
DROP TRIGGER ledger_entry_balanced ON ledger_ledgerentry;
DROP FUNCTION ledger_entry_check_at_commit();
DROP FUNCTION ledger_check_transaction(bigint);
DROP TRIGGER ledger_transaction_no_partial_truncate ON ledger_ledgertransaction;
DROP TRIGGER ledger_entry_no_partial_truncate ON ledger_ledgerentry;
DROP FUNCTION ledger_reject_partial_truncate();
DROP TRIGGER ledger_transaction_append_only ON ledger_ledgertransaction;
DROP TRIGGER ledger_entry_append_only ON ledger_ledgerentry;
DROP FUNCTION ledger_reject_change();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(FORWARD, REVERSE),
    ]
