"""Operator admin for payments. Stripe events are read-only (they are what Stripe
said) with a "reprocess" action; money rows are read-only because they are changed
only through services that post to the ledger."""

from django.contrib import admin, messages

from payments import services
from payments.models import (
    Dispute,
    EventStatus,
    Payment,
    PaymentAllocation,
    Payout,
    PayoutItem,
    Refund,
    SavedPaymentMethod,
    StripeConnection,
    StripeCustomer,
    StripeEvent,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    show_full_result_count = False  # no COUNT(*) over big tables

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "type", "status", "landlord", "account", "created", "attempts"]
    list_filter = ["status", "type", "livemode"]
    search_fields = ["=event_id", "=account"]
    list_select_related = ["landlord"]
    ordering = ["-created_at"]
    actions = ["reprocess"]

    @admin.action(description="Reprocess the selected failed, unmatched or received events")
    def reprocess(self, request, queryset):
        retry = (EventStatus.FAILED, EventStatus.UNMATCHED, EventStatus.RECEIVED)
        ids = list(queryset.filter(status__in=retry).values_list("event_id", flat=True))
        outcomes: dict[str, int] = {}
        for event_id in ids:
            event = services.stripe_event_process(event_id=event_id)
            if event is not None:
                outcomes[event.status] = outcomes.get(event.status, 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())) or "none"
        self.message_user(request, f"Reprocessed {len(ids)} event(s): {summary}", messages.INFO)


class AllocationInline(admin.TabularInline):
    model = PaymentAllocation
    fields = ["invoice", "amount_minor", "position"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = [
        "pk",
        "landlord",
        "tenant",
        "amount_minor",
        "currency",
        "method",
        "status",
        "created_at",
    ]
    list_filter = ["status", "source", "method"]
    search_fields = ["=stripe_payment_intent_id", "=stripe_charge_id", "reference"]
    list_select_related = ["landlord", "tenant"]
    ordering = ["-created_at"]
    inlines = [AllocationInline]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["stripe_refund_id", "payment", "amount_minor", "currency", "status"]
    list_select_related = ["payment"]


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    list_display = ["stripe_dispute_id", "payment", "amount_minor", "currency", "status"]
    list_select_related = ["payment"]


class PayoutItemInline(admin.TabularInline):
    model = PayoutItem
    fields = ["balance_transaction_id", "type", "source_id", "payment", "amount_minor", "net_minor"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Payout)
class PayoutAdmin(ReadOnlyAdmin):
    list_display = ["stripe_payout_id", "landlord", "amount_minor", "currency", "status"]
    list_select_related = ["landlord"]
    inlines = [PayoutItemInline]


@admin.register(StripeConnection)
class StripeConnectionAdmin(ReadOnlyAdmin):
    list_display = ["account_id", "landlord", "charges_enabled", "payouts_enabled"]
    list_select_related = ["landlord"]


@admin.register(StripeCustomer)
class StripeCustomerAdmin(ReadOnlyAdmin):
    list_display = ["customer_id", "tenant", "landlord"]
    list_select_related = ["tenant", "landlord"]


@admin.register(SavedPaymentMethod)
class SavedPaymentMethodAdmin(ReadOnlyAdmin):
    list_display = ["stripe_payment_method_id", "tenant", "method", "last4", "autopay"]
    list_select_related = ["tenant"]
