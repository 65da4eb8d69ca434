"""Set-based foreign keys: the SQL behind `db_constraint=False` on month-end tables.

A PostgreSQL FOREIGN KEY checks each inserted row on its own: one queued trigger event
and one lookup with a row lock per row and reference. The billing run writes 100,000
invoices with their lines, outbox rows and ledger entries at month end: about 1.6 million
such checks, measured at 12-13 ms of a 100-invoice chunk's ~31 ms of PostgreSQL time
(docs/decisions/0009-set-based-references.md). The references on those tables are
enforced here instead, by PostgreSQL still, once per statement:

- Child side: an AFTER INSERT and an AFTER UPDATE statement-level trigger (transition
  table `new_rows`) checks every distinct referenced parent in one indexed query per
  reference and raises `foreign_key_violation` naming the constraint when one is missing.
- References marked `same_landlord` also require the parent to be the child row's
  landlord's (tenant isolation held by the database too). They lock one row instead of
  every parent: the child rows' landlords, `FOR KEY SHARE`, before the check; deleting a
  landlord-owned parent locks the parent's landlord `FOR UPDATE` before looking for
  children. So an insert and a delete under one landlord serialise on one row whichever
  comes first, and each one's check, taken after the lock was granted (READ COMMITTED
  gives every statement of the trigger function a fresh snapshot), sees what the other
  committed. The billing chunk holds its landlord's row anyway; the 100 tenants and 100
  leases of a chunk are not locked (nor written: a row lock sets xmax, dirtying the page
  and writing WAL), which measured ~2.5 ms of its ~8 ms of reference checks.
- Other references (the landlord itself, an invoice line's invoice) lock the parent rows
  `FOR KEY SHARE`, as an FK does, in one statement.
- Parent side: deleting a referenced row, TRUNCATE of the parent alone, or changing the
  parent's id (or landlord, for same-landlord references) is refused, as an FK's NO ACTION
  would. Under REPEATABLE READ or SERIALIZABLE the check's snapshot would be the
  transaction's, blind to a concurrent insert, so there such a delete is refused outright,
  and inserts lock each same-landlord parent row as an FK does (a delete that committed
  after their snapshot is then a serialization failure).

Differences from a declared FK, all deliberate: checked at the end of each statement,
not deferred to COMMIT (every writer inserts parents first); no ON DELETE CASCADE (Django
collects cascades in Python and deletes children first, which this allows).

Used by migrations, which must keep producing the same SQL: change this module only by
adding to it.
"""

# ruff: noqa: S608 -- every name interpolated below is a constant of a migration,
# checked against _IDENTIFIER when the Reference is made.

from __future__ import annotations

import re
from dataclasses import dataclass

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Reference:
    """`child.column` references `parent.id`; the constraint is called `name`."""

    name: str
    child: str
    column: str
    parent: str
    same_landlord: bool = True

    def __post_init__(self) -> None:
        for name in (self.name, self.child, self.column, self.parent):
            if not _IDENTIFIER.match(name):
                raise ValueError(f"not a plain SQL identifier: {name!r}")


def _child_function(child: str) -> str:
    return f"{child}_refs_check"


_LANDLORDS = "tenants_landlord"


def _raise_missing(child: str, ref: Reference) -> str:
    detail = " || ' of landlord ' || bad_landlord" if ref.same_landlord else ""
    return f"""
        RAISE EXCEPTION 'insert or update on table "{child}" violates foreign key constraint "{ref.name}"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{ref.name}',
                  DETAIL = 'Key ({ref.column})=(' || bad_id || ') is not present in table "{ref.parent}"'{detail} || '.';"""


