"""An account's tenant must be the account's landlord's, enforced by PostgreSQL.

Accounts are created in bulk (a billing chunk's new tenants' receivables in one INSERT),
so the reference becomes a statement check like the entries' (decision 0009) rather than
a row trigger (docs/decisions/0015-same-landlord-everywhere.md). An account's landlord
never changes.
"""

import django.db.models.deletion
from django.db import migrations, models

from billing_site.db_references import (
    Reference,
    existing_rows_check_sql,
    forward_sql,
    landlord_fixed_drop_sql,
    landlord_fixed_sql,
    reverse_sql,
)

REFERENCES = [
    Reference("ledger_account_tenant_ref", "ledger_account", "tenant_id", "tenants_tenant"),
]
FIXED = ["ledger_account"]


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0007_ledger_check"),
        ("tenants", "0003_same_landlord_rows"),
    ]

    operations = [
        migrations.RunSQL(existing_rows_check_sql(REFERENCES), migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="account",
            name="tenant",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="tenants.tenant",
            ),
        ),
        migrations.RunSQL(
            forward_sql("ledger_accounts", REFERENCES), reverse_sql("ledger_accounts", REFERENCES)
        ),
        migrations.RunSQL(
            "".join(landlord_fixed_sql(table) for table in FIXED),
            "".join(landlord_fixed_drop_sql(table) for table in FIXED),
        ),
    ]
