"""Set-based commit checks (same rules as 0002-0003), and two FK checks fewer per entry.

Before: two per-row deferred constraint triggers, one event per entry and one per
transaction (400 trigger calls for a billing chunk of 100 invoices), plus four FK checks
per entry. Now:

- Statement-level AFTER INSERT triggers (transition tables) on transactions and entries
  record, once per statement, the ids of the ledger transactions the statement touched:
  one row in `ledger_pendingcheck`, an UNLOGGED work table that is empty outside an
  open database transaction.
- That row's DEFERRABLE INITIALLY DEFERRED constraint trigger runs at COMMIT (or at
  `SET CONSTRAINTS ... IMMEDIATE`): it takes every pending row and checks all those
  ledger transactions with one query: ≥ 2 entries, balanced per currency, entries and
  accounts of the transaction's landlord in the entry's currency, the hash-chain link,
  a reversal of the same landlord. Same messages and constraint names as before.
  Entries added later to an old transaction queue it again, as before.
- Entries lose the FK constraints on `transaction_id` and `account_id`. Integrity still
  comes from PostgreSQL: every inserted entry's transaction and account must exist at
  commit (the check above), transactions can never be deleted (0002), and accounts can
  no longer be deleted or re-keyed (below); TRUNCATE of `ledger_account` alone is
  refused like that of the other ledger tables.

Measured on billing chunks: the commit checks and the entry FK checks cost ~90 us per
invoice before, ~15 us after (docs/decisions/0007-billing-run-performance.md).
"""

import django.db.models.deletion
from django.db import migrations, models

GENESIS = "0" * 64