def child_check_sql(child: str, references: list[Reference]) -> str:
    """The trigger function and the two statement triggers that check `child`'s rows.

    At most three queries per statement, whatever the number of references (a trigger
    call's cost is mostly its queries, ~20 µs each even for one row): lock the landlords
    (which is also the landlord reference's check), lock other parents, then check every
    same-landlord reference in one query on a snapshot taken after the locks.
    """
    assert all(ref.child == child for ref in references)
    same = [ref for ref in references if ref.same_landlord]
    landlord_refs = [
        ref for ref in references if not ref.same_landlord and ref.parent == _LANDLORDS
    ]
    locked = [ref for ref in references if not ref.same_landlord and ref.parent != _LANDLORDS]
    assert len(landlord_refs) <= 1 and len(locked) <= 1, "one landlord and one other locked ref"
    steps = []
    if same or landlord_refs:
        # The landlords' key-share lock: the landlord reference's FK-style lock, and the
        # stand-in for the parent row locks of same-landlord references (module docstring).
        column = landlord_refs[0].column if landlord_refs else "landlord_id"
        check = ""
        if landlord_refs:
            check = f"""
    IF found_count < cardinality(ids) THEN
        SELECT w.id INTO bad_id FROM unnest(ids) AS w(id)
         WHERE NOT EXISTS (SELECT 1 FROM {_LANDLORDS} p WHERE p.id = w.id) LIMIT 1;{_raise_missing(child, landlord_refs[0])}
    END IF;"""
        steps.append(
            f"""
    ids := ARRAY(SELECT DISTINCT {column} FROM new_rows WHERE {column} IS NOT NULL);
    SELECT count(*) INTO found_count
      FROM (SELECT 1 FROM {_LANDLORDS} p WHERE p.id = ANY(ids) FOR KEY SHARE) locked;{check}"""
        )
    for ref in locked:
        steps.append(
            f"""
    -- {ref.name}: lock the parents as an FK would, in one statement; only if fewer
    -- were found than wanted, look for the missing one (by index, for the message).
    ids := ARRAY(SELECT DISTINCT {ref.column} FROM new_rows WHERE {ref.column} IS NOT NULL);
    SELECT count(*) INTO found_count
      FROM (SELECT 1 FROM {ref.parent} p WHERE p.id = ANY(ids) FOR KEY SHARE) locked;
    IF found_count < cardinality(ids) THEN
        SELECT w.id INTO bad_id FROM unnest(ids) AS w(id)
         WHERE NOT EXISTS (SELECT 1 FROM {ref.parent} p WHERE p.id = w.id) LIMIT 1;{_raise_missing(child, ref)}
    END IF;"""
        )
    if same:
        # Above READ COMMITTED the check's snapshot may predate a delete that committed
        # meanwhile: locking each parent row makes that a serialization failure, as an FK.
        row_locks = "".join(
            f"""
        PERFORM 1 FROM {ref.parent} p WHERE p.id = ANY(ARRAY(
            SELECT DISTINCT {ref.column} FROM new_rows WHERE {ref.column} IS NOT NULL))
            FOR KEY SHARE;"""
            for ref in same
        )
        probes = "\n      UNION ALL\n".join(
            f"""      (SELECT {n} AS ref, w.id, w.landlord_id
         FROM (SELECT DISTINCT {ref.column} AS id, landlord_id FROM new_rows
                WHERE {ref.column} IS NOT NULL) w
        WHERE NOT EXISTS (SELECT 1 FROM {ref.parent} p
                           WHERE p.id = w.id AND p.landlord_id = w.landlord_id)
        LIMIT 1)"""
            for n, ref in enumerate(same)
        )
        raises = "".join(
            f"""
    {"IF" if n == 0 else "ELSIF"} bad_ref = {n} THEN{_raise_missing(child, ref)}"""
            for n, ref in enumerate(same)
        )
        names = ", ".join(ref.name for ref in same)
        steps.append(
            f"""
    IF NOT read_committed THEN{row_locks}
    END IF;
    -- {names}: each parent exists and is the row's landlord's.
    SELECT x.ref, x.id, x.landlord_id INTO bad_ref, bad_id, bad_landlord FROM (
{probes}
    ) x LIMIT 1;{raises}
    END IF;"""
        )
    body = "".join(steps)
    fn = _child_function(child)
    return f"""
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET jit = off
AS $$
DECLARE
    bad_ref int;
    bad_id bigint;
    bad_landlord bigint;
    ids bigint[];
    found_count bigint;
    read_committed boolean := current_setting('transaction_isolation') = 'read committed';
BEGIN{body}
    RETURN NULL;
END
$$;

CREATE TRIGGER {child}_refs_insert
    AFTER INSERT ON {child}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
CREATE TRIGGER {child}_refs_update
    AFTER UPDATE ON {child}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
"""


def child_check_drop_sql(child: str) -> str:
    return f"""
DROP TRIGGER {child}_refs_update ON {child};
DROP TRIGGER {child}_refs_insert ON {child};
DROP FUNCTION {_child_function(child)}();
"""


