"""The billing run's exactly-once probe (`_without_invoice_or_issue`) names the partial
unique (lease, period) index's predicate, `kind = 'rent' AND adjusts_id IS NULL`. An
index holding every rent invoice's NULL `adjusts_id` would also answer that predicate,
and once PostgreSQL chose one (a month of dead or live invoices walked per lease) a
tick took seconds instead of milliseconds. So no index on `adjusts_id` holds NULLs, and
the probe is planned on the unique index."""

import json

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_no_index_on_adjusts_id_holds_the_nulls():
    with connection.cursor() as cursor:
        # Indexes with adjusts_id among their key columns.
        cursor.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'invoices_invoice'::regclass AND a.attname = 'adjusts_id'"
        )
        indexes = cursor.fetchall()
    assert indexes, "adjusts_id is indexed (late fees and replacements are looked up by it)"
    for name, definition in indexes:
        assert "adjusts_id IS NOT NULL" in definition, name


def test_the_probe_is_planned_on_the_unique_lease_period_index():
    probe = (
        "SELECT l.id FROM unnest(ARRAY[1, 2, 3]::bigint[]) AS l(id) CROSS JOIN LATERAL"
        " (SELECT FROM invoices_invoice i WHERE i.lease_id = l.id AND i.period_start = %s"
        " AND i.kind = 'rent' AND i.adjusts_id IS NULL LIMIT 1) AS invoiced"
    )
    with connection.cursor() as cursor:
        # Whatever the statistics say, an index is preferred over a scan here: which
        # one it takes is what this checks.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + probe, ["2026-12-01"])
        plan = json.dumps(cursor.fetchone()[0])
    assert "invoice_one_per_lease_period" in plan