FORWARD = f"""
DROP TRIGGER ledger_entry_balanced ON ledger_ledgerentry;
DROP TRIGGER ledger_transaction_valid ON ledger_ledgertransaction;
DROP FUNCTION ledger_entry_check_at_commit();
DROP FUNCTION ledger_transaction_check_at_commit();
DROP FUNCTION ledger_check_transaction(bigint);

-- Work queue of the commit checks: rows live only inside the database transaction that
-- wrote them (the deferred trigger deletes them), so UNLOGGED costs nothing on a crash.
CREATE UNLOGGED TABLE ledger_pendingcheck (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    txn_ids bigint[] NOT NULL
);

-- Every ledger transaction in `txn_ids` must exist, have at least two entries, balance
-- per currency, book only its own landlord's entries on its own landlord's accounts in
-- the entry's currency, continue its landlord's hash chain and reverse only its own
-- landlord's transactions. One query; the first failure raises.
--
-- Lookups are per id (nested loops over index probes, forced by the SET clauses): the
-- ledger tables are often planned with no or stale statistics (fresh installation,
-- TRUNCATE in tests and benchmarks), and a hash join or sequential scan picked then
-- would read a whole table at every commit. Without JIT: those settings inflate the cost
-- estimate past `jit_above_cost`, and compiling took 0.7 s for a 1 ms query. One plan
-- per session (planning with those settings takes milliseconds, the check itself ~2).
CREATE FUNCTION ledger_check_transactions(txn_ids bigint[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    bad record;
BEGIN
    SELECT x.id, t.id IS NOT NULL AS found, t.landlord_id, t.seq, t.prev_hash,
           coalesce(c.n, 0) AS n, c.unbalanced_currency, c.unbalanced_total,
           c.foreign_currency, l.linked, r.reverses_own
      INTO bad
      FROM unnest(txn_ids) AS x(id)
      LEFT JOIN LATERAL (
            SELECT t.id, t.landlord_id, t.seq, t.prev_hash, t.reverses_id
              FROM ledger_ledgertransaction t WHERE t.id = x.id
      ) t ON true
      LEFT JOIN LATERAL (
            SELECT sum(g.n) AS n,
                   (array_agg(g.currency ORDER BY g.currency) FILTER (WHERE g.total <> 0))[1]
                       AS unbalanced_currency,
                   (array_agg(g.total ORDER BY g.currency) FILTER (WHERE g.total <> 0))[1]
                       AS unbalanced_total,
                   min(g.currency) FILTER (WHERE g.consistent IS NOT TRUE) AS foreign_currency
              FROM (SELECT e.currency, sum(e.amount_minor) AS total, count(*) AS n,
                           -- coalesce: bool_and skips NULLs, and a missing account
                           -- (LEFT JOIN) makes the condition NULL.
                           bool_and(coalesce(e.landlord_id = t.landlord_id
                                             AND a.landlord_id = t.landlord_id
                                             AND a.currency = e.currency, false)) AS consistent
                      FROM ledger_ledgerentry e
                      LEFT JOIN ledger_account a ON a.id = e.account_id
                     WHERE e.transaction_id = x.id
                     GROUP BY e.currency) g
      ) c ON true
      LEFT JOIN LATERAL (
            SELECT CASE WHEN t.seq = 1 THEN t.prev_hash = '{GENESIS}'
                        ELSE EXISTS (SELECT 1 FROM ledger_ledgertransaction p
                                      WHERE p.hash = t.prev_hash
                                        AND p.landlord_id = t.landlord_id
                                        AND p.seq = t.seq - 1)
                   END AS linked
      ) l ON true
      LEFT JOIN LATERAL (
            SELECT t.reverses_id IS NULL OR EXISTS (
                       SELECT 1 FROM ledger_ledgertransaction o
                        WHERE o.id = t.reverses_id AND o.landlord_id = t.landlord_id
                   ) AS reverses_own
      ) r ON true
     WHERE t.id IS NULL OR coalesce(c.n, 0) < 2 OR c.unbalanced_currency IS NOT NULL
        OR c.foreign_currency IS NOT NULL OR l.linked IS NOT TRUE OR r.reverses_own IS NOT TRUE
     ORDER BY x.id
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF NOT bad.found THEN
        RAISE EXCEPTION 'ledger entries belong to ledger transaction %, which does not exist', bad.id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'ledger_entry_transaction_exists';
    END IF;
    IF bad.n < 2 THEN
        RAISE EXCEPTION 'ledger transaction % has % entries; a posting needs at least two', bad.id, bad.n
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF bad.unbalanced_currency IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % does not balance: its % entries sum to % (must be 0)',
            bad.id, bad.unbalanced_currency, bad.unbalanced_total
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF bad.foreign_currency IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % has a % entry of another landlord or on an account in another currency (or on no account)',
            bad.id, bad.foreign_currency
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_entry_account_consistent';
    END IF;
    IF bad.linked IS NOT TRUE THEN
        RAISE EXCEPTION 'ledger transaction % (landlord %, seq %) does not continue the hash chain: no seq % with hash %',
            bad.id, bad.landlord_id, bad.seq, bad.seq - 1, bad.prev_hash
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_chained';
    END IF;
    RAISE EXCEPTION 'ledger transaction % reverses a transaction of another landlord', bad.id
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_reverses_own';
END
$$;

-- The deferred events: one per INSERT statement. The first to fire takes every pending
-- row (all of them this database transaction's: the rows never outlive it) and checks
-- the union once; the others then find nothing left to do.
CREATE FUNCTION ledger_pending_check_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids bigint[];
BEGIN
    WITH taken AS (DELETE FROM ledger_pendingcheck RETURNING txn_ids)
    SELECT array_agg(DISTINCT id) INTO ids FROM taken, unnest(taken.txn_ids) AS id;
    IF ids IS NOT NULL THEN
        PERFORM ledger_check_transactions(ids);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_pending_check
    AFTER INSERT ON ledger_pendingcheck
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_pending_check_at_commit();

CREATE FUNCTION ledger_transaction_queue_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pendingcheck (txn_ids)
    SELECT array_agg(id) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_transaction_queue_check
    AFTER INSERT ON ledger_ledgertransaction
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_transaction_queue_check();

-- Also catches entries added later to a transaction committed earlier.
CREATE FUNCTION ledger_entry_queue_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger_pendingcheck (txn_ids)
    SELECT array_agg(DISTINCT transaction_id) FROM new_rows HAVING count(*) > 0;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_entry_queue_check
    AFTER INSERT ON ledger_ledgerentry
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_queue_check();

-- Accounts stand in for the entries' FK: never deleted, never re-keyed. (Nothing deletes
-- accounts; Django's PROTECT already kept tenants and landlords that have one.)
CREATE FUNCTION ledger_account_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'ledger_account rows cannot be deleted: entries may refer to them'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RAISE EXCEPTION 'ledger_account: id, landlord, code, currency and tenant cannot change'
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER ledger_account_no_delete
    BEFORE DELETE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_keep();
CREATE TRIGGER ledger_account_no_rekey
    BEFORE UPDATE ON ledger_account
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.landlord_id IS DISTINCT FROM NEW.landlord_id
          OR OLD.code IS DISTINCT FROM NEW.code OR OLD.currency IS DISTINCT FROM NEW.currency
          OR OLD.tenant_id IS DISTINCT FROM NEW.tenant_id)
    EXECUTE FUNCTION ledger_account_keep();
CREATE TRIGGER ledger_account_no_partial_truncate
    AFTER TRUNCATE ON ledger_account
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_partial_truncate();
"""