def parent_guard_sql(tag: str, parent: str, references: list[Reference]) -> str:
    """Triggers on `parent` refusing what would orphan the rows of `references`.

    `tag` names this set (one per child app), so two apps can guard the same parent.
    """
    assert all(ref.parent == parent for ref in references)
    fn = f"{parent}_{tag}_guard"
    deletes = "".join(
        f"""
    IF EXISTS (SELECT 1 FROM old_rows o WHERE EXISTS (
                   SELECT 1 FROM {ref.child} c WHERE c.{ref.column} = o.id)) THEN
        RAISE EXCEPTION 'update or delete on table "{parent}" violates foreign key constraint "{ref.name}" on table "{ref.child}"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{ref.name}';
    END IF;"""
        for ref in references
    )
    landlord_lock = ""
    if any(ref.same_landlord for ref in references):
        # Waits for every writer holding the landlords' key-share lock (module docstring);
        # the checks below run on snapshots taken after it was granted.
        landlord_lock = f"""
    PERFORM 1 FROM {_LANDLORDS} l
      WHERE l.id = ANY(ARRAY(SELECT DISTINCT landlord_id FROM old_rows)) FOR UPDATE;"""
    truncates = " OR ".join(f"EXISTS (SELECT 1 FROM {ref.child})" for ref in references)
    names = ", ".join(ref.name for ref in references)
    rekey = "OLD.id IS DISTINCT FROM NEW.id"
    if any(ref.same_landlord for ref in references):
        rekey += " OR OLD.landlord_id IS DISTINCT FROM NEW.landlord_id"
    return f"""
CREATE FUNCTION {fn}_delete() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off
SET jit = off
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM old_rows) THEN
        RETURN NULL;
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'rows of "{parent}" can only be deleted at READ COMMITTED (references: {names})'
            USING ERRCODE = 'restrict_violation';
    END IF;{landlord_lock}{deletes}
    RETURN NULL;
END
$$;

CREATE FUNCTION {fn}_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- AFTER TRUNCATE of a multi-table TRUNCATE runs once all listed tables are empty.
        IF {truncates} THEN
            RAISE EXCEPTION 'cannot truncate "{parent}" alone: rows still reference it ({names})'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '"{parent}": id and landlord never change: rows of other tables may reference them ({names})'
        USING ERRCODE = 'foreign_key_violation';
END
$$;

CREATE TRIGGER {fn}_delete
    AFTER DELETE ON {parent}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}_delete();
CREATE TRIGGER {fn}_rekey
    BEFORE UPDATE ON {parent}
    FOR EACH ROW WHEN ({rekey})
    EXECUTE FUNCTION {fn}_change();
CREATE TRIGGER {fn}_truncate
    AFTER TRUNCATE ON {parent}
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}_change();
"""


def parent_guard_drop_sql(tag: str, parent: str) -> str:
    fn = f"{parent}_{tag}_guard"
    return f"""
DROP TRIGGER {fn}_truncate ON {parent};
DROP TRIGGER {fn}_rekey ON {parent};
DROP TRIGGER {fn}_delete ON {parent};
DROP FUNCTION {fn}_change();
DROP FUNCTION {fn}_delete();
"""


def forward_sql(tag: str, references: list[Reference]) -> str:
    """Every child check and parent guard for `references` (one app's)."""
    out = []
    for child in dict.fromkeys(ref.child for ref in references):
        out.append(child_check_sql(child, [r for r in references if r.child == child]))
    for parent in dict.fromkeys(ref.parent for ref in references):
        out.append(parent_guard_sql(tag, parent, [r for r in references if r.parent == parent]))
    return "".join(out)


def reverse_sql(tag: str, references: list[Reference]) -> str:
    out = []
    for parent in dict.fromkeys(ref.parent for ref in references):
        out.append(parent_guard_drop_sql(tag, parent))
    for child in dict.fromkeys(ref.child for ref in references):
        out.append(child_check_drop_sql(child))
    return "".join(out)


# --- Row-level same-landlord checks -------------------------------------------------
#
# The tables written one row at a time (by staff, the tenant portal, webhooks and the
# dunning tick) keep their declared FOREIGN KEYs: existence and NO ACTION deletes stay
# PostgreSQL's own. What an FK cannot say is that the parent belongs to the row's
# landlord; a BEFORE ROW trigger adds that, one primary-key lookup per reference
# (~10 µs: a statement trigger costs ~90 µs for a single row, decision 0015).
#
# The check reads the parent's landlord once, without a lock. That is sound because a
# row's landlord never changes (`landlord_fixed_sql` on every table involved, parents
# and children) and a parent cannot disappear under the child: the declared FK, or for
# the links to append-only ledger transactions the ledger's own rule, sees to that.
# The parent must already exist when the child is written (parents first, as for the
# set-based checks above): a row written before its parent under a deferred FK could
# otherwise slip past the landlord check.


