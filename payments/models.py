"""Payments: what tenants paid (by Stripe or recorded by staff), how each payment was
allocated to invoices, and what Stripe told us (webhook events, refunds, disputes,
payouts).

Money itself lives in the ledger. These rows hold the *documents* and their Stripe
state; each one that moved money points at its ledger transaction(s). Those links
have no database FK constraint (`db_constraint=False`): ledger rows are append-only,
so an id written here cannot dangle, and the ledger's tables stay resettable as a
unit without ours (the ledger sits below payments). A payment's status is the last
Stripe state we applied (or the staff action), never a balance.
See docs/decisions/0005-payments.md.
"""

from __future__ import annotations

from datetime import date, tzinfo

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from tenants.models import CURRENCY_SHAPE, CurrencyField, LandlordOwned, LandlordQuerySet


class Method(models.TextChoices):
    CARD = "card", _("Card")
    SEPA_DEBIT = "sepa_debit", _("SEPA Direct Debit")
    US_BANK_ACCOUNT = "us_bank_account", _("US bank account (ACH)")
    CASH = "cash", _("Cash")
    CHEQUE = "cheque", _("Cheque")
    BANK_TRANSFER = "bank_transfer", _("Bank transfer")


STRIPE_METHODS = (Method.CARD, Method.SEPA_DEBIT, Method.US_BANK_ACCOUNT)
MANUAL_METHODS = (Method.CASH, Method.CHEQUE, Method.BANK_TRANSFER)
# Bank debits sit in `processing` for days before they succeed or fail.
BANK_DEBIT_METHODS = (Method.SEPA_DEBIT, Method.US_BANK_ACCOUNT)


class Source(models.TextChoices):
    STRIPE = "stripe", _("Stripe")
    MANUAL = "manual", _("Recorded by staff")


class PaymentStatus(models.TextChoices):
    REQUIRES_PAYMENT = "requires_payment", _("Waiting for payment")
    PROCESSING = "processing", _("Processing")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    REFUNDED = "refunded", _("Refunded")
    PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
    DISPUTED = "disputed", _("Disputed")
    REVERSED = "reversed", _("Reversed")


# Statuses of a payment whose money arrived at some point (it was posted).
POSTED_STATUSES = (
    PaymentStatus.SUCCEEDED,
    PaymentStatus.REFUNDED,
    PaymentStatus.PARTIALLY_REFUNDED,
    PaymentStatus.DISPUTED,
    PaymentStatus.REVERSED,
)


class StripeConnection(LandlordOwned):
    """The landlord's connected Stripe account (Stripe Connect): money goes to it, and
    webhooks carrying its id in `account` belong to this landlord."""

    landlord = models.OneToOneField(
        "tenants.Landlord", on_delete=models.PROTECT, related_name="stripe_connection"
    )
    account_id = models.CharField(max_length=255, unique=True)
    charges_enabled = models.BooleanField(default=False)
    payouts_enabled = models.BooleanField(default=False)
    details_submitted = models.BooleanField(default=False)
    # `created` of the newest account.updated applied: an older snapshot is ignored.
    account_state_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(account_id__startswith="acct_"), name="stripeconnection_account_shape"
            ),
        ]

    def __str__(self) -> str:
        return self.account_id


class PaymentSettings(LandlordOwned):
    """How a landlord's tenants may pay online (one row per landlord; no row means
    the defaults below). Staff edit it on the payment settings page."""

    landlord = models.OneToOneField(
        "tenants.Landlord", on_delete=models.PROTECT, related_name="payment_settings"
    )
    allow_partial = models.BooleanField(
        default=True,
        verbose_name=_("Allow partial payments"),
        help_text=_(
            "Tenants may pay less than the open amount in the portal. Either way, paying "
            "more is allowed and kept as credit for the next invoice."
        ),
    )

    def __str__(self) -> str:
        return f"Payment settings of {self.landlord_id}"