# The 0003 state.
REVERSE = f"""
DROP TRIGGER ledger_account_no_partial_truncate ON ledger_account;
DROP TRIGGER ledger_account_no_rekey ON ledger_account;
DROP TRIGGER ledger_account_no_delete ON ledger_account;
DROP FUNCTION ledger_account_keep();
DROP TRIGGER ledger_entry_queue_check ON ledger_ledgerentry;
DROP FUNCTION ledger_entry_queue_check();
DROP TRIGGER ledger_transaction_queue_check ON ledger_ledgertransaction;
DROP FUNCTION ledger_transaction_queue_check();
DROP TRIGGER ledger_pending_check ON ledger_pendingcheck;
DROP FUNCTION ledger_pending_check_at_commit();
DROP FUNCTION ledger_check_transactions(bigint[]);
DROP TABLE ledger_pendingcheck;

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
                        AND (SELECT a.landlord_id = txn_landlord AND a.currency = e.currency
                               FROM ledger_account a
                              WHERE a.id = e.account_id)) AS consistent
          FROM ledger_ledgerentry e
         WHERE e.transaction_id = txn_id
         GROUP BY e.currency
    LOOP
        entry_count := entry_count + r.n;
        IF r.total <> 0 AND unbalanced IS NULL THEN
            unbalanced := r;
        END IF;
        IF r.consistent IS NOT TRUE THEN
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
    IF EXISTS (SELECT 1 FROM ledger_ledgerentry
                WHERE transaction_id = NEW.transaction_id AND id > NEW.id) THEN
        RETURN NULL;
    END IF;
    PERFORM ledger_check_transaction(NEW.transaction_id);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_entry_balanced
    AFTER INSERT ON ledger_ledgerentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_check_at_commit();

CREATE FUNCTION ledger_transaction_check_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    prev_seq bigint := NEW.seq - 1;
    linked boolean := false;
    candidate record;
    reversed_landlord bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ledger_ledgerentry WHERE transaction_id = NEW.id) THEN
        RAISE EXCEPTION 'ledger transaction % has 0 entries; a posting needs at least two', NEW.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced';
    END IF;
    IF prev_seq = 0 THEN
        linked := NEW.prev_hash = '{GENESIS}';
    ELSE
        FOR candidate IN
            SELECT t.landlord_id, t.seq FROM ledger_ledgertransaction t WHERE t.hash = NEW.prev_hash
        LOOP
            linked := linked OR (candidate.landlord_id = NEW.landlord_id AND candidate.seq = prev_seq);
        END LOOP;
    END IF;
    IF NOT linked THEN
        RAISE EXCEPTION 'ledger transaction % (landlord %, seq %) does not continue the hash chain: no seq % with hash %',
            NEW.id, NEW.landlord_id, NEW.seq, prev_seq, NEW.prev_hash
            USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_chained';
    END IF;
    IF NEW.reverses_id IS NOT NULL THEN
        SELECT t.landlord_id INTO reversed_landlord FROM ledger_ledgertransaction t
         WHERE t.id = NEW.reverses_id;
        IF reversed_landlord IS DISTINCT FROM NEW.landlord_id THEN
            RAISE EXCEPTION 'ledger transaction % reverses a transaction of another landlord', NEW.id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_reverses_own';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER ledger_transaction_valid
    AFTER INSERT ON ledger_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_transaction_check_at_commit();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0003_fast_commit_checks"),
    ]

    operations = [
        migrations.RunSQL(FORWARD, REVERSE),
        migrations.AlterField(
            model_name="ledgerentry",
            name="account",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="entries",
                to="ledger.account",
            ),
        ),
        migrations.AlterField(
            model_name="ledgerentry",
            name="transaction",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="entries",
                to="ledger.ledgertransaction",
            ),
        ),
    ]
