"""A billing run's recorded issue names a lease of the run's own landlord, enforced by
PostgreSQL like the lease-tenant link (`billing_site.db_references.same_landlord_pair_sql`,
docs/decisions/0015-same-landlord-everywhere.md): the issue row has no landlord of its
own, so the check compares its run's and its lease's. Issues are written only for leases
skipped or failed, a few rows per run, so a row trigger costs the month end nothing.
"""

from django.db import migrations

from billing_site.db_references import (
    existing_pairs_check_sql,
    same_landlord_pair_drop_sql,
    same_landlord_pair_sql,
)

RUN_ISSUE = (
    "invoices_billingrunissue",
    "run_issue_lease_ref",
    ("run_id", "invoices_billingrun"),
    ("lease_id", "tenants_lease"),
)


class Migration(migrations.Migration):
    dependencies = [("invoices", "0005_same_landlord_rows")]

    operations = [
        migrations.RunSQL(existing_pairs_check_sql(*RUN_ISSUE), migrations.RunSQL.noop),
        migrations.RunSQL(
            same_landlord_pair_sql(*RUN_ISSUE), same_landlord_pair_drop_sql(RUN_ISSUE[0])
        ),
    ]
