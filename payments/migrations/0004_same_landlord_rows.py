"""Every reference between payments rows and to tenants, invoices and ledger transactions
must name the row's own landlord's row, enforced by PostgreSQL with row checks
(`billing_site.db_references`, docs/decisions/0015-same-landlord-everywhere.md); rows
never move between landlords. The links to ledger transactions have no FK (see
payments/models.py): the check also requires the transaction to exist.
"""

from django.db import migrations

from billing_site.db_references import (
    RowReference,
    existing_rows_check_sql,
    rows_forward_sql,
    rows_reverse_sql,
)

_TXN = "ledger_ledgertransaction"

REFERENCES = [
    RowReference("stripe_customer_tenant_ref", "payments_stripecustomer", "tenant_id", "tenants_tenant"),
    RowReference(
        "saved_method_tenant_ref", "payments_savedpaymentmethod", "tenant_id", "tenants_tenant"
    ),
    RowReference("payment_tenant_ref", "payments_payment", "tenant_id", "tenants_tenant"),
    RowReference("payment_invoice_ref", "payments_payment", "invoice_id", "invoices_invoice"),
    RowReference("payment_posting_ref", "payments_payment", "posting_id", _TXN),
    RowReference("payment_fee_posting_ref", "payments_payment", "fee_posting_id", _TXN),
    RowReference("payment_reversal_ref", "payments_payment", "reversal_id", _TXN),
    RowReference(
        "allocation_payment_ref", "payments_paymentallocation", "payment_id", "payments_payment"
    ),
    RowReference(
        "allocation_invoice_ref", "payments_paymentallocation", "invoice_id", "invoices_invoice"
    ),
    RowReference("refund_payment_ref", "payments_refund", "payment_id", "payments_payment"),
    RowReference("refund_posting_ref", "payments_refund", "posting_id", _TXN),
    RowReference("refund_reversal_ref", "payments_refund", "reversal_id", _TXN),
    RowReference("dispute_payment_ref", "payments_dispute", "payment_id", "payments_payment"),
    RowReference("dispute_hold_ref", "payments_dispute", "hold_id", _TXN),
    RowReference("dispute_release_ref", "payments_dispute", "release_id", _TXN),
    RowReference("payout_posting_ref", "payments_payout", "posting_id", _TXN),
    RowReference("payout_reversal_ref", "payments_payout", "reversal_id", _TXN),
    RowReference("payout_item_payout_ref", "payments_payoutitem", "payout_id", "payments_payout"),
    RowReference(
        "payout_item_payment_ref", "payments_payoutitem", "payment_id", "payments_payment"
    ),
]
FIXED = [
    "payments_stripeconnection",
    "payments_paymentsettings",
    "payments_stripecustomer",
    "payments_savedpaymentmethod",
    "payments_payment",
    "payments_paymentallocation",
    "payments_refund",
    "payments_dispute",
    "payments_payout",
    "payments_payoutitem",
]


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0003_paymentsettings"),
        ("tenants", "0003_same_landlord_rows"),
        ("invoices", "0005_same_landlord_rows"),
        ("ledger", "0008_account_tenant_same_landlord"),
    ]

    operations = [
        migrations.RunSQL(existing_rows_check_sql(REFERENCES), migrations.RunSQL.noop),
        migrations.RunSQL(rows_forward_sql(REFERENCES, FIXED), rows_reverse_sql(REFERENCES, FIXED)),
    ]
