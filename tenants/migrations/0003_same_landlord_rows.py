"""Rows never move between landlords, and a unit's property, a lease's unit and tenants
and a charge's lease belong to the row's own landlord, enforced by PostgreSQL
(`billing_site.db_references` row checks, docs/decisions/0015-same-landlord-everywhere.md).

The services already refuse another landlord's rows; this holds when a bug, a script or
a shell session does not go through them. Existing rows are checked first.
"""

from django.db import migrations

from billing_site.db_references import (
    LANDLORD_FIXED_FUNCTION_DROP_SQL,
    LANDLORD_FIXED_FUNCTION_SQL,
    RowReference,
    existing_pairs_check_sql,
    existing_rows_check_sql,
    rows_forward_sql,
    rows_reverse_sql,
    same_landlord_pair_drop_sql,
    same_landlord_pair_sql,
)

REFERENCES = [
    RowReference("unit_property_ref", "tenants_unit", "property_id", "tenants_property"),
    RowReference("lease_unit_ref", "tenants_lease", "unit_id", "tenants_unit"),
    RowReference("charge_lease_ref", "tenants_charge", "lease_id", "tenants_lease"),
]
FIXED = [
    "tenants_property",
    "tenants_unit",
    "tenants_tenant",
    "tenants_lease",
    "tenants_charge",
]
LEASE_TENANTS = (
    "tenants_lease_tenants",
    "lease_tenant_ref",
    ("lease_id", "tenants_lease"),
    ("tenant_id", "tenants_tenant"),
)

class Migration(migrations.Migration):
    dependencies = [("tenants", "0002_tenant_timezone_late_fee_kind")]

    operations = [
        migrations.RunSQL(
            existing_rows_check_sql(REFERENCES) + existing_pairs_check_sql(*LEASE_TENANTS),
            migrations.RunSQL.noop,
        ),
        migrations.RunSQL(LANDLORD_FIXED_FUNCTION_SQL, LANDLORD_FIXED_FUNCTION_DROP_SQL),
        migrations.RunSQL(rows_forward_sql(REFERENCES, FIXED), rows_reverse_sql(REFERENCES, FIXED)),
        migrations.RunSQL(
            same_landlord_pair_sql(*LEASE_TENANTS), same_landlord_pair_drop_sql(LEASE_TENANTS[0])
        ),
    ]