class StripeCustomer(LandlordOwned):
    """The Stripe customer of one tenant (on the landlord's connected account)."""

    tenant = models.OneToOneField(
        "tenants.Tenant", on_delete=models.PROTECT, related_name="stripe_customer"
    )
    customer_id = models.CharField(max_length=255, unique=True)
    stripe_account_id = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(customer_id__startswith="cus_"), name="stripecustomer_id_shape"
            ),
        ]

    def __str__(self) -> str:
        return self.customer_id


class SavedPaymentMethod(LandlordOwned):
    """A tenant's payment method saved at Stripe (card or bank debit mandate); at most
    one of a tenant's live methods is used for autopay."""

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.PROTECT, related_name="saved_payment_methods"
    )
    stripe_payment_method_id = models.CharField(max_length=255, unique=True)
    method = models.CharField(max_length=20, choices=Method.choices)
    brand = models.CharField(max_length=40, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    autopay = models.BooleanField(default=False)
    detached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=Q(autopay=True, detached_at__isnull=True),
                name="savedpm_one_autopay_per_tenant",
            ),
            models.CheckConstraint(
                condition=Q(method__in=STRIPE_METHODS), name="savedpm_stripe_method"
            ),
            models.CheckConstraint(
                condition=Q(autopay=False) | Q(detached_at__isnull=True),
                name="savedpm_detached_not_autopay",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_method_display()} ····{self.last4}"


class Payment(LandlordOwned):
    """Money a tenant paid or tried to pay. Stripe payments start `requires_payment`
    and follow their PaymentIntent; manual ones are recorded `succeeded`. Posted once
    (ledger key `payment:<id>:post`), allocated to invoices by PaymentAllocation."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="payments")
    invoice = models.ForeignKey(
        "invoices.Invoice",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="targeted_payments",
        help_text=_("The invoice the tenant chose to pay (allocated first)."),
    )
    amount_minor = models.BigIntegerField()
    currency = CurrencyField()
    method = models.CharField(max_length=20, choices=Method.choices)
    source = models.CharField(max_length=8, choices=Source.choices)
    status = models.CharField(
        max_length=20, choices=PaymentStatus.choices, default=PaymentStatus.REQUIRES_PAYMENT
    )
    stripe_payment_intent_id = models.CharField(max_length=255, null=True, blank=True, unique=True)
    stripe_charge_id = models.CharField(max_length=255, blank=True)
    stripe_account_id = models.CharField(max_length=255, blank=True)
    # The saved method an off-session (autopay) charge used.
    stripe_payment_method_id = models.CharField(max_length=255, blank=True)
    # `created` of the newest Stripe event applied to the status, so an older
    # processing/failed snapshot never overwrites a newer one.
    stripe_state_at = models.DateTimeField(null=True, blank=True)
    failure_code = models.CharField(max_length=100, blank=True)
    decline_code = models.CharField(max_length=100, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    reference = models.CharField(max_length=200, blank=True)
    received_on = models.DateField(null=True, blank=True)
    fee_minor = models.BigIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    succeeded_at = models.DateTimeField(null=True, blank=True)
    posting = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    fee_posting = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    reversal = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    reversal_reason = models.CharField(max_length=300, blank=True)
    reversed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["landlord", "idempotency_key"], name="payment_unique_idempotency_key"
            ),
            models.UniqueConstraint(
                fields=["stripe_charge_id"],
                condition=~Q(stripe_charge_id=""),
                name="payment_unique_charge",
            ),
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(condition=CURRENCY_SHAPE, name="payment_currency_iso"),
            models.CheckConstraint(
                condition=Q(method__in=Method.values), name="payment_method_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=PaymentStatus.values), name="payment_status_valid"
            ),
            models.CheckConstraint(
                condition=(Q(source=Source.STRIPE) & Q(method__in=STRIPE_METHODS))
                | (
                    Q(source=Source.MANUAL)
                    & Q(method__in=MANUAL_METHODS)
                    & Q(stripe_payment_intent_id__isnull=True)
                ),
                name="payment_source_matches_method",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=POSTED_STATUSES)
                | (Q(succeeded_at__isnull=False) & Q(posting__isnull=False)),
                name="payment_posted_when_succeeded",
            ),
            models.CheckConstraint(
                condition=Q(fee_minor__isnull=True) | Q(fee_minor__gte=0),
                name="payment_fee_not_negative",
            ),
            models.CheckConstraint(condition=~Q(idempotency_key=""), name="payment_key_not_empty"),
        ]
        indexes = [
            models.Index(fields=["landlord", "-created_at"], name="payment_landlord_recent"),
            models.Index(fields=["tenant", "-created_at"], name="payment_tenant_recent"),
            models.Index(fields=["landlord", "status"], name="payment_landlord_status"),
        ]

    def __str__(self) -> str:
        return f"Payment {self.pk} {self.amount_minor} {self.currency} ({self.status})"

    @property
    def is_posted(self) -> bool:
        return self.posting_id is not None

    def received_date(self, tz: tzinfo) -> date | None:
        """The day the money arrived, as a day in `tz` (the landlord's: business days
        are theirs): the date staff entered for a manual payment (it may be days
        before they recorded it), else the day Stripe reported success. None while it
        has not arrived."""
        if self.received_on is not None:
            return self.received_on
        if self.succeeded_at is not None:
            return timezone.localtime(self.succeeded_at, tz).date()
        return None


class PaymentAllocation(LandlordOwned):
    """How much of a posted payment went to one invoice; `invoice` NULL is the part
    held as tenant credit (an overpayment). Written with the payment's posting."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="allocations")
    invoice = models.ForeignKey(
        "invoices.Invoice",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="payment_allocations",
    )
    amount_minor = models.BigIntegerField()
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["payment", "invoice"],
                nulls_distinct=False,
                name="allocation_unique_payment_invoice",
            ),
            models.CheckConstraint(
                condition=Q(amount_minor__gt=0), name="allocation_amount_positive"
            ),
        ]
        indexes = [models.Index(fields=["invoice"], name="allocation_invoice")]

    def __str__(self) -> str:
        target = f"invoice {self.invoice_id}" if self.invoice_id else "tenant credit"
        return f"{self.amount_minor} to {target}"


