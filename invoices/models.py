"""Invoices, their numbering, the monthly billing run and the notification outbox.

An invoice stores only its *document* lifecycle (draft → issued → void). Whether it
is paid, partially paid or overdue is derived from the ledger (invoices.selectors),
never stored, so it cannot disagree with the money.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from tenants.models import ChargeKind, CurrencyField, LandlordOwned, Lease, Tenant


class InvoiceSettings(LandlordOwned):
    """Per-landlord invoicing preferences (one row per landlord)."""

    number_prefix = models.CharField(max_length=10, default="INV")
    review_drafts = models.BooleanField(
        default=False,
        help_text=_("Stop billing runs at draft so totals can be reviewed before issuing."),
    )
    send_emails = models.BooleanField(default=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["landlord"], name="invoicesettings_one_per_landlord")
        ]

    def __str__(self) -> str:
        return f"Invoice settings of {self.landlord_id}"


class TaxRate(LandlordOwned):
    """Tax on a charge kind for one landlord, in basis points (1 900 = 19 %)."""

    kind = models.CharField(max_length=16, choices=ChargeKind.choices)
    rate_bp = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["landlord", "kind"], name="taxrate_unique_kind"),
            models.CheckConstraint(
                condition=Q(rate_bp__lte=10_000), name="taxrate_at_most_100_percent"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.rate_bp / 100:.2f} %"


class InvoiceNumberCounter(LandlordOwned):
    """The last number used in a (landlord, series, year).

    Numbers are allocated by locking this row inside the transaction that writes the
    invoices, so a rolled-back chunk gives its numbers back and the series stays
    gapless (a PostgreSQL sequence would not: FIELD-NOTES, invoice numbering law).
    """

    series = models.CharField(max_length=10)
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "series", "year"], name="counter_unique_series_year"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.series}-{self.year}: {self.last_number}"


class InvoiceState(models.TextChoices):
    DRAFT = "draft", _("Draft")
    ISSUED = "issued", _("Issued")
    VOID = "void", _("Void")


class InvoiceKind(models.TextChoices):
    RENT = "rent", _("Rent")
    LATE_FEE = "late_fee", _("Late fee")


class Invoice(LandlordOwned):
    # The references the billing run writes 100,000 times at month end have no FK
    # constraint of their own: PostgreSQL enforces them once per statement instead
    # (set-based, same landlord too; migration 0004, billing_site.db_references).
    # Indexes: the landlord's and the tenant's lead composite indexes below.
    landlord = models.ForeignKey(
        "tenants.Landlord",
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    lease = models.ForeignKey(
        Lease, on_delete=models.PROTECT, related_name="invoices", db_constraint=False
    )
    tenant = models.ForeignKey(
        Tenant,
        on_delete=models.PROTECT,
        related_name="invoices",
        help_text=_("Bill-to tenant: the receivable is theirs."),
        db_constraint=False,
        db_index=False,
    )
    billing_run = models.ForeignKey(
        "invoices.BillingRun",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="invoices",
        db_constraint=False,
    )
    kind = models.CharField(max_length=8, choices=InvoiceKind.choices, default=InvoiceKind.RENT)
    # A late-fee invoice names the rent invoice it charges for; a rent invoice that
    # names one replaces it (lease ended after billing). Issued invoices are never
    # edited, so a fee or a replacement is its own document, number and posting.
    # Checked per statement with the other references (invoices migration 0005).
    adjusts = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="adjustments",
        db_constraint=False,
        # Indexed below without its NULLs (`invoice_adjusts`): no index may hold the
        # NULL of every rent invoice, or the planner answers the billing run's
        # `adjusts_id IS NULL` probe by walking a month of invoices (decision 0017).
        db_index=False,
    )
    period_start = models.DateField()
    period_end = models.DateField()
    issue_date = models.DateField()
    due_date = models.DateField()
    currency = CurrencyField()
    # NULL while a draft: drafts take no number, so the issued series stays gapless.
    number = models.CharField(max_length=32, null=True, blank=True)  # noqa: DJ001
    state = models.CharField(max_length=8, choices=InvoiceState.choices, default=InvoiceState.DRAFT)
    subtotal_minor = models.BigIntegerField()
    tax_minor = models.BigIntegerField(default=0)
    total_minor = models.BigIntegerField()
    bill_to_name = models.CharField(max_length=400, help_text=_("Names on the lease when issued."))
    void_reason = models.CharField(max_length=300, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # The exactly-once key of the billing run: one invoice per lease and period.
            # A replacement (a rent invoice that `adjusts` the one it replaces, written
            # when the lease ended after billing, decision 0017) is outside it: the
            # original stays, void, and keeps the period billed for the run.
            models.UniqueConstraint(
                fields=["lease", "period_start"],
                condition=Q(kind="rent", adjusts__isnull=True),
                name="invoice_one_per_lease_period",
            ),
            # ... and an invoice is replaced at most once. Only replacements are in this
            # index: with every rent invoice's NULL in it, the planner took it for the
            # billing run's `adjusts_id IS NULL` probe and scanned the whole month.
            models.UniqueConstraint(
                fields=["adjusts"],
                condition=Q(kind="rent", adjusts__isnull=False),
                name="invoice_one_replacement",
            ),
            models.CheckConstraint(
                condition=Q(kind="rent") | Q(kind="late_fee", adjusts__isnull=False),
                name="invoice_fee_adjusts_rent",
            ),
            models.UniqueConstraint(fields=["landlord", "number"], name="invoice_unique_number"),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")), name="invoice_period_valid"
            ),
            models.CheckConstraint(
                condition=Q(due_date__gte=F("issue_date")), name="invoice_due_after_issue"
            ),
            models.CheckConstraint(
                condition=Q(total_minor=F("subtotal_minor") + F("tax_minor")),
                name="invoice_total_is_sum",
            ),
            models.CheckConstraint(
                condition=Q(state=InvoiceState.DRAFT) | Q(number__isnull=False),
                name="invoice_issued_has_number",
            ),
        ]
        indexes = [
            models.Index(
                fields=["adjusts"], condition=Q(adjusts__isnull=False), name="invoice_adjusts"
            ),
            models.Index(fields=["landlord", "-issue_date", "-id"]),
            models.Index(fields=["landlord", "period_start"]),
            models.Index(fields=["tenant", "issue_date"]),
        ]

    def __str__(self) -> str:
        return self.number or f"Draft {self.pk}"

    @property
    def period_last_day(self) -> date:
        """The last day the invoice covers: the period is stored half-open,
        `[period_start, period_end)`, but people read "1–30 November", as the PDF
        prints it."""
        return self.period_end - timedelta(days=1)


class InvoiceLine(models.Model):
    # Set-based reference check (see Invoice); indexed by `line_unique_position`.
    invoice = models.ForeignKey(
        Invoice,
        on_delete=models.CASCADE,
        related_name="lines",
        db_constraint=False,
        db_index=False,
    )
    position = models.PositiveSmallIntegerField()
    charge_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=16, choices=ChargeKind.choices)
    description = models.CharField(max_length=300)
    quantity = models.IntegerField(default=1)
    unit_amount_minor = models.BigIntegerField()
    amount_minor = models.BigIntegerField()
    tax_rate_bp = models.PositiveIntegerField(default=0)
    tax_minor = models.BigIntegerField(default=0)
    service_start = models.DateField(null=True, blank=True)
    service_end = models.DateField(null=True, blank=True)
    # A metered line: the reading its usage runs up to. The meter's next bill starts
    # at the latest reading a line that stands (not void) billed up to, so a reading
    # entered after its month was billed is billed next time, never lost. A plain id
    # like `charge_id`: no reference check on the billing run's hot table.
    meter_reading_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "position"], name="line_unique_position"),
        ]
        indexes = [
            models.Index(fields=["charge_id"]),
            # Only metered lines: an index holding every line's NULL would cost the
            # billing run's COPY for nothing (decision 0017's lesson).
            models.Index(
                fields=["meter_reading_id"],
                condition=Q(meter_reading_id__isnull=False),
                name="line_meter_reading",
            ),
        ]

    def __str__(self) -> str:
        return self.description


class BillingRunStatus(models.TextChoices):
    RUNNING = "running", _("Running")
    REVIEW = "review", _("Waiting for review")
    COMPLETED = "completed", _("Completed")


class BillingRun(LandlordOwned):
    """One landlord's billing of one month. Unique per (landlord, period), so a second
    start of the same month resumes the first run instead of billing again."""

    period_start = models.DateField()
    period_end = models.DateField()
    status = models.CharField(
        max_length=16, choices=BillingRunStatus.choices, default=BillingRunStatus.RUNNING
    )
    leases_due = models.PositiveIntegerField(default=0)
    invoices_created = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    started_by = models.CharField(
        max_length=200, blank=True, help_text=_("'schedule' or a staff email")
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "period_start"], name="billingrun_one_per_period"
            ),
        ]
        indexes = [models.Index(fields=["status", "updated_at"])]

    def __str__(self) -> str:
        return f"{self.landlord_id} {self.period_start:%Y-%m}"

    @property
    def processed(self) -> int:
        return self.invoices_created + self.skipped + self.failed

    @property
    def percent(self) -> int:
        return (
            100 if not self.leases_due else min(100, round(100 * self.processed / self.leases_due))
        )


class BillingIssueKind(models.TextChoices):
    SKIPPED = "skipped", _("Skipped")
    ERROR = "error", _("Error")


class BillingRunIssue(models.Model):
    """Why one lease was not invoiced in a run; the run goes on without it."""

    run = models.ForeignKey(BillingRun, on_delete=models.CASCADE, related_name="issues")
    lease = models.ForeignKey(Lease, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=8, choices=BillingIssueKind.choices)
    message = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "lease"], name="runissue_one_per_lease")
        ]

    def __str__(self) -> str:
        return self.message


class Channel(models.TextChoices):
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")


class NotificationStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    FAILED = "failed", _("Failed")
    BOUNCED = "bounced", _("Bounced")


class Notification(LandlordOwned):
    """Outbox row: one message to send. `dedupe_key` is unique, so however often the
    code that wants a message runs (a retried chunk, two dunning ticks), it is sent once."""

    dedupe_key = models.CharField(max_length=200)
    kind = models.CharField(max_length=40)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    # Set-based reference checks (see Invoice). Indexes: the landlord's leads
    # `notification_exactly_once`, the invoice's is in Meta.
    landlord = models.ForeignKey(
        "tenants.Landlord",
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
        db_index=False,
    )
    tenant = models.ForeignKey(
        Tenant, on_delete=models.PROTECT, related_name="notifications", db_constraint=False
    )
    invoice = models.ForeignKey(
        Invoice,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="notifications",
        db_constraint=False,
        db_index=False,
    )
    to_address = models.CharField(max_length=254, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    body = models.TextField(blank=True)
    status = models.CharField(
        max_length=8, choices=NotificationStatus.choices, default=NotificationStatus.QUEUED
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "dedupe_key"], name="notification_exactly_once"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            models.Index(fields=["invoice"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.channel} → {self.to_address}"


class MeterReading(LandlordOwned):
    """One reading of a unit's sub-meter (water, heat, ...) and the price per unit
    consumed since the previous reading; the billing run turns the usage into a line."""

    unit = models.ForeignKey("tenants.Unit", on_delete=models.PROTECT, related_name="+")
    meter = models.CharField(max_length=60, help_text=_("e.g. Cold water"))
    reading_date = models.DateField()
    value = models.DecimalField(max_digits=12, decimal_places=3)
    rate_minor_per_unit = models.DecimalField(
        max_digits=12, decimal_places=4, help_text=_("Minor units (cents) per unit consumed")
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["unit", "meter", "reading_date"], name="meterreading_one_per_day"
            ),
            models.CheckConstraint(condition=Q(value__gte=0), name="meterreading_value_gte_0"),
            models.CheckConstraint(
                condition=Q(rate_minor_per_unit__gte=0), name="meterreading_rate_gte_0"
            ),
        ]
        indexes = [models.Index(fields=["unit", "reading_date"])]

    def __str__(self) -> str:
        return f"{self.meter} {self.reading_date}: {self.value}"
