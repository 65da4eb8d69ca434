"""An invitation's tenant must be the invitation's landlord's, enforced by PostgreSQL
(`billing_site.db_references` row checks, docs/decisions/0015-same-landlord-everywhere.md).
"""

from django.db import migrations

from billing_site.db_references import (
    RowReference,
    existing_rows_check_sql,
    rows_forward_sql,
    rows_reverse_sql,
)

REFERENCES = [
    RowReference("invitation_tenant_ref", "portal_tenantinvitation", "tenant_id", "tenants_tenant"),
]
FIXED = ["portal_tenantinvitation"]


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0001_initial"),
        ("tenants", "0003_same_landlord_rows"),
    ]

    operations = [
        migrations.RunSQL(existing_rows_check_sql(REFERENCES), migrations.RunSQL.noop),
        migrations.RunSQL(rows_forward_sql(REFERENCES, FIXED), rows_reverse_sql(REFERENCES, FIXED)),
    ]
