"""The append-only double-entry ledger: the single source of truth for every balance.

Sign convention: `LedgerEntry.amount_minor` is signed, **debit positive, credit
negative**. Every transaction's entries sum to zero per currency. An account's
balance is the plain sum of its entries, so an asset (receivable, bank) normally has
a positive balance and a liability or income account (tenant credit, rent income)
a negative one. Per-tenant receivable positive = the tenant owes money.

PostgreSQL enforces the rules that matter (migrations 0002-0004): entries and
transactions cannot be updated or deleted, accounts cannot be deleted or re-keyed, and
at commit every transaction must have at least two entries that balance per currency,
on existing accounts of its landlord, and must continue its landlord's hash chain.
Higher-level documents (invoices, payments) are named by `document_kind` +
`document_id`; the ledger never imports the apps above it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from django.db.models.lookups import Exact
from django.utils.translation import gettext_lazy as _

from tenants.models import CURRENCY_SHAPE, CurrencyField, LandlordOwned, LandlordQuerySet

GENESIS_HASH = "0" * 64
HASH_SHAPE = r"^[0-9a-f]{64}$"


def hex64(field: str) -> Q:
    """`field` is 64 lowercase hex digits: HASH_SHAPE, in the form PostgreSQL checks
    fastest. The regex's `{64}` cost ~7 us per value (21 us per ledger transaction, over a
    tenth of the billing run's insert time); a length test plus a negated class ~2 us."""
    return Q(Exact(Length(field), 64)) & ~Q(**{f"{field}__regex": "[^0-9a-f]"})


class AccountKind(models.TextChoices):
    ASSET = "asset", _("Asset")
    LIABILITY = "liability", _("Liability")
    INCOME = "income", _("Income")
    EXPENSE = "expense", _("Expense")
    EQUITY = "equity", _("Equity")


class AccountCode:
    """The chart of accounts every landlord gets (accounts are created on first use)."""

    RECEIVABLE = "receivable"  # per tenant: what the tenant owes
    TENANT_CREDIT = "tenant_credit"  # per tenant: overpayments held for the tenant
    RENT_INCOME = "rent_income"
    INCOME_PREFIX = "income:"  # other charge kinds: "income:parking", "income:pet", ...
    LATE_FEE_INCOME = "late_fee_income"
    TAX_PAYABLE = "tax_payable"
    CASH_IN_TRANSIT = "cash_in_transit"  # paid by the tenant, not yet paid out to the bank
    BANK = "bank"
    PROCESSOR_FEES = "processor_fees"
    WRITE_OFF = "write_off"
    OPENING_BALANCE = "opening_balance"  # equity counterpart when importing old balances


ACCOUNT_KINDS: dict[str, str] = {
    AccountCode.RECEIVABLE: AccountKind.ASSET,
    AccountCode.TENANT_CREDIT: AccountKind.LIABILITY,
    AccountCode.RENT_INCOME: AccountKind.INCOME,
    AccountCode.LATE_FEE_INCOME: AccountKind.INCOME,
    AccountCode.TAX_PAYABLE: AccountKind.LIABILITY,
    AccountCode.CASH_IN_TRANSIT: AccountKind.ASSET,
    AccountCode.BANK: AccountKind.ASSET,
    AccountCode.PROCESSOR_FEES: AccountKind.EXPENSE,
    AccountCode.WRITE_OFF: AccountKind.EXPENSE,
    AccountCode.OPENING_BALANCE: AccountKind.EQUITY,
}

# Accounts that exist once per tenant; every other account is landlord-wide.
TENANT_ACCOUNT_CODES = frozenset({AccountCode.RECEIVABLE, AccountCode.TENANT_CREDIT})

ACCOUNT_CODE_SHAPE = r"^[a-z][a-z_]*(:[a-z0-9][a-z0-9_-]*)?$"


def account_kind_for(code: str) -> str | None:
    """The kind of a chart-of-accounts code, or None if the code is not in the chart."""
    if code in ACCOUNT_KINDS:
        return ACCOUNT_KINDS[code]
    suffix = code.removeprefix(AccountCode.INCOME_PREFIX)
    if suffix != code and suffix and ":" not in suffix:
        return AccountKind.INCOME
    return None


def income_account_code(charge_kind: str) -> str:
    """The income account for a `tenants.ChargeKind`: rent → "rent_income", parking → "income:parking"."""
    if charge_kind == "rent":
        return AccountCode.RENT_INCOME
    if charge_kind == "late_fee":
        return AccountCode.LATE_FEE_INCOME
    return f"{AccountCode.INCOME_PREFIX}{charge_kind}"