class EventStatus(models.TextChoices):
    RECEIVED = "received", _("Received")
    PROCESSED = "processed", _("Processed")
    FAILED = "failed", _("Failed")
    IGNORED = "ignored", _("Ignored (type not handled)")
    UNMATCHED = "unmatched", _("Unmatched (unknown account or object)")


class StripeEvent(LandlordOwned):
    """One Stripe event exactly as it arrived (raw body kept), unique by Stripe's id.

    Inserted by the webhook before anything else happens; processed later, and the
    outcome recorded here. `landlord` is resolved while processing (NULL until then,
    and for events that belong to nobody we know)."""

    landlord = models.ForeignKey(
        "tenants.Landlord", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    account = models.CharField(max_length=255, blank=True)
    livemode = models.BooleanField(default=False)
    api_version = models.CharField(max_length=40, blank=True)
    created = models.DateTimeField(help_text=_("When Stripe created the event"))
    payload = models.JSONField()
    raw_body = models.TextField()
    status = models.CharField(
        max_length=10, choices=EventStatus.choices, default=EventStatus.RECEIVED
    )
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)

    objects = LandlordQuerySet.as_manager()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=EventStatus.values), name="stripeevent_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="stripeevent_status_received"),
            models.Index(fields=["landlord", "-created_at"], name="stripeevent_landlord_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type} ({self.status})"


class RefundStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    REQUIRES_ACTION = "requires_action", _("Requires action")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")


REFUND_FINAL_STATUSES = (RefundStatus.FAILED, RefundStatus.CANCELED)


class Refund(LandlordOwned):
    """A Stripe refund of (part of) a payment. Posted once when Stripe reports it
    (key `refund:<id>`); reversed if Stripe later reports it failed or canceled."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    stripe_refund_id = models.CharField(max_length=255, unique=True)
    amount_minor = models.BigIntegerField()
    currency = CurrencyField()
    status = models.CharField(max_length=16, choices=RefundStatus.choices)
    reason = models.CharField(max_length=100, blank=True)
    posting = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    reversal = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="refund_amount_positive"),
            models.CheckConstraint(condition=CURRENCY_SHAPE, name="refund_currency_iso"),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_refund_id} {self.amount_minor} {self.currency}"


class DisputeStatus(models.TextChoices):
    WARNING_NEEDS_RESPONSE = "warning_needs_response", _("Inquiry: needs response")
    WARNING_UNDER_REVIEW = "warning_under_review", _("Inquiry: under review")
    WARNING_CLOSED = "warning_closed", _("Inquiry closed")
    NEEDS_RESPONSE = "needs_response", _("Needs response")
    UNDER_REVIEW = "under_review", _("Under review")
    WON = "won", _("Won")
    LOST = "lost", _("Lost")
    PREVENTED = "prevented", _("Prevented")


# Inquiries (warning_*) and prevented disputes take no money; chargebacks do.
DISPUTE_FUNDS_WITHDRAWN = (
    DisputeStatus.NEEDS_RESPONSE,
    DisputeStatus.UNDER_REVIEW,
    DisputeStatus.LOST,
)
DISPUTE_FINAL_STATUSES = (
    DisputeStatus.WON,
    DisputeStatus.LOST,
    DisputeStatus.WARNING_CLOSED,
    DisputeStatus.PREVENTED,
)


class Dispute(LandlordOwned):
    """A chargeback (or inquiry) on a payment's charge. While the money is withdrawn a
    hold posting puts the amount back on the tenant (key `dispute:<id>:hold`); a won
    dispute reverses the hold (`dispute:<id>:won`), a lost one keeps it for good."""

    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="disputes")
    stripe_dispute_id = models.CharField(max_length=255, unique=True)
    amount_minor = models.BigIntegerField()
    currency = CurrencyField()
    reason = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=24, choices=DisputeStatus.choices)
    hold = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    release = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="dispute_amount_positive"),
            models.CheckConstraint(condition=CURRENCY_SHAPE, name="dispute_currency_iso"),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_dispute_id} {self.status}"


class PayoutStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    IN_TRANSIT = "in_transit", _("In transit")
    PAID = "paid", _("Paid")
    FAILED = "failed", _("Failed")
    CANCELED = "canceled", _("Canceled")


PAYOUT_FINAL_STATUSES = (PayoutStatus.FAILED, PayoutStatus.CANCELED)


class Payout(LandlordOwned):
    """Stripe moving the landlord's balance to their bank. `paid` posts cash in transit
    → bank (key `payout:<id>:paid`); a failure after that reverses it."""

    stripe_payout_id = models.CharField(max_length=255, unique=True)
    amount_minor = models.BigIntegerField()
    currency = CurrencyField()
    status = models.CharField(max_length=12, choices=PayoutStatus.choices)
    arrival_date = models.DateField(null=True, blank=True)
    failure_code = models.CharField(max_length=100, blank=True)
    failure_message = models.CharField(max_length=500, blank=True)
    posting = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    reversal = models.ForeignKey(
        "ledger.LedgerTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_constraint=False,
    )
    items_reconciled = models.BooleanField(
        default=False, help_text=_("Its balance transactions were listed into PayoutItem rows.")
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="payout_amount_positive"),
            models.CheckConstraint(condition=CURRENCY_SHAPE, name="payout_currency_iso"),
        ]

    def __str__(self) -> str:
        return f"{self.stripe_payout_id} {self.amount_minor} {self.currency} ({self.status})"


class PayoutItem(LandlordOwned):
    """One balance transaction a payout settled (a charge, refund, dispute or fee),
    linked to our payment where we know it."""

    payout = models.ForeignKey(Payout, on_delete=models.CASCADE, related_name="items")
    balance_transaction_id = models.CharField(max_length=255)
    type = models.CharField(max_length=40)
    source_id = models.CharField(max_length=255, blank=True)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="payout_items"
    )
    amount_minor = models.BigIntegerField()
    fee_minor = models.BigIntegerField(default=0)
    net_minor = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["payout", "balance_transaction_id"], name="payoutitem_unique_txn"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.balance_transaction_id} {self.net_minor}"