def _plain_identifiers(*names: str) -> None:
    for name in names:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")


@dataclass(frozen=True)
class RowReference:
    """`child.column` names a row of `parent` that must belong to the child row's
    landlord; the check raises as constraint `name`."""

    name: str
    child: str
    column: str
    parent: str

    def __post_init__(self) -> None:
        _plain_identifiers(self.name, self.child, self.column, self.parent)


def same_landlord_row_sql(child: str, references: list[RowReference]) -> str:
    """A BEFORE INSERT/UPDATE row trigger on `child` checking every reference's landlord.

    One query per row however many references (a query from PL/pgSQL costs ~15-20 µs,
    an index probe inside one ~2 µs). It runs only when a reference is set (INSERT) or
    the landlord or a reference changes (UPDATE): the WHEN clause is evaluated without
    calling the function, so ordinary saves pay nothing. Not for tables the billing run
    COPYs into: a BEFORE ROW trigger turns off COPY's batched inserts (those use the
    statement checks above).
    """
    assert references and all(ref.child == child for ref in references)
    probes = "\n        UNION ALL ".join(
        f"SELECT {n}, NEW.{ref.column}::bigint,"
        f" (SELECT p.landlord_id FROM {ref.parent} p WHERE p.id = NEW.{ref.column})"
        for n, ref in enumerate(references)
    )
    raises = "".join(
        f"""
    {"IF" if n == 0 else "ELSIF"} bad_ref = {n} THEN
        RAISE EXCEPTION 'insert or update on table "{child}" violates foreign key constraint "{ref.name}"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{ref.name}',
                  DETAIL = 'Key ({ref.column})=(' || bad_id || ') '
                           || coalesce('belongs to landlord ' || bad_landlord || ', the row to landlord '
                                       || NEW.landlord_id, 'is not present in table "{ref.parent}"') || '.';"""
        for n, ref in enumerate(references)
    )
    present = " OR ".join(f"NEW.{ref.column} IS NOT NULL" for ref in references)
    changed = " OR ".join(
        ["OLD.landlord_id IS DISTINCT FROM NEW.landlord_id"]
        + [f"OLD.{ref.column} IS DISTINCT FROM NEW.{ref.column}" for ref in references]
    )
    fn = f"{child}_same_landlord"
    return f"""
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad_ref int;
    bad_id bigint;
    bad_landlord bigint;
BEGIN
    SELECT x.ref, x.id, x.landlord_id INTO bad_ref, bad_id, bad_landlord FROM (
        {probes}
    ) AS x(ref, id, landlord_id)
    WHERE x.id IS NOT NULL AND x.landlord_id IS DISTINCT FROM NEW.landlord_id
    LIMIT 1;{raises}
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER {fn}_insert
    BEFORE INSERT ON {child}
    FOR EACH ROW WHEN ({present})
    EXECUTE FUNCTION {fn}();
CREATE TRIGGER {fn}_update
    BEFORE UPDATE ON {child}
    FOR EACH ROW WHEN ({changed})
    EXECUTE FUNCTION {fn}();
"""


def same_landlord_row_drop_sql(child: str) -> str:
    fn = f"{child}_same_landlord"
    return f"""
DROP TRIGGER {fn}_update ON {child};
DROP TRIGGER {fn}_insert ON {child};
DROP FUNCTION {fn}();
"""