DOCUMENT_REF_CONSISTENT = Q(document_kind="", document_id__isnull=True) | (
    ~Q(document_kind="") & Q(document_id__isnull=False)
)


class Account(LandlordOwned):
    """One account of a landlord's chart, in one currency, optionally for one tenant.

    A balance is never stored here: it is the sum of the account's entries.
    """

    code = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=AccountKind.choices)
    currency = CurrencyField()
    # Checked per statement, and as the landlord's tenant (ledger migration 0008): a
    # billing chunk creates its new tenants' receivables in one INSERT.
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "code", "currency", "tenant"],
                nulls_distinct=False,
                name="ledger_account_unique",
            ),
            models.CheckConstraint(
                condition=Q(code__regex=ACCOUNT_CODE_SHAPE), name="ledger_account_code_shape"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=AccountKind.values), name="ledger_account_kind_valid"
            ),
            models.CheckConstraint(condition=CURRENCY_SHAPE, name="ledger_account_currency_iso"),
            models.CheckConstraint(
                condition=(Q(code__in=sorted(TENANT_ACCOUNT_CODES)) & Q(tenant__isnull=False))
                | (~Q(code__in=sorted(TENANT_ACCOUNT_CODES)) & Q(tenant__isnull=True)),
                name="ledger_account_tenant_iff_tenant_code",
            ),
        ]

    def __str__(self) -> str:
        suffix = f" · tenant {self.tenant_id}" if self.tenant_id else ""
        return f"{self.code} {self.currency}{suffix}"


