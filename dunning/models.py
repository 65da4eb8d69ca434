"""Dunning: how a landlord chases unpaid rent, and the record of every step taken.

`DunningPolicy` + `DunningPolicyStep` say what should happen, relative to an invoice's
due date. `DunningStep` is what did happen: one row per (invoice, step key), unique,
inserted in the same transaction as the step's effects (notice in the outbox, late-fee
invoice and posting). However many beats, re-runs or killed workers there are, a step
acts at most once; a step that died before commit simply was not taken and is taken
by the next tick.
"""

from __future__ import annotations

from datetime import time

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from tenants.models import LandlordOwned


class Action(models.TextChoices):
    REMINDER = "reminder", _("Reminder before due")
    DUE_NOTICE = "due_notice", _("Due-day notice")
    OVERDUE_NOTICE = "overdue_notice", _("Overdue notice")
    LATE_FEE = "late_fee", _("Late fee")
    FINAL_NOTICE = "final_notice", _("Final notice")
    ESCALATE = "escalate", _("Escalate to the landlord")


# Steps the engine adds on its own (not in a policy's step list).
class EngineAction(models.TextChoices):
    AUTOPAY = "autopay", _("Autopay charge")
    RETRY = "retry", _("Payment retry")
    UPDATE_METHOD = "update_method", _("Ask to update the payment method")
    DAILY_FEE = "daily_fee", _("Daily late fee")


class Channels(models.TextChoices):
    EMAIL = "email", _("Email")
    SMS = "sms", _("SMS")
    BOTH = "both", _("Email and SMS")
    EMAIL_THEN_SMS = "email_then_sms", _("Email; SMS if the email bounces")
    NONE = "none", _("No message")


class FeeKind(models.TextChoices):
    NONE = "none", _("No late fee")
    FLAT = "flat", _("Flat amount")
    PERCENT = "percent", _("Percentage of the overdue rent")
    TIERED = "tiered", _("Tiered by overdue amount")


class DunningPolicy(LandlordOwned):
    """A landlord's dunning rules. Each landlord has one default policy (created with
    its first use); leases may be assigned another one of the same landlord.

    Money is in minor units of the invoice's currency: one policy is meant for one
    currency, which is how landlords operate (the dashboard shows amounts in the
    landlord's default currency)."""

    name = models.CharField(max_length=100)
    is_default = models.BooleanField(default=False)
    # Local sending window in the tenant's time zone, [start, end).
    send_window_start = models.TimeField(default=time(8, 0))
    send_window_end = models.TimeField(default=time(20, 0))
    fee_kind = models.CharField(max_length=8, choices=FeeKind.choices, default=FeeKind.NONE)
    fee_flat_minor = models.BigIntegerField(default=0)
    fee_percent_bp = models.PositiveIntegerField(default=0)
    # [[threshold_minor, fee_minor], ...] ascending: the highest threshold reached applies.
    fee_tiers = models.JSONField(default=list, blank=True)
    daily_fee_minor = models.BigIntegerField(default=0)
    daily_fee_cap_minor = models.BigIntegerField(default=0)
    min_overdue_minor = models.BigIntegerField(default=0)
    # The legal maximum of all late fees on one invoice (0 = no limit set).
    max_fee_minor = models.BigIntegerField(default=0)
    retry_days = ArrayField(models.PositiveSmallIntegerField(), default=list, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord"], condition=Q(is_default=True), name="dunningpolicy_one_default"
            ),
            models.UniqueConstraint(fields=["landlord", "name"], name="dunningpolicy_unique_name"),
            models.CheckConstraint(
                condition=Q(send_window_end__gt=models.F("send_window_start")),
                name="dunningpolicy_window_valid",
            ),
            models.CheckConstraint(
                condition=Q(fee_flat_minor__gte=0)
                & Q(daily_fee_minor__gte=0)
                & Q(daily_fee_cap_minor__gte=0)
                & Q(min_overdue_minor__gte=0)
                & Q(max_fee_minor__gte=0),
                name="dunningpolicy_amounts_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(fee_percent_bp__lte=10_000), name="dunningpolicy_percent_at_most_100"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class DunningPolicyStep(models.Model):
    policy = models.ForeignKey(DunningPolicy, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    offset_days = models.SmallIntegerField(help_text=_("Days relative to the due date"))
    action = models.CharField(max_length=16, choices=Action.choices)
    channels = models.CharField(max_length=16, choices=Channels.choices, default=Channels.EMAIL)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "position"], name="policystep_position"),
            models.UniqueConstraint(
                fields=["policy", "action", "offset_days"], name="policystep_unique_action_day"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.offset_days:+d}"

    @property
    def key(self) -> str:
        """The stable name of this step on an invoice: the unique claim key."""
        return f"{self.action}{self.offset_days:+d}"


class DunningPolicyAssignment(LandlordOwned):
    """A lease that follows another policy than its landlord's default."""

    lease = models.OneToOneField(
        "tenants.Lease", on_delete=models.CASCADE, related_name="dunning_assignment"
    )
    policy = models.ForeignKey(DunningPolicy, on_delete=models.PROTECT, related_name="+")

    def __str__(self) -> str:
        return f"{self.lease_id} → {self.policy_id}"


class DunningTemplate(LandlordOwned):
    """A landlord's wording for one message kind and language (else the built-in one)."""

    kind = models.CharField(max_length=20)
    language = models.CharField(max_length=8)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    sms = models.CharField(max_length=480)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "kind", "language"], name="dunningtemplate_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} ({self.language})"


class TenantDunning(LandlordOwned):
    """Per-tenant dunning state set by staff: paused (e.g. a payment plan) and the
    escalation flag raised by an "escalate" step."""

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="+")
    paused = models.BooleanField(default=False)
    pause_reason = models.CharField(max_length=300, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    escalation_note = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"Dunning of tenant {self.tenant_id}"


class StepStatus(models.TextChoices):
    PENDING = "pending", _("In progress")
    DONE = "done", _("Done")
    SKIPPED = "skipped", _("Skipped")
    FAILED = "failed", _("Failed")


class DunningStep(LandlordOwned):
    """What happened for one step on one invoice. Unique per (invoice, key): the claim.

    key: "<action><offset>" for policy steps ("late_fee+5"), "autopay#1", "retry#2",
    "update_method", "daily_fee@2026-12-09". `pending` only for payment attempts,
    whose Stripe call happens between the claim and the outcome."""

    invoice = models.ForeignKey("invoices.Invoice", on_delete=models.PROTECT, related_name="+")
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="+")
    key = models.CharField(max_length=40)
    action = models.CharField(max_length=16)
    channels = models.CharField(max_length=16, default=Channels.NONE)
    scheduled_on = models.DateField(help_text=_("The tenant's local day it was due"))
    status = models.CharField(max_length=8, choices=StepStatus.choices)
    detail = models.CharField(max_length=500, blank=True)
    fee_invoice = models.ForeignKey(
        "invoices.Invoice", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    payment = models.ForeignKey(
        "payments.Payment", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    attempt = models.PositiveSmallIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "key"], name="dunningstep_exactly_once"),
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in StepStatus]),
                name="dunningstep_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["landlord", "tenant", "created_at"]),
            models.Index(fields=["status", "updated_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.key} {self.status}"