def same_landlord_pair_sql(
    table: str, name: str, left: tuple[str, str], right: tuple[str, str]
) -> str:
    """For a link table without a landlord of its own (a many-to-many's): the rows named
    by `left` = (column, parent table) and `right` must belong to one landlord."""
    (lcol, lparent), (rcol, rparent) = left, right
    _plain_identifiers(table, name, lcol, lparent, rcol, rparent)
    fn = f"{table}_same_landlord"
    return f"""
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    left_landlord bigint;
    right_landlord bigint;
BEGIN
    SELECT p.landlord_id INTO left_landlord FROM {lparent} p WHERE p.id = NEW.{lcol};
    SELECT p.landlord_id INTO right_landlord FROM {rparent} p WHERE p.id = NEW.{rcol};
    IF left_landlord IS NULL OR right_landlord IS NULL OR left_landlord <> right_landlord THEN
        RAISE EXCEPTION 'insert or update on table "{table}" violates foreign key constraint "{name}"'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{name}',
                  DETAIL = 'Key ({lcol}, {rcol})=(' || NEW.{lcol} || ', ' || NEW.{rcol}
                           || ') names rows of landlords ' || coalesce(left_landlord::text, 'none')
                           || ' and ' || coalesce(right_landlord::text, 'none') || '.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER {fn}_insert
    BEFORE INSERT ON {table}
    FOR EACH ROW EXECUTE FUNCTION {fn}();
CREATE TRIGGER {fn}_update
    BEFORE UPDATE ON {table}
    FOR EACH ROW WHEN (OLD.{lcol} IS DISTINCT FROM NEW.{lcol} OR OLD.{rcol} IS DISTINCT FROM NEW.{rcol})
    EXECUTE FUNCTION {fn}();
"""


def same_landlord_pair_drop_sql(table: str) -> str:
    return same_landlord_row_drop_sql(table)


LANDLORD_FIXED_FUNCTION_SQL = """
CREATE FUNCTION landlord_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'update on table "%" changes a row''s landlord (id %: % to %): rows never move between landlords',
        TG_TABLE_NAME, OLD.id, OLD.landlord_id, NEW.landlord_id
        USING ERRCODE = 'restrict_violation';
END
$$;
"""
LANDLORD_FIXED_FUNCTION_DROP_SQL = "DROP FUNCTION landlord_fixed();"


def landlord_fixed_sql(table: str) -> str:
    """Refuse any UPDATE that changes `table`'s landlord_id (function in tenants 0003)."""
    _plain_identifiers(table)
    return f"""
CREATE TRIGGER {table}_landlord_fixed
    BEFORE UPDATE ON {table}
    FOR EACH ROW WHEN (OLD.landlord_id IS DISTINCT FROM NEW.landlord_id)
    EXECUTE FUNCTION landlord_fixed();
"""


def landlord_fixed_drop_sql(table: str) -> str:
    return f"DROP TRIGGER {table}_landlord_fixed ON {table};"


def rows_forward_sql(references: list[RowReference], fixed: list[str]) -> str:
    """One app's row checks and the landlord-fixed guards of its own tables in `fixed`."""
    out = [landlord_fixed_sql(table) for table in fixed]
    for child in dict.fromkeys(ref.child for ref in references):
        out.append(same_landlord_row_sql(child, [r for r in references if r.child == child]))
    return "".join(out)


def rows_reverse_sql(references: list[RowReference], fixed: list[str]) -> str:
    out = [
        same_landlord_row_drop_sql(child) for child in dict.fromkeys(r.child for r in references)
    ]
    out += [landlord_fixed_drop_sql(table) for table in fixed]
    return "".join(out)


def existing_rows_check_sql(references: list[RowReference] | list[Reference]) -> str:
    """Run once by a migration adding row (or statement) checks: fail, naming the
    reference, if rows written before it already cross landlords (as adding an FK
    validates old rows)."""
    checks = "".join(
        f"""
    IF EXISTS (SELECT 1 FROM {ref.child} c LEFT JOIN {ref.parent} p ON p.id = c.{ref.column}
                WHERE c.{ref.column} IS NOT NULL
                  AND (p.id IS NULL OR p.landlord_id <> c.landlord_id)) THEN
        RAISE EXCEPTION 'existing rows of "{ref.child}" break "{ref.name}": fix them before migrating'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{ref.name}';
    END IF;"""
        for ref in references
    )
    return f"DO $$\nBEGIN{checks}\nEND\n$$;\n"


def existing_pairs_check_sql(
    table: str, name: str, left: tuple[str, str], right: tuple[str, str]
) -> str:
    """`existing_rows_check_sql` for a link table checked by `same_landlord_pair_sql`
    (same arguments): its two rows must already be one landlord's."""
    (lcol, lparent), (rcol, rparent) = left, right
    _plain_identifiers(table, name, lcol, lparent, rcol, rparent)
    return f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM {table} x
                 JOIN {lparent} l ON l.id = x.{lcol}
                 JOIN {rparent} r ON r.id = x.{rcol}
                WHERE l.landlord_id <> r.landlord_id) THEN
        RAISE EXCEPTION 'existing rows of "{table}" break "{name}": fix them before migrating'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = '{name}';
    END IF;
END
$$;
"""