class AppendOnlyModel(models.Model):
    """Rows that are written once. The database refuses UPDATE/DELETE too (migration 0002);
    this only turns the ORM's attempts into an early, readable error."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError(f"{type(self).__name__} rows are append-only; post a reversal instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} rows are append-only; post a reversal instead.")


class LedgerTransaction(AppendOnlyModel):
    """A balanced set of entries posted together, a link in its landlord's hash chain.

    `hash = sha256(prev_hash ":" seq ":" content_hash)` where `content_hash` is the
    sha256 of the canonical content (see `ledger.hashing`), computed in Python before
    the insert because the row can never be updated afterwards.
    """

    # Leading column of the unique (landlord, key) and (landlord, seq) indexes.
    # No FK constraint: checked set-based per statement (migration 0005).
    landlord = models.ForeignKey(
        "tenants.Landlord",
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    seq = models.BigIntegerField(
        help_text=_("Position in the landlord's chain, 1, 2, 3, ... without gaps")
    )
    idempotency_key = models.CharField(max_length=255)
    description = models.CharField(max_length=300, blank=True)
    effective_at = models.DateTimeField(help_text=_("When it happened for the business"))
    created_at = models.DateTimeField(auto_now_add=True)
    document_kind = models.CharField(max_length=32, blank=True, default="")
    document_id = models.BigIntegerField(null=True, blank=True)
    # Indexed by the `ledger_transaction_reversed_once` unique constraint.
    reverses = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="reversals",
        db_index=False,
    )
    content_hash = models.CharField(max_length=64)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = LandlordQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "idempotency_key"], name="ledger_transaction_unique_key"
            ),
            models.UniqueConstraint(
                fields=["landlord", "seq"], name="ledger_transaction_unique_seq"
            ),
            models.UniqueConstraint(
                fields=["reverses"],
                condition=Q(reverses__isnull=False),
                name="ledger_transaction_reversed_once",
            ),
            models.CheckConstraint(condition=Q(seq__gte=1), name="ledger_transaction_seq_positive"),
            models.CheckConstraint(
                condition=~Q(idempotency_key=""), name="ledger_transaction_key_not_empty"
            ),
            models.CheckConstraint(
                condition=hex64("hash") & hex64("prev_hash") & hex64("content_hash"),
                name="ledger_transaction_hash_shape",
            ),
            models.CheckConstraint(
                condition=DOCUMENT_REF_CONSISTENT, name="ledger_transaction_document_ref"
            ),
        ]
        indexes = [
            models.Index(
                fields=["landlord", "document_kind", "document_id"],
                condition=Q(document_id__isnull=False),
                name="ledger_txn_document_idx",
            ),
            # The commit check finds a transaction's predecessor by hash (migration 0003).
            models.Index(fields=["hash"], name="ledger_txn_hash_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.description or self.idempotency_key}"


class LedgerEntry(AppendOnlyModel):
    """One signed amount on one account: debit positive, credit negative, never zero."""

    # `transaction` and `account` have no FK constraint, to keep bulk posts fast (an FK
    # check is a per-row trigger and a row lock): the commit check (migration 0004)
    # requires every entry's transaction and account to exist and to be its landlord's,
    # transactions can never be deleted or updated (migration 0002) and accounts never
    # deleted nor re-keyed (migration 0004), so no entry can lose its parent later.
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries", db_constraint=False
    )
    # No FK constraint or index of its own, to keep bulk posts fast: the commit check
    # (migrations 0002-0004) requires it to equal the transaction's landlord, which has both.
    landlord = models.ForeignKey(
        "tenants.Landlord",
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        db_constraint=False,
    )
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="entries", db_constraint=False
    )
    amount_minor = models.BigIntegerField(help_text=_("Debit positive, credit negative"))
    currency = CurrencyField()
    # No FK constraints: checked set-based per statement, and to be the entry's
    # landlord's (migration 0005, billing_site.db_references).
    tenant = models.ForeignKey(
        "tenants.Tenant",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    lease = models.ForeignKey(
        "tenants.Lease",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    document_kind = models.CharField(max_length=32, blank=True, default="")
    document_id = models.BigIntegerField(null=True, blank=True)

    objects = LandlordQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(
                condition=~Q(amount_minor=0), name="ledger_entry_amount_not_zero"
            ),
            models.CheckConstraint(condition=CURRENCY_SHAPE, name="ledger_entry_currency_iso"),
            models.CheckConstraint(
                condition=DOCUMENT_REF_CONSISTENT, name="ledger_entry_document_ref"
            ),
        ]
        indexes = [
            models.Index(
                fields=["landlord", "document_kind", "document_id"],
                name="ledger_entry_document_idx",
            ),
        ]

    def __str__(self) -> str:
        side = "Dr" if self.amount_minor > 0 else "Cr"
        return f"{side} {abs(self.amount_minor)} {self.currency} on {self.account_id}"

    @property
    def credit_minor(self) -> int:
        """The credit as a positive amount (for Dr/Cr columns); negative for a debit."""
        return -self.amount_minor


class LedgerHead(models.Model):
    """The tip of one landlord's chain: last seq and hash.

    The one mutable ledger table, and only a cache: it is locked (`SELECT ... FOR
    UPDATE`) by every poster so one landlord's postings serialise and `seq` stays
    gapless. `ledger_verify` checks it against the last transaction.
    """

    landlord = models.OneToOneField(
        "tenants.Landlord", primary_key=True, on_delete=models.PROTECT, related_name="+"
    )
    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default=GENESIS_HASH)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(last_seq__gte=0), name="ledger_head_seq_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(last_hash__regex=HASH_SHAPE), name="ledger_head_hash_shape"
            ),
        ]

    def __str__(self) -> str:
        return f"head of landlord {self.landlord_id}: #{self.last_seq}"


class LedgerCheckKind(models.TextChoices):
    NIGHTLY = "nightly", _("Nightly")
    ON_DEMAND = "on_demand", _("On demand")


class LedgerCheck(LandlordOwned):
    """What a recomputation of a landlord's chain and trial balance found
    (`ledger.services.ledger_check_record`: nightly, or on demand from the Ledger page).

    Tamper evidence only protects if someone looks: this is what the Ledger page shows.
    A history, never rewritten: a later check does not erase an earlier failure. The
    nightly check happens once per landlord and local day (unique).
    """

    kind = models.CharField(max_length=10, choices=LedgerCheckKind.choices)
    day = models.DateField(help_text=_("The landlord's local day of the check"))
    checked_at = models.DateTimeField()
    ok = models.BooleanField()
    transactions_checked = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    last_hash = models.CharField(max_length=64)
    problem = models.CharField(max_length=500, blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "day"],
                condition=Q(kind=LedgerCheckKind.NIGHTLY),
                name="ledger_check_nightly_once_a_day",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=LedgerCheckKind.values), name="ledger_check_kind_valid"
            ),
            models.CheckConstraint(
                condition=Q(ok=True, problem="") | Q(ok=False) & ~Q(problem=""),
                name="ledger_check_problem_iff_not_ok",
            ),
        ]
        indexes = [models.Index(fields=["landlord", "-checked_at"], name="ledger_check_recent")]

    def __str__(self) -> str:
        return f"{self.kind} ledger check of landlord {self.landlord_id} at {self.checked_at}"
