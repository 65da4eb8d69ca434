"""Metered lines written before 0009 record the reading they billed up to.

Without it every meter looks never billed (decision 0019): the next run would bill its
whole history since move-in again. A metered line's description is "<meter> (<previous>
→ <current>, ...)" (rules.utility_lines_from_readings, unchanged since it was written):
its reading is the meter's latest one of that value dated before the invoice's period
ended, on the unit of the invoice's lease.
"""

from django.db import migrations

BACKFILL_SQL = """
UPDATE invoices_invoiceline l SET meter_reading_id = found.reading_id
FROM (
    SELECT l2.id AS line_id, (
        SELECT r.id FROM invoices_meterreading r
        WHERE r.landlord_id = i.landlord_id AND r.unit_id = le.unit_id
          AND r.meter = p.parts[1] AND r.value = p.parts[2]::numeric
          AND r.reading_date < i.period_end
        ORDER BY r.reading_date DESC LIMIT 1
    ) AS reading_id
    FROM invoices_invoiceline l2
    JOIN invoices_invoice i ON i.id = l2.invoice_id
    JOIN tenants_lease le ON le.id = i.lease_id
    CROSS JOIN LATERAL (
        SELECT regexp_match(l2.description, '^(.*) \\([0-9.]+ → ([0-9.]+), ') AS parts
    ) p
    WHERE l2.kind = 'utility' AND l2.charge_id IS NULL AND l2.meter_reading_id IS NULL
      AND p.parts IS NOT NULL
) found
WHERE l.id = found.line_id AND found.reading_id IS NOT NULL
"""


class Migration(migrations.Migration):
    dependencies = [
        ("invoices", "0009_line_meter_reading"),
    ]

    operations = [
        migrations.RunSQL(BACKFILL_SQL, migrations.RunSQL.noop),
    ]
