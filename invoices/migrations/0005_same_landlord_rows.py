"""A late-fee invoice's `adjusts` and a meter reading's unit must be the row's landlord's,
enforced by PostgreSQL (docs/decisions/0015-same-landlord-everywhere.md).

`adjusts` lives on the table the billing run COPYs into, so it joins the invoice's
statement check (0004) instead of getting a row trigger, which would turn off COPY's
batched inserts: the check is re-created with it. Meter readings get a row check.
"""

import django.db.models.deletion
from django.db import migrations, models

from billing_site.db_references import (
    Reference,
    RowReference,
    child_check_drop_sql,
    child_check_sql,
    existing_rows_check_sql,
    parent_guard_drop_sql,
    parent_guard_sql,
    rows_forward_sql,
    rows_reverse_sql,
)

# The invoice's references as migration 0004 made them.
INVOICE_REFERENCES = [
    Reference(
        "invoice_landlord_ref",
        "invoices_invoice",
        "landlord_id",
        "tenants_landlord",
        same_landlord=False,
    ),
    Reference("invoice_lease_ref", "invoices_invoice", "lease_id", "tenants_lease"),
    Reference("invoice_tenant_ref", "invoices_invoice", "tenant_id", "tenants_tenant"),
    Reference(
        "invoice_billing_run_ref", "invoices_invoice", "billing_run_id", "invoices_billingrun"
    ),
]
ADJUSTS = Reference("invoice_adjusts_ref", "invoices_invoice", "adjusts_id", "invoices_invoice")

ROW_REFERENCES = [
    RowReference("meter_reading_unit_ref", "invoices_meterreading", "unit_id", "tenants_unit"),
]
FIXED = ["invoices_meterreading", "invoices_invoice", "invoices_billingrun"]


class Migration(migrations.Migration):
    dependencies = [
        ("invoices", "0004_set_based_references"),
        ("tenants", "0003_same_landlord_rows"),
    ]

    operations = [
        migrations.RunSQL(
            existing_rows_check_sql([ADJUSTS]) + existing_rows_check_sql(ROW_REFERENCES),
            migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="invoice",
            name="adjusts",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="adjustments",
                to="invoices.invoice",
            ),
        ),
        migrations.RunSQL(
            child_check_drop_sql("invoices_invoice")
            + child_check_sql("invoices_invoice", [*INVOICE_REFERENCES, ADJUSTS])
            + parent_guard_sql("invoices_adjusts", "invoices_invoice", [ADJUSTS]),
            parent_guard_drop_sql("invoices_adjusts", "invoices_invoice")
            + child_check_drop_sql("invoices_invoice")
            + child_check_sql("invoices_invoice", INVOICE_REFERENCES),
        ),
        migrations.RunSQL(
            rows_forward_sql(ROW_REFERENCES, FIXED), rows_reverse_sql(ROW_REFERENCES, FIXED)
        ),
    ]
