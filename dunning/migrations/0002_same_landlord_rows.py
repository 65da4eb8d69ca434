"""A policy assignment's lease and policy, a tenant's dunning state, and a dunning step's
invoice, tenant, fee invoice and payment must all be the row's landlord's, enforced by
PostgreSQL (`billing_site.db_references` row checks,
docs/decisions/0015-same-landlord-everywhere.md); rows never move between landlords.
"""

from django.db import migrations

from billing_site.db_references import (
    RowReference,
    existing_rows_check_sql,
    rows_forward_sql,
    rows_reverse_sql,
)

REFERENCES = [
    RowReference(
        "policy_assignment_lease_ref", "dunning_dunningpolicyassignment", "lease_id", "tenants_lease"
    ),
    RowReference(
        "policy_assignment_policy_ref",
        "dunning_dunningpolicyassignment",
        "policy_id",
        "dunning_dunningpolicy",
    ),
    RowReference("tenant_dunning_tenant_ref", "dunning_tenantdunning", "tenant_id", "tenants_tenant"),
    RowReference("dunning_step_invoice_ref", "dunning_dunningstep", "invoice_id", "invoices_invoice"),
    RowReference("dunning_step_tenant_ref", "dunning_dunningstep", "tenant_id", "tenants_tenant"),
    RowReference(
        "dunning_step_fee_invoice_ref", "dunning_dunningstep", "fee_invoice_id", "invoices_invoice"
    ),
    RowReference(
        "dunning_step_payment_ref", "dunning_dunningstep", "payment_id", "payments_payment"
    ),
]
FIXED = [
    "dunning_dunningpolicy",
    "dunning_dunningpolicyassignment",
    "dunning_dunningtemplate",
    "dunning_tenantdunning",
    "dunning_dunningstep",
]


class Migration(migrations.Migration):
    dependencies = [
        ("dunning", "0001_initial"),
        ("tenants", "0003_same_landlord_rows"),
        ("invoices", "0005_same_landlord_rows"),
        ("payments", "0004_same_landlord_rows"),
    ]

    operations = [
        migrations.RunSQL(existing_rows_check_sql(REFERENCES), migrations.RunSQL.noop),
        migrations.RunSQL(rows_forward_sql(REFERENCES, FIXED), rows_reverse_sql(REFERENCES, FIXED)),
    ]
